"""Pictures of the analysis: a layer x transform heat table, and the inversion of a mapped code
M_g Phi(x) next to gx and the inversion of Phi(gx) (Lenc & Vedaldi's Fig. 3-style panels).

Images are uint8 RGB arrays (H, W, 3); :func:`pyinvert.io.save_image` writes them.
"""

from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from pyinvert import io
from pyinvert.analysis.features import layer_outputs, to_code
from pyinvert.analysis.grids import warp_grid
from pyinvert.representations.cnn import CNN
from pyinvert.tasks.inversion import invert

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org, scale=0.4, color=(0, 0, 0)):
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _colour(v: float, vmax: float):
    """White (0) -> yellow -> red (vmax and above); grey for NaN."""
    if v != v:
        return (200, 200, 200)
    t = min(max(v / vmax, 0.0), 1.0)
    if t < 0.5:
        return (255, 255, int(255 * (1 - 2 * t)))
    return (255, int(255 * (2 - 2 * t)), 0)


def heat_table(
    values: Tensor,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str = "",
    vmax: float = 1.0,
    cell=(78, 26),
) -> np.ndarray:
    """A table of ``values`` [R, C] coloured by value (0 white, ``vmax`` red), each cell
    printed, rows and columns labelled.

    Example:
        >>> heat_table(torch.tensor([[0.1, 0.5]]), ["hog"], ["hflip", "rot45"]).shape
        (52, 246, 3)
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.dim() != 2 or values.shape != (len(rows), len(columns)):
        raise ValueError(
            f"heat_table: expected values of shape ({len(rows)}, {len(columns)}), "
            f"got {list(values.shape)}"
        )
    cw, ch = cell
    left = max(90, 7 * max((len(r) for r in rows), default=4) + 10)
    top = ch * (2 if title else 1)
    img = np.full((top + ch * len(rows), left + cw * len(columns), 3), 255, np.uint8)
    if title:
        _text(img, title, (4, 17), 0.45)
    for j, c in enumerate(columns):
        _text(img, c[:11], (left + 4 + j * cw, top - 8))
    for i, r in enumerate(rows):
        y = top + i * ch
        _text(img, r, (4, y + 17))
        for j in range(len(columns)):
            v = float(values[i, j])
            x = left + j * cw
            img[y + 1 : y + ch - 1, x + 1 : x + cw - 1] = _colour(v, vmax)
            _text(
                img,
                "-" if v != v else (f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.0e}"),
                (x + 6, y + 17),
            )
    return img


def _tile(image: Tensor, title: str, height: int) -> np.ndarray:
    a = io.to_uint8(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, 2)
    w = max(1, int(round(a.shape[1] * height / a.shape[0])))
    a = cv2.resize(
        a, (w, height), interpolation=cv2.INTER_NEAREST if a.shape[0] < height else cv2.INTER_AREA
    )
    w = max(w, 8 * len(title) + 8)
    out = np.full((height + 22, w, 3), 255, np.uint8)
    out[22:, : a.shape[1]] = a
    _text(out, title, (3, 15))
    return out


def panel(images: Sequence[Tensor], titles: Sequence[str], height: int = 160) -> np.ndarray:
    """Images [C, H, W] in [0, 1] side by side with a title above each."""
    tiles = [_tile(im, t, height) for im, t in zip(images, titles)]
    H = max(t.shape[0] for t in tiles)
    gap = np.full((H, 6, 3), 255, np.uint8)
    parts = []
    for t in tiles:
        if t.shape[0] < H:
            t = np.concatenate([t, np.full((H - t.shape[0], t.shape[1], 3), 255, np.uint8)])
        parts += [t, gap]
    return np.concatenate(parts[:-1], 1)


def single_layer(rep, layer: str):
    """The representation to invert one layer's code with (the CNN restricted to ``layer``)."""
    if getattr(rep, "kind", None) == "cnn" and len(rep.layers) > 1:
        return CNN(rep.model, layer, mean=rep.mean, std=rep.std, model_name=rep.model_name)
    return rep


def invert_mapped(
    result,
    image: Tensor,
    transform: str,
    layer: Optional[str] = None,
    steps: int = 200,
    generator: Optional[torch.Generator] = None,
    transformed: Optional[Tensor] = None,
) -> dict:
    """Invert M_g Phi(x), Phi(gx) and g Phi(x) (the cells moved only) for one image x
    [C, H, W] in [0, 1]; gx is ``transformed`` [C, H, W] or ``g.apply(x)``.

    Returns:
        {"x", "gx", "mapped" (the pre-image of M_g Phi(x)), "direct" (of Phi(gx)),
        "permuted" (of the cells moved only, g Phi(x)), "errors": the inversions' feature
        errors}: images [C', H, W].
    """
    layer = layer or result.layers()[0]
    rep = single_layer(result.representation, layer)
    g = result.transforms.get(transform)
    x = image[None]
    gx = g.apply(x) if transformed is None else transformed[None]
    code, direct, valid = result.mapped_code(x, transform, layer, transformed=gx)
    with torch.no_grad():
        fx = layer_outputs(
            result.representation, result.representation.preprocess(x.to(code.device))
        )[layer]
        permuted, _ = warp_grid(fx, g, result.geometry[layer], x.shape[-2:], direct.shape[-2:])
    with torch.no_grad():
        native = rep(rep.preprocess(gx.to(code.device)))  # the code's own layout
    mask = to_code(rep, valid.to(code.dtype).expand(code.shape[1:])[None], native)[0]
    targets = to_code(rep, torch.cat([code, direct, permuted]), native)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    H, W = gx.shape[-2:]
    res = invert(
        targets=targets,
        image_size=(H, W),
        representation=rep,
        steps=steps,
        progress=False,
        generator=gen,
        mask=mask,
    )
    return {
        "x": image,
        "gx": gx[0],
        "mapped": res.images[0],
        "direct": res.images[1],
        "permuted": res.images[2],
        "errors": res.feature_error.tolist(),
    }


def mapped_inversion_figure(
    result,
    image: Tensor,
    transform: str,
    layer: Optional[str] = None,
    steps: int = 200,
    generator: Optional[torch.Generator] = None,
    height: int = 160,
    transformed: Optional[Tensor] = None,
):
    """(the panel x | gx | inv(g Phi(x)) | inv(M_g Phi(x)) | inv(Phi(gx)) as a uint8 array,
    the :func:`invert_mapped` dict)."""
    out = invert_mapped(result, image, transform, layer, steps, generator, transformed)
    pic = panel(
        [out["x"], out["gx"], out["permuted"], out["mapped"], out["direct"]],
        ["x", f"gx ({transform})", "inv g.Phi(x)", "inv M_g Phi(x)", "inv Phi(gx)"],
        height,
    )
    return pic, out
