"""Figures of inversions: a side-by-side panel per image and a montage of many.

All functions return HWC uint8 RGB numpy arrays (save them with :func:`pyinvert.io.save_image`).
"""
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from pyinvert.io import to_uint8

_GAP = 4
_TITLE = 18


def _rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a


def _resize_height(a: np.ndarray, height: int) -> np.ndarray:
    import cv2

    h, w = a.shape[:2]
    if h == height:
        return a
    width = max(1, round(w * height / h))
    interp = cv2.INTER_AREA if h > height else cv2.INTER_NEAREST
    return cv2.resize(a, (width, height), interpolation=interp)


_FONT_SCALE = 0.45
_LINE = 15


def _wrap(text: str, width: int) -> list:
    """``text`` split into lines that fit ``width`` pixels (at words; a word too long for a
    line is cut into pieces)."""
    import cv2

    def fits(t):
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)[0][0] <= width

    lines, cur = [], ""
    for word in text.split():
        cand = f"{cur} {word}" if cur else word
        if fits(cand):
            cur = cand
            continue
        if cur:
            lines.append(cur)
        cur = ""
        while word and not fits(word):  # cut a word wider than a whole line
            k = len(word)
            while k > 1 and not fits(word[:k]):
                k -= 1
            lines.append(word[:k])
            word = word[k:]
        cur = word
    if cur:
        lines.append(cur)
    return lines or [""]


def _title(a: np.ndarray, text: str, lines: Optional[int] = None) -> np.ndarray:
    """``a`` under a white strip with ``text``, wrapped to the image's width (never clipped);
    ``lines`` reserves room for that many lines (for aligned tiles in a grid)."""
    import cv2

    wrapped = _wrap(text, a.shape[1] - 4)
    n = max(len(wrapped), lines or 1)
    strip = np.full((n * _LINE + 4, a.shape[1], 3), 255, np.uint8)
    for k, line in enumerate(wrapped):
        cv2.putText(strip, line, (2, (k + 1) * _LINE - 3), cv2.FONT_HERSHEY_SIMPLEX,
                    _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, a], 0)


def _hstack(panels: Sequence[np.ndarray]) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    out = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0], *p.shape[1:]), 255, np.uint8)], 0)
        out.append(p)
        if i < len(panels) - 1:
            out.append(np.full((h, _GAP, 3), 255, np.uint8))
    return np.concatenate(out, 1)


def code_picture(code: Tensor, representation: str = "hog") -> Tensor:
    """A one-channel picture [1, h, w] in [0, 1] of one code: HOG glyphs for "hog"/"hogb",
    else the code's values laid out as a matrix (rows: positions, columns: dimensions)."""
    from pyinvert.features.hog import render_hog

    code = code.detach().float().cpu()
    if representation in ("hog", "hogb") and code.dim() == 3:
        pic = render_hog(code, glyph_size=11)
    else:
        m = code.reshape(code.shape[0], -1) if code.dim() >= 2 else code.reshape(1, -1)
        pic = m.unsqueeze(0)
    pic = pic.clamp_min(0)
    top = pic.max()
    return pic / top if top > 0 else pic


