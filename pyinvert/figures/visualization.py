"""Figures of visualizations: labelled grids (one activation maximization per unit), pairs
(caricature, dream) and invariance maps."""

from typing import Optional, Sequence

import numpy as np
from torch import Tensor

from pyinvert.figures.drawing import _grid, _hstack, _tile_height, _titled_tiles
from pyinvert.figures.maps import heat_map


def labelled_grid(
    images: Sequence[Tensor], labels: Sequence[str], columns: int = 4, height: Optional[int] = None
) -> np.ndarray:
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


def pair(
    original: Tensor,
    result: Tensor,
    titles: Sequence[str] = ("original", "result"),
    height: Optional[int] = None,
) -> np.ndarray:
    """original | result (caricature, dream), one image high (at least 128 px)."""
    return _hstack(
        _titled_tiles([original, result], list(titles), _tile_height([original], height))
    )


def invariance_figure(
    original: Tensor,
    reconstructions: Sequence[Tensor],
    spread: Tensor,
    vmax: Optional[float] = None,
    height: Optional[int] = None,
) -> np.ndarray:
    """original | the R reconstructions | the per-pixel spread across them (heat map)."""
    ims = [original, *reconstructions, heat_map(spread, vmax)]
    titles = [
        "original",
        *[f"restart {k}" for k in range(len(reconstructions))],
        "std across restarts",
    ]
    return _hstack(_titled_tiles(ims, titles, _tile_height([original], height)))
