"""The visualization toolbox beside inversion: a layer's filters (:func:`filters`), nearest
neighbours and embeddings of a gallery in a representation's space (:func:`neighbors`,
:func:`embed`), fooling images (:func:`fool`) and Efros & Leung's non-parametric texture
synthesis (:func:`texture_nonparametric`); activation maximization regularized as Yosinski et
al. (:func:`actmax_yosinski`, Table 1's four sets) and multifaceted (:func:`multifaceted`)."""

from pyinvert.toolbox.embed import EmbedResult, embed, thumbnail_scatter
from pyinvert.toolbox.filters import FiltersResult, filters, stretch_filters
from pyinvert.toolbox.multifaceted import actmax_yosinski, facet_starts, multifaceted
from pyinvert.toolbox.regularizers import YOSINSKI_SETS, YosinskiParams, YosinskiRegularizer
from pyinvert.toolbox.fooling import FoolResult, Normalized, fool, project
from pyinvert.toolbox.neighbors import NeighborsResult, knn, neighbors
from pyinvert.toolbox.nonparametric import (
    NonparametricResult,
    gaussian_window,
    texture_nonparametric,
)

__all__ = [
    "filters",
    "FiltersResult",
    "stretch_filters",
    "neighbors",
    "NeighborsResult",
    "knn",
    "embed",
    "EmbedResult",
    "thumbnail_scatter",
    "fool",
    "FoolResult",
    "Normalized",
    "project",
    "texture_nonparametric",
    "NonparametricResult",
    "gaussian_window",
    "actmax_yosinski",
    "YOSINSKI_SETS",
    "YosinskiParams",
    "YosinskiRegularizer",
    "multifaceted",
    "facet_starts",
]
