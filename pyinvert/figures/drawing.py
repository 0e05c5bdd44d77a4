"""Drawing primitives of the figures: titles that wrap, tiles of one height, rows and grids.
Every figure is an HWC uint8 RGB numpy array (save it with :func:`pyinvert.io.save_image`)."""

from typing import Optional, Sequence

import cv2
import numpy as np
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
    wrapped = _wrap(text, a.shape[1] - 4)
    n = max(len(wrapped), lines or 1)
    strip = np.full((n * _LINE + 4, a.shape[1], 3), 255, np.uint8)
    for k, line in enumerate(wrapped):
        cv2.putText(
            strip,
            line,
            (2, (k + 1) * _LINE - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            _FONT_SCALE,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
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


def _tile_height(images, height: Optional[int]) -> int:
    """The tiles' height: ``height``, or the images' own height (at least 128 px so that
    tiny images and their titles stay readable)."""
    if height is not None:
        return int(height)
    return max(
        [128] + [int(im.shape[-2] if isinstance(im, Tensor) else im.shape[0]) for im in images]
    )


def _titled_tiles(images, titles, height: int) -> list:
    """Tiles of one height whose titles take the same number of lines (images aligned)."""
    ims = [
        _rgb(_resize_height(_rgb(im if isinstance(im, np.ndarray) else to_uint8(im)), height))
        for im in images
    ]
    lines = max([1] + [len(_wrap(t, a.shape[1] - 4)) for a, t in zip(ims, titles)])
    return [_title(a, t, lines) for a, t in zip(ims, titles)]


def _grid(tiles: Sequence[np.ndarray], columns: int) -> np.ndarray:
    rows = [_hstack(list(tiles[i : i + columns])) for i in range(0, len(tiles), columns)]
    w = max(r.shape[1] for r in rows)
    out = []
    for k, r in enumerate(rows):
        if r.shape[1] < w:
            r = np.concatenate([r, np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)], 1)
        out.append(r)
        if k < len(rows) - 1:
            out.append(np.full((_GAP, w, 3), 255, np.uint8))
    return np.concatenate(out, 0)