def error_map(reconstruction: Tensor, original: Tensor) -> np.ndarray:
    """|reconstruction - original| (gray, per pixel) as a colour-mapped uint8 RGB image; the
    colour scale spans [0, 1] (absolute, so maps are comparable)."""
    import cv2

    r = reconstruction.detach().float().cpu()
    o = original.detach().float().cpu()
    if r.shape[0] != o.shape[0]:
        r, o = r.mean(0, keepdim=True), o.mean(0, keepdim=True)
    e = (r - o).abs().mean(0)
    a = (torch.nan_to_num(e).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return cv2.cvtColor(cv2.applyColorMap(a, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def side_by_side(original: Tensor, reconstruction: Tensor, code: Optional[Tensor] = None,
                 representation: str = "hog", titles: Sequence[str] = (
                     "original", "code", "reconstruction", "|error|")) -> np.ndarray:
    """original | picture of the code | reconstruction | error map, one image high.

    Args:
        original: [C, H, W] in [0, 1].
        reconstruction: [C', H, W] in [0, 1].
        code: the target code Phi0 of the original (for the code picture); None skips it.
        representation: "hog", "hogb", "dsift" (how to draw the code). Default: "hog".
        titles: panel titles. Default: original, code, reconstruction, |error|.

    Returns:
        HWC uint8 RGB array.
    """
    H = original.shape[-2]
    panels = [(titles[0], _rgb(to_uint8(original)))]
    if code is not None:
        pic = _resize_height(to_uint8(code_picture(code, representation)), H)
        panels.append((titles[1], _rgb(pic)))
    panels.append((titles[2], _rgb(to_uint8(reconstruction))))
    panels.append((titles[3], error_map(reconstruction, original)))
    return _hstack([_title(p, t) for t, p in panels])


def montage(rows: Sequence[Sequence[Tensor]], row_labels: Optional[Sequence[str]] = None,
            col_labels: Optional[Sequence[str]] = None, height: int = 128) -> np.ndarray:
    """A grid of images ([C, H, W] tensors in [0, 1]), each resized to ``height``.

    Args:
        rows: the grid, a sequence of rows.
        row_labels: a label for each row (drawn above its first image). Default: None.
        col_labels: a label for each column (drawn above every image). Default: None.
        height: the height of each cell. Default: 128.

    Returns:
        HWC uint8 RGB array.
    """
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for j, im in enumerate(row):
            a = _resize_height(_rgb(to_uint8(im)), height)
            a = _rgb(a)
            label = []
            if row_labels is not None and j == 0:
                label.append(row_labels[i])
            if col_labels is not None:
                label.append(col_labels[j])
            cells.append(_title(a, " ".join(label)))
        lines.append(_hstack(cells))
    w = max(line.shape[1] for line in lines)
    padded = []
    for k, line in enumerate(lines):
        if line.shape[1] < w:
            line = np.concatenate([line, np.full((line.shape[0], w - line.shape[1], 3), 255,
                                                 np.uint8)], 1)
        padded.append(line)
        if k < len(lines) - 1:
            padded.append(np.full((_GAP, w, 3), 255, np.uint8))
    return np.concatenate(padded, 0)


# ---- CNN visualizations -----------------------------------------------------------------

def heat_map(values: Tensor, vmax: Optional[float] = None) -> np.ndarray:
    """A [H, W] map of non-negative values as a colour-mapped (inferno) uint8 RGB image; the
    scale spans [0, vmax] (default: the map's maximum)."""
    import cv2

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


def _tile_height(images, height: Optional[int]) -> int:
    """The tiles' height: ``height``, or the images' own height (at least 128 px so that
    tiny images and their titles stay readable)."""
    if height is not None:
        return int(height)
    return max([128] + [int(im.shape[-2] if isinstance(im, Tensor) else im.shape[0])
                        for im in images])


def _tile(im, title: str, height: int, lines: Optional[int] = None) -> np.ndarray:
    a = im if isinstance(im, np.ndarray) else to_uint8(im)
    return _title(_rgb(_resize_height(_rgb(a), height)), title, lines)


def _titled_tiles(images, titles, height: int) -> list:
    """Tiles of one height whose titles take the same number of lines (images aligned)."""
    ims = [_rgb(_resize_height(_rgb(im if isinstance(im, np.ndarray) else to_uint8(im)),
                               height)) for im in images]
    lines = max([1] + [len(_wrap(t, a.shape[1] - 4)) for a, t in zip(ims, titles)])
    return [_title(a, t, lines) for a, t in zip(ims, titles)]


def _grid(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    rows = [_hstack(list(tiles[i:i + columns])) for i in range(0, len(tiles), columns)]
    w = max(r.shape[1] for r in rows)
    out = []
    for k, r in enumerate(rows):
        if r.shape[1] < w:
            r = np.concatenate([r, np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)], 1)
        out.append(r)
        if k < len(rows) - 1:
            out.append(np.full((_GAP, w, 3), 255, np.uint8))
    return np.concatenate(out, 0)


def layer_grid(originals: Sequence[Tensor], reconstructions: Sequence[Sequence[Tensor]],
               layers: Sequence[str], height: Optional[int] = None,
               names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The per-layer inversion figure: one row per image, the original then one
    reconstruction per layer, each labelled with its layer.

    Args:
        originals: B images [C, H, W] in [0, 1].
        reconstructions: per layer, B reconstructions (``reconstructions[l][b]``).
        layers: the layer names (column labels).
        height: tile height; None: the images' height (at least 128). Default: None.
        names: the images' names, shown over the originals; None: "original". Default: None.

    Returns:
        HWC uint8 RGB array.
    """
    h = _tile_height(list(originals), height)
    images, titles = [], []
    for b, orig in enumerate(originals):
        images.append(orig)
        titles.append(f"original {names[b]}" if names is not None else "original")
        for l, name in enumerate(layers):
            images.append(reconstructions[l][b])
            titles.append(name)
    return _grid(_titled_tiles(images, titles, h), 1 + len(layers))


def labelled_grid(images: Sequence[Tensor], labels: Sequence[str], columns: int = 4,
                  height: Optional[int] = None) -> np.ndarray:
    """Tiles with a title each (e.g. one activation maximization per unit with its name and
    p), ``columns`` per row; long titles wrap, never clipped.

    Args:
        images: [C, H, W] images in [0, 1].
        labels: a title per image.
        columns: tiles per row. Default: 4.
        height: tile height; None: the images' height (at least 128). Default: None.

    Returns:
        HWC uint8 RGB array.
    """
    tiles = _titled_tiles(list(images), list(labels), _tile_height(list(images), height))
    return _grid(tiles, max(1, min(columns, len(tiles))))


def pair(original: Tensor, result: Tensor, titles: Sequence[str] = ("original", "result"),
         height: Optional[int] = None) -> np.ndarray:
    """original | result (caricature, dream), one image high (at least 128 px)."""
    return _hstack(_titled_tiles([original, result], list(titles),
                                 _tile_height([original], height)))


def invariance_figure(original: Tensor, reconstructions: Sequence[Tensor], spread: Tensor,
                      vmax: Optional[float] = None, height: Optional[int] = None) -> np.ndarray:
    """original | the R reconstructions | the per-pixel spread across them (heat map)."""
    ims = [original, *reconstructions, heat_map(spread, vmax)]
    titles = ["original", *[f"restart {k}" for k in range(len(reconstructions))],
              "std across restarts"]
    return _hstack(_titled_tiles(ims, titles, _tile_height([original], height)))


def window_figure(original: Tensor, reconstruction: Tensor, box, title: str = "window",
                  height: Optional[int] = None) -> np.ndarray:
    """original | reconstruction from a window of neurons, with the window's footprint
    ``box = (y0, x0, y1, x1)`` (pixels, end exclusive) drawn on both."""
    import cv2

    panels = []
    for im in (original, reconstruction):
        a = np.ascontiguousarray(_rgb(to_uint8(im)))
        y0, x0, y1, x1 = (int(v) for v in box)
        cv2.rectangle(a, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (255, 0, 0), 1)
        panels.append(a)
    return _hstack(_titled_tiles(panels, ["original", title], _tile_height(panels, height)))
