"""Equivariance and equivalence of representations (Lenc & Vedaldi, CVPR 2015), joined to
inversion.

* Equivariance: Phi(gx) ~ M_g Phi(x), with M_g = a spatial permutation of the feature grid
  (g moved onto the grid) followed by a 1 x 1 or k x k channel map, fitted by ridge regression
  (closed form, streaming X^T X over chunks) or refined on the task loss:
  :func:`equivariance` -> :class:`EquivarianceResult`. Invariance is M_g = I.
* Equivalence and stitching: Phi_B(x) ~ E Phi_A(x), for any two representations (HOG against
  a CNN layer, two networks, a network against itself): :func:`equivalence` ->
  :class:`EquivalenceResult`, with the naive stitch and the untrained-network baselines.
  :mod:`pyinvert.analysis.seeds` trains two small CNNs from two seeds on procedurally
  generated shapes (the "different random seeds" experiment).
* Pictures: :func:`~pyinvert.analysis.figures.mapped_inversion_figure` inverts M_g Phi(x)
  beside gx and the inversion of Phi(gx); :func:`~pyinvert.analysis.figures.heat_table`.
* CLI: :mod:`pyinvert.analysis.command` (``pyinvert equivariance`` / ``pyinvert equivalence``).

The modules, one job each: ``transforms`` (the group), ``grids`` (where cells sit; the spatial
part of M_g; the closed-form HOG flip permutation), ``features`` (per-layer maps; crop pairs
(x, gx) from photos), ``ridge`` (the channel map and its two ridge solvers), ``completion``
(the network completed from a layer; untrained copies), ``engine`` (fit, learn, evaluate),
``equivariance``, ``equivalence``, ``results``, ``figures``, ``seeds``, ``command``.

Example:
    >>> import torch
    >>> res = equivariance("hog", torch.rand(3, 3, 64, 64), ["hflip", "rot45"], crops=6,
    ...                    size=32, generator=torch.Generator().manual_seed(0))
    >>> res.error("hog", "hflip") < 1e-6 < res.error("hog", "rot45")
    True

References:
    K. Lenc and A. Vedaldi, "Understanding image representations by measuring their
    equivariance and equivalence", CVPR 2015 / IJCV 2018.
"""

from pyinvert.analysis.equivalence import equivalence
from pyinvert.analysis.equivariance import equivariance
from pyinvert.analysis.grids import Geometry, hog_channel_permutation, warp_grid
from pyinvert.analysis.results import EquivalenceResult, EquivarianceResult
from pyinvert.analysis.ridge import ChannelMap, RidgeAccumulator, ridge_batch
from pyinvert.analysis.transforms import Transform, parse_transform, parse_transforms

__all__ = [
    "equivariance",
    "EquivarianceResult",
    "equivalence",
    "EquivalenceResult",
    "Transform",
    "parse_transform",
    "parse_transforms",
    "ChannelMap",
    "RidgeAccumulator",
    "ridge_batch",
    "Geometry",
    "warp_grid",
    "hog_channel_permutation",
]
