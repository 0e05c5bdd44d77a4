"""Feature grids: where a representation's cells sit in the image, and the spatial part of a
transformation map (the transformation g moved onto the grid).

A layer's cell (i, j) is centred on the pixel ``(stride j + offset, stride i + offset)``. For
HOG the offset is known, ``(cell_size - 1) / 2``; otherwise it is measured once by a probe (the
centre of mass of |d Phi_ij / dx| for a middle cell of a random image). It matters: with
offset 0 (cell i on pixel ``stride i``, the geometric centre of "same"-padded stride-2
convolutions) an hflip maps cell i to ``w - i``, with ``(stride - 1) / 2`` to ``w - 1 - i``,
one whole cell apart. For ImageNet MobileNetV2 the probe finds offsets close to
``(stride - 1) / 2`` (13.5 and 11.5 at stride 32), and on flipped photos the ``w - 1 - i``
permutation is indeed the better one (error 0.16 against 0.23 at ``features.18``).

:func:`warp_grid` samples Phi(x) at the cells the transformation takes each cell of Phi(gx)
from: an exact permutation (nearest cell) for exact transforms, bilinear otherwise; cells whose
source falls outside the grid are marked invalid and left out of every fit and error.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor

from pyinvert.analysis.features import layer_outputs
from pyinvert.analysis.transforms import Transform, sample


@dataclass(frozen=True)
class Geometry:
    """A feature grid's place in the image: cell (i, j) on pixel (stride j + offset, stride i +
    offset)."""

    stride: float
    offset: float

    def to_dict(self) -> dict:
        return {"stride": self.stride, "offset": self.offset}


def warp_grid(
    features: Tensor,
    g: Transform,
    geo_in: Geometry,
    image_in,
    out_shape,
    geo_out: Geometry = None,
    image_out=None,
    mode: str = None,
) -> Tuple[Tensor, Tensor]:
    """The spatial part of M_g: ``features`` [B, D, h, w] (of x, of size ``image_in``) moved by
    g onto the grid of shape ``out_shape`` (h', w') of gx (of size ``image_out``, default
    ``image_in``).

    Args:
        features: Phi(x), [B, D, h, w].
        g: the transformation.
        geo_in: the geometry of Phi(x)'s grid.
        image_in: (H, W) of x.
        out_shape: (h', w') of the output grid.
        geo_out: the geometry of the output grid. Default: None (geo_in).
        image_out: (H', W') of the output image. Default: None (image_in).
        mode: "nearest" (a permutation of cells) or "bilinear"; None: nearest for exact
            transforms. Default: None.

    Returns:
        (warped [B, D, h', w'], valid [h', w'] bool).
    """
    geo_out = geo_out or geo_in
    image_out = tuple(image_out or image_in)
    if tuple(features.shape[-2:]) == (1, 1) and tuple(out_shape) == (1, 1):
        # one cell for the whole image (global pooling, a linear layer): g keeps it in place
        return features.clone(), torch.ones(1, 1, dtype=torch.bool, device=features.device)
    mode = mode or ("nearest" if g.exact else "bilinear")
    ho, wo = out_shape
    dev = features.device
    # output cell centres (pixels of gx) -> pixels of x -> (fractional) cells of Phi(x)
    ys = torch.arange(ho, dtype=torch.float64, device=dev) * geo_out.stride + geo_out.offset
    xs = torch.arange(wo, dtype=torch.float64, device=dev) * geo_out.stride + geo_out.offset
    q = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    Ho, Wo = image_out
    Hi, Wi = image_in
    centred = q - torch.tensor([(Wo - 1) / 2, (Ho - 1) / 2], dtype=torch.float64, device=dev)
    t = g.t.to(dev) * torch.tensor([Wo, Ho], dtype=torch.float64, device=dev)
    src = (centred - t) @ torch.linalg.inv(g.A).to(dev).T
    src = src + torch.tensor([(Wi - 1) / 2, (Hi - 1) / 2], dtype=torch.float64, device=dev)
    cells = (src - geo_in.offset) / geo_in.stride  # [ho, wo, (x, y)] in cell units
    h, w = features.shape[-2:]
    if mode == "nearest":
        cells = cells.round()
        valid = (
            (cells[..., 0] >= 0)
            & (cells[..., 0] <= w - 1)
            & (cells[..., 1] >= 0)
            & (cells[..., 1] <= h - 1)
        )
    else:
        eps = 1e-6
        valid = (
            (cells[..., 0] >= -eps)
            & (cells[..., 0] <= w - 1 + eps)
            & (cells[..., 1] >= -eps)
            & (cells[..., 1] <= h - 1 + eps)
        )
    warped = sample(features, cells, (ho, wo), mode=mode)
    return warped * valid.to(warped.dtype), valid


def geometry(rep, layer: str, image_size) -> Geometry:
    """The grid geometry of ``layer`` of ``rep`` (see the module docstring)."""
    cache: Dict = rep.__dict__.setdefault("_analysis_geometry", {})
    if layer in cache:
        return cache[layer]
    cs = getattr(rep, "cell_size", None)
    if cs is not None and getattr(rep, "kind", None) != "cnn":  # HOG: known in closed form
        geo = Geometry(float(cs), (cs - 1) / 2)
    elif hasattr(rep, "bin_size") and hasattr(rep, "step") and getattr(rep, "kind", None) != "cnn":
        # dense SIFT: the first descriptor centre is 1.5 bins in (vl_dsift_get_keypoints)
        geo = Geometry(float(rep.step), 1.5 * rep.bin_size)
    else:
        geo = _probe(rep, layer, image_size)
    cache[layer] = geo
    return geo


def _probe(rep, layer, image_size) -> Geometry:
    H, W = image_size
    p = next(rep.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        h, w = layer_outputs(
            rep, rep.preprocess(torch.zeros(1, 3, H, W, dtype=dtype, device=device))
        )[layer].shape[-2:]
    stride = _stride(rep, layer, (H, W), (h, w))
    # A probe image holding >= 9 cells per side, so that the middle cell is interior.
    side = max(H, W, int(stride * 9))
    side = int(round(side / stride) * stride)
    imgs = torch.rand(4, 3, side, side, generator=gen).to(device=device, dtype=dtype)
    x = rep.preprocess(imgs).requires_grad_(True)
    f = layer_outputs(rep, x)[layer]
    i, j = f.shape[-2] // 2, f.shape[-1] // 2
    (grad,) = torch.autograd.grad(f[:, :, i, j].abs().sum(), x)
    m = grad.abs().sum((0, 1)).double()
    tot = m.sum()
    if not tot > 0:
        return Geometry(float(stride), (stride - 1) / 2)
    cy = float((m.sum(1) * torch.arange(side, dtype=torch.float64)).sum() / tot)
    cx = float((m.sum(0) * torch.arange(side, dtype=torch.float64)).sum() / tot)
    off = ((cy - stride * i) + (cx - stride * j)) / 2
    return Geometry(float(stride), round(off * 2) / 2)


def _stride(rep, layer, image_size, grid):
    st = None
    if getattr(rep, "kind", None) == "cnn":
        st = rep.layer_strides.get(layer)
    if st is None:
        st = getattr(rep, "step", None) or image_size[1] / grid[1]
    return float(st)


def hog_channel_permutation(g: Transform, num_orientations: int = 9):
    """The channel part of M_g for UoCTTI HOG (``3 no + 4`` channels) under a flip (or their
    product, rot180): a list ``perm`` with ``Phi(gx)[c] = (g Phi(x))[perm[c]]`` on aligned
    grids. Returns None for other transformations (rot90 moves orientations by 90 degrees,
    not a whole number of 180/no bins when no is odd).

    Derivation (the layout of :func:`pyinvert.reference.hog`): a horizontal flip negates the
    x derivative, so a gradient at angle theta goes to pi - theta: directed bin b (angle
    b pi / no) -> (no - b) mod 2 no, undirected u -> (-u) mod no; the four texture channels
    (the normalizations by the blocks up-left, up-right, down-left, down-right of the cell)
    swap left and right, 0 <-> 1, 2 <-> 3. A vertical flip negates y: b -> (-b) mod 2 no,
    u -> (-u) mod no, texture 0 <-> 2, 1 <-> 3. Pixels whose gradient lies exactly between
    two bins (e.g. gx = 0: 90 degrees, between bins 4 and 5 for no = 9) break the tie the same
    way before and after the flip, so on photos the identity holds up to those: a normalized
    error from 1e-6 (chelsea) to 5e-3 (rocket, whose flat sky is full of such ties) on 128 px
    crops of the bundled photos; on continuous-valued images it is exact.
    """
    no = num_orientations
    A = g.A.round()
    if not g.exact:
        return None
    sx, sy = float(A[0, 0]), float(A[1, 1])
    if float(A[0, 1]) != 0:
        return None
    if sx == -1 and sy == 1:
        directed = [(no - b) % (2 * no) for b in range(2 * no)]
        texture = [1, 0, 3, 2]
    elif sx == 1 and sy == -1:
        directed = [(-b) % (2 * no) for b in range(2 * no)]
        texture = [2, 3, 0, 1]
    elif sx == -1 and sy == -1:
        directed = [(b + no) % (2 * no) for b in range(2 * no)]
        texture = [3, 2, 1, 0]
    else:
        return list(range(3 * no + 4))
    undirected = [2 * no + ((-u) % no if sx * sy < 0 else u) for u in range(no)]
    return directed + undirected + [3 * no + t for t in texture]
