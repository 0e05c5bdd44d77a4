"""The training pairs of HOGgle (:mod:`pyinvert.decoders.hoggle`): windows of HOG cells and
the gray patches under them, normalized as the authors' ``learnpairdict.m`` does.

References:
    Vondrick et al., "HOGgles: Visualizing Object Detection Features", ICCV 2013, Sec. 3.4.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.representations.base import to_gray

#: The normalization's epsilon (MATLAB's eps, as in ``learnpairdict.m``).
EPS = 2.220446049250313e-16


def normalize_rows(x: Tensor) -> Tensor:
    """Each row mean-centred and divided by ``sqrt(sum of squares + eps)`` (learnpairdict.m)."""
    x = x - x.mean(1, keepdim=True)
    return x / (x.square().sum(1, keepdim=True) + EPS).sqrt()


def hog_windows(code: Tensor, window: int) -> Tensor:
    """Every ``window x window`` window of a HOG map, row-major over positions.

    Shape:
        - code: :math:`(B, D, H_c, W_c)`, both at least ``window``.
        - Output: :math:`(B, (H_c - n + 1)(W_c - n + 1), D n^2)`, flattened as (D, row, col).
    """
    B, D = code.shape[:2]
    w = code.unfold(2, window, 1).unfold(3, window, 1)  # B, D, Hw, Ww, n, n
    return w.permute(0, 2, 3, 1, 4, 5).reshape(B, -1, D * window * window)


def training_pairs(gray: Tensor, code: Tensor, window: int, cell_size: int):
    """The (patch, HOG window) pairs of one image whose patch lies inside the image.

    The window with top-left cell (i, j) pairs with the patch of pixels
    ``[(i - 1) s, (i + n + 1) s)`` (rows; columns likewise): VLFeat's cell c covers
    ``[c s, (c + 1) s)``, plus one cell of context on each side (learnpairdict.m).

    Args:
        gray: [H, W] in [0, 1].
        code: its HOG, [D, H_c, W_c].

    Returns:
        (patches [N, P*P], windows [N, D n^2]), P = (n + 2) s; N may be 0.
    """
    n, s = window, cell_size
    P = (n + 2) * s
    H, W = gray.shape
    Hc, Wc = code.shape[-2:]
    ni = min(Hc - n, (H - P) // s + 1) if H >= P else 0
    nj = min(Wc - n, (W - P) // s + 1) if W >= P else 0
    if ni <= 0 or nj <= 0:
        return gray.new_zeros(0, P * P), code.new_zeros(0, code.shape[0] * n * n)
    patches = gray.unfold(0, P, s).unfold(1, P, s)[:ni, :nj].reshape(ni * nj, P * P)
    sub = code[None, :, 1 : 1 + ni + n - 1, 1 : 1 + nj + n - 1]
    return patches, hog_windows(sub, n)[0]


def pair_matrix(images, rep, window, scales=(1.0,), flips=False) -> Tensor:
    """The stacked, normalized training pairs ``[x; phi]`` of images (every window whose patch
    lies inside its image, at every scale, mirrored too with ``flips``), [N, P*P + D n^2]."""
    rows = []
    for image in images:
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(
                f"PairedDictionary.fit: expected images of shape (C, H, W), got "
                f"{list(image.shape) if isinstance(image, Tensor) else type(image).__name__}"
            )
        for scale in scales:
            x = image[None].float()
            if scale != 1.0:
                size = [max(int(round(v * scale)), 1) for v in x.shape[-2:]]
                x = F.interpolate(x, size=size, mode="area" if scale < 1 else "bilinear")
            for flip in (False, True) if flips else (False,):
                xf = x.flip(-1) if flip else x
                with torch.no_grad():
                    code = rep(rep.preprocess(xf))[0]
                patches, windows = training_pairs(to_gray(xf)[0, 0], code, window, rep.cell_size)
                if patches.shape[0]:
                    rows.append(torch.cat([normalize_rows(patches), normalize_rows(windows)], 1))
    if not rows:
        raise ValueError(
            f"PairedDictionary.fit: expected images with at least one {window}x{window}-cell "
            f"window inside them (at least {(window + 2) * rep.cell_size} pixels square), "
            f"got none"
        )
    return torch.cat(rows)


def batches(n: int, batch_size: int, steps: int, g: torch.Generator):
    """``steps`` index batches: epochs of seeded permutations, cut into ``batch_size``."""
    out, perm = [], torch.randperm(n, generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        out.append(perm[pos : pos + batch_size].numpy())
        pos += batch_size
    return out
