"""Per-layer feature maps of any representation, and the image pairs (x, gx) they are taken on.

:func:`layer_outputs` gives ``{layer: [B, D, h, w]}`` for a HOG / DSIFT representation (one
"layer", its name) or a :class:`pyinvert.CNN` (each requested layer; a non-spatial output such
as a linear layer's is a 1 x 1 grid).

:func:`crop_pairs` draws square crops x from a few photos and, for each transformation g, the
crop gx of the *transformed photo* around the same centre, so gx is a whole natural image (no
black corners after a 45-degree rotation); the photo is first rescaled by a random factor (log-
uniform between the smallest that holds g's footprint and 1), so the crops differ in scale.
Exact transforms give ``gx = g.apply(x)`` exactly.
"""

import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert import io
from pyinvert.analysis.transforms import Transform, sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def layers_of(rep) -> Tuple[str, ...]:
    """The layer names :func:`layer_outputs` returns."""
    if getattr(rep, "kind", None) == "cnn":
        return tuple(rep.layers)
    return (getattr(rep, "name", type(rep).__name__.lower()),)


def _is_dsift(rep) -> bool:
    return hasattr(rep, "bin_size") and hasattr(rep, "step") and getattr(rep, "kind", None) != "cnn"


def dsift_grid_shape(rep, image_size) -> Tuple[int, int]:
    """(Ny, Nx) of dense SIFT's keypoint grid (x fastest in its [B, N, 128] output)."""
    H, W = image_size
    return ((H - 1 - 3 * rep.bin_size) // rep.step + 1, (W - 1 - 3 * rep.bin_size) // rep.step + 1)


def layer_outputs(rep, x: Tensor) -> Dict[str, Tensor]:
    """``{layer: [B, D, h, w]}`` of ``rep`` on x (the representation's input scale); dense
    SIFT's [B, N, 128] descriptors become their [B, 128, Ny, Nx] grid."""
    if getattr(rep, "kind", None) == "cnn":
        out = rep.layer_outputs(x)
    else:
        code = rep(x)
        if _is_dsift(rep) and code.dim() == 3:
            ny, nx = dsift_grid_shape(rep, x.shape[-2:])
            code = code.reshape(code.shape[0], ny, nx, code.shape[2]).permute(0, 3, 1, 2)
        out = {layers_of(rep)[0]: code}
    return {k: (v if v.dim() == 4 else v.reshape(v.shape[0], -1, 1, 1)) for k, v in out.items()}


def to_code(rep, grid: Tensor, like: Tensor) -> Tensor:
    """A [B, D, h, w] grid back in the layout of the representation's own code ``like`` (what
    :func:`pyinvert.invert` takes as targets): [B, N, 128] for dense SIFT, [B, D] for a
    non-spatial layer."""
    if _is_dsift(rep) and like.dim() == 3:
        return grid.permute(0, 2, 3, 1).reshape(grid.shape[0], -1, grid.shape[1])
    return grid.reshape(grid.shape[0], *like.shape[1:])


def load_sources(images) -> Tuple[List[Tensor], List[str]]:
    """Photos from a folder, a list of paths, a Tensor [B, C, H, W] or a list of [C, H, W]
    tensors, as RGB [3, H, W] in [0, 1] (gray repeated), with names. A folder's images are
    taken in sorted order."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(
                f"load_sources: expected images of shape (B, C, H, W), got {list(images.shape)}"
            )
        items, names = list(images), [f"image{i:03d}" for i in range(images.shape[0])]
    else:
        if isinstance(images, (str, os.PathLike)):
            p = Path(images)
            if p.is_dir():
                paths = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
                if not paths:
                    raise ValueError(
                        f"load_sources: no image files ({', '.join(IMAGE_SUFFIXES)}) in {p}"
                    )
            else:
                paths = [p]
            images = paths
        if not isinstance(images, (list, tuple)) or not images:
            raise ValueError(
                f"load_sources: expected a folder, paths, or tensors of images, got {images!r}"
            )
        items, names = [], []
        for i, im in enumerate(images):
            if isinstance(im, Tensor):
                items.append(im)
                names.append(f"image{i:03d}")
            else:
                items.append(io.load_image(im))
                names.append(Path(im).stem)
    out = []
    for t in items:
        t = t.float()
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        elif t.shape[0] == 4:
            t = t[:3]
        elif t.shape[0] != 3:
            raise ValueError(
                f"load_sources: expected images with 1, 3 or 4 channels, got C={t.shape[0]}"
            )
        out.append(t.contiguous())
    return out, names


def crop_pairs(
    sources: Sequence[Tensor],
    transforms: Sequence[Transform],
    n: int,
    size: int,
    generator: torch.Generator,
    rescale: bool = True,
):
    """n crops x [n, 3, size, size] and, per transform, gx [n, 3, size, size].

    Crop k comes from photo ``k % len(sources)``. Returns (x, {transform name: gx}).
    """
    need = max([g.footprint() for g in transforms] + [1.0])
    xs = []
    gxs: Dict[str, List[Tensor]] = {g.name: [] for g in transforms}
    for k in range(n):
        src = sources[k % len(sources)]
        H, W = src.shape[-2:]
        # the smallest scale whose crop footprint (size * need, a diagonal for a rotation)
        # fits, then a random factor up to 1 (the photo's own resolution)
        zlo = size * need / min(H, W)
        zhi = max(zlo, 1.0) if rescale else zlo
        u = float(torch.rand((), generator=generator))
        z = math.exp(math.log(zlo) + u * (math.log(zhi) - math.log(zlo)))
        Hz, Wz = (
            max(int(math.ceil(H * z)), math.ceil(size * need)),
            max(int(math.ceil(W * z)), math.ceil(size * need)),
        )
        img = src[None]
        if (Hz, Wz) != (H, W):
            img = F.interpolate(
                img, size=(Hz, Wz), mode="bilinear", antialias=True, align_corners=False
            )
        half = size * need / 2
        cy = _uniform(half, Hz - half, generator)
        cx = _uniform(half, Wz - half, generator)
        y0 = int(round(cy - size / 2))
        x0 = int(round(cx - size / 2))
        y0 = min(max(y0, 0), Hz - size)
        x0 = min(max(x0, 0), Wz - size)
        x = img[..., y0 : y0 + size, x0 : x0 + size]
        xs.append(x)
        for g in transforms:
            if g.exact:
                gxs[g.name].append(g.apply(x))
            else:
                coords = g.source_coordinates((size, size), (size, size))
                coords = coords + torch.tensor([x0, y0], dtype=torch.float64)
                gxs[g.name].append(sample(img, coords, (size, size)).clamp(0, 1))
    return torch.cat(xs), {k: torch.cat(v) for k, v in gxs.items()}


def _uniform(lo, hi, generator):
    if hi <= lo:
        return (lo + hi) / 2
    return lo + float(torch.rand((), generator=generator)) * (hi - lo)


def split_sources(sources, names, holdout: float):
    """(train, test, how): the last ``max(1, round(holdout n))`` photos are held out when there
    are at least two; with one photo, train and test crops come from it (different draws)."""
    if not 0 < holdout < 1:
        raise ValueError(f"split_sources: expected 0 < holdout < 1, got {holdout}")
    if len(sources) >= 2:
        k = min(len(sources) - 1, max(1, int(round(holdout * len(sources)))))
        return (
            sources[:-k],
            sources[-k:],
            {"split": "photos", "train": list(names[:-k]), "test": list(names[-k:])},
        )
    return sources, sources, {"split": "crops", "train": list(names), "test": list(names)}
