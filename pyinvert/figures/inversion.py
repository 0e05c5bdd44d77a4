"""Figures of inversions: a side-by-side panel per image, a montage, the per-layer grid and the
neuron-window figure."""

from typing import Optional, Sequence

import cv2
import numpy as np
from torch import Tensor

from pyinvert.figures.drawing import (
    _GAP,
    _hstack,
    _resize_height,
    _rgb,
    _tile_height,
    _title,
    _titled_tiles,
    _grid,
)
from pyinvert.figures.maps import code_picture, error_map
from pyinvert.io import to_uint8


def side_by_side(
    original: Tensor,
    reconstruction: Tensor,
    code: Optional[Tensor] = None,
    representation="hog",
    titles: Sequence[str] = ("original", "code", "reconstruction", "|error|"),
) -> np.ndarray:
    """original | picture of the code | reconstruction | error map, one image high.

    Args:
        original: [C, H, W] in [0, 1].
        reconstruction: [C', H, W] in [0, 1].
        code: the target code Phi0 of the original (for the code picture); None skips it.
        representation: draws the code (:func:`pyinvert.figures.code_picture`): a
            representation or a name. Default: "hog".
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


def montage(
    rows: Sequence[Sequence[Tensor]],
    row_labels: Optional[Sequence[str]] = None,
    col_labels: Optional[Sequence[str]] = None,
    height: int = 128,
) -> np.ndarray:
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
            line = np.concatenate(
                [line, np.full((line.shape[0], w - line.shape[1], 3), 255, np.uint8)], 1
            )
        padded.append(line)
        if k < len(lines) - 1:
            padded.append(np.full((_GAP, w, 3), 255, np.uint8))
    return np.concatenate(padded, 0)


def layer_grid(
    originals: Sequence[Tensor],
    reconstructions: Sequence[Sequence[Tensor]],
    layers: Sequence[str],
    height: Optional[int] = None,
    names: Optional[Sequence[str]] = None,
) -> np.ndarray:
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
        for k, name in enumerate(layers):
            images.append(reconstructions[k][b])
            titles.append(name)
    return _grid(_titled_tiles(images, titles, h), 1 + len(layers))


def window_figure(
    original: Tensor,
    reconstruction: Tensor,
    box,
    title: str = "window",
    height: Optional[int] = None,
) -> np.ndarray:
    """original | reconstruction from a window of neurons, with the window's footprint
    ``box = (y0, x0, y1, x1)`` (pixels, end exclusive) drawn on both."""
    panels = []
    for im in (original, reconstruction):
        a = np.ascontiguousarray(_rgb(to_uint8(im)))
        y0, x0, y1, x1 = (int(v) for v in box)
        cv2.rectangle(a, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (255, 0, 0), 1)
        panels.append(a)
    return _hstack(_titled_tiles(panels, ["original", title], _tile_height(panels, height)))
