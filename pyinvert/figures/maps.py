"""Pictures of values: a representation's code (:meth:`Representation.render_code`), error and
heat maps, contrast stretching."""

from typing import Optional

import cv2
import numpy as np
import torch
from torch import Tensor

from pyinvert.representations import Representation, as_representation
from pyinvert.representations.base import matrix_picture

#: Names whose code pictures are drawn by their representation (no model is built for them).
_DRAWN_BY_NAME = ("hog", "hogb", "dsift")


def code_picture(code: Tensor, representation="hog") -> Tensor:
    """A one-channel picture [1, h, w] in [0, 1] of one code (no batch dimension), drawn by the
    representation (:meth:`pyinvert.representations.Representation.render_code`: HOG glyphs
    for HOG; the values as a matrix, rows: positions, columns: dimensions, by default).

    Args:
        code: one image's code, e.g. [31, h, w] for HOG.
        representation: a :class:`pyinvert.representations.Representation` or a name
            ("hog", "hogb", "dsift"; other names get the matrix). Default: "hog".

    Returns:
        Tensor [1, h, w] in [0, 1].
    """
    if isinstance(representation, Representation):
        return representation.render_code(code)
    if isinstance(representation, str) and representation.lower() in _DRAWN_BY_NAME:
        return as_representation(representation, fn="code_picture").render_code(code)
    return matrix_picture(code)


def error_map(reconstruction: Tensor, original: Tensor) -> np.ndarray:
    """|reconstruction - original| (gray, per pixel) as a colour-mapped uint8 RGB image; the
    colour scale spans [0, 1] (absolute, so maps are comparable)."""
    r = reconstruction.detach().float().cpu()
    o = original.detach().float().cpu()
    if r.shape[0] != o.shape[0]:
        r, o = r.mean(0, keepdim=True), o.mean(0, keepdim=True)
    e = (r - o).abs().mean(0)
    a = (torch.nan_to_num(e).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return cv2.cvtColor(cv2.applyColorMap(a, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def heat_map(values: Tensor, vmax: Optional[float] = None) -> np.ndarray:
    """A [H, W] map of non-negative values as a colour-mapped (inferno) uint8 RGB image; the
    scale spans [0, vmax] (default: the map's maximum)."""
    v = torch.nan_to_num(values.detach().double().cpu()).clamp_min(0)
    top = float(v.max()) if vmax is None else float(vmax)
    v = v / top if top > 0 else v
    a = (v.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return cv2.cvtColor(cv2.applyColorMap(a, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def stretch(images: Tensor, low: float = 0.005, high: float = 0.995) -> Tensor:
    """Each image's contrast stretched to [0, 1] between its ``low`` and ``high`` quantiles
    (over all channels, so colours keep their balance), as the authors display activation
    maximizations (MatConvNet's ``vl_imsc``, with quantiles instead of min / max so that a
    few extreme pixels do not flatten the rest).

    Args:
        images: [B, C, H, W] (or [C, H, W]) in [0, 1].
        low: lower quantile mapped to 0. Default: 0.005.
        high: upper quantile mapped to 1. Default: 0.995.

    Returns:
        Tensor of the same shape in [0, 1].
    """
    single = images.dim() == 3
    x = images[None] if single else images
    flat = x.detach().double().flatten(1)
    if flat.shape[1] == 0:
        return images
    lo = flat.quantile(low, dim=1).view(-1, 1, 1, 1)
    hi = flat.quantile(high, dim=1).view(-1, 1, 1, 1)
    out = ((x.double() - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1).to(images.dtype)
    return out[0] if single else out
