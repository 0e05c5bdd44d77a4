"""Figures: every function returns an HWC uint8 RGB numpy array (save it with
:func:`pyinvert.io.save_image`). :mod:`~pyinvert.figures.drawing` (titles, tiles, grids),
:mod:`~pyinvert.figures.maps` (code pictures via the representation's ``render_code``, error
and heat maps), :mod:`~pyinvert.figures.inversion`, :mod:`~pyinvert.figures.visualization`.
"""

from pyinvert.figures.inversion import layer_grid, montage, side_by_side, window_figure
from pyinvert.figures.maps import code_picture, error_map, heat_map, stretch
from pyinvert.figures.visualization import invariance_figure, labelled_grid, pair

__all__ = [
    "side_by_side",
    "montage",
    "layer_grid",
    "window_figure",
    "code_picture",
    "error_map",
    "heat_map",
    "stretch",
    "labelled_grid",
    "pair",
    "invariance_figure",
]
