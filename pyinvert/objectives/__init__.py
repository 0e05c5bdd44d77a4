r"""Composable objectives: small terms that each give a per-row loss [N], to be minimized.

A term is evaluated on the representation's code of the (jittered) image, ``code = Phi(x)``,
and on the full optimized tensor ``x`` (the image priors act on x). Terms add and scale:

    >>> targets = torch.rand(2, 31, 4, 4)
    >>> obj = 100.0 * Inversion(targets) + ImagePrior(tv_weight=1e-3, norm_weight=1e-12)
    >>> type(obj).__name__
    'Sum'

``a + b`` is a :class:`Sum`, ``w * a`` a :class:`Scaled` term (``w`` a float or a per-row
Tensor[N], e.g. a sweep of the data weight C over the rows). Scaling an :class:`ImagePrior`
scales its weights instead, and a sum of a TV-only and a norm-only prior is fused into one
:func:`pyinvert.image_prior` call: the priors keep the op's fast path (value and gradient in
one pass, a unit grad_output with the lambdas passed as weights).

Every term also reports a *measure* per row (what the engine records beside the loss): the
normalized feature error for :class:`Inversion`, the activation for :class:`Activation` /
:class:`Direction` / :class:`Caricature`, the mean squared activation for :class:`DeepDream`.
A :class:`Sum` reports its first term's measure.

Per-row tensors (targets, weights, per-row channels) have the batch as their first dimension;
:meth:`Objective.map_rows` applies a function to all of them (the engine uses it to repeat rows
for restarts, to cut chunks and to move to a device).

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, eq. (1)-(3); "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016, eq. (3) (inversion), eq. (4)-(5) (activation maximization and
    caricatures), Sec. 3.3-3.4 (the priors N_alpha and TV_beta).
    A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: Going Deeper into Neural Networks",
    Google Research Blog, 2015 (DeepDream).

The package, split by kind: :mod:`~pyinvert.objectives.base` (the algebra),
:mod:`~pyinvert.objectives.inversion` (data terms against target codes),
:mod:`~pyinvert.objectives.units` (activations, directions, caricatures, DeepDream),
:mod:`~pyinvert.objectives.priors` (image priors). :mod:`~pyinvert.objectives.style` (Gram
matrices and feature maps of layers, as data: layer -> (target, weight)).
"""

import torch  # noqa: F401 (doctest namespace)

from pyinvert.objectives.base import Objective, Scaled, Sum, Weight
from pyinvert.objectives.inversion import Inversion, feature_distance, inversion_objective
from pyinvert.objectives.priors import AlphaNorm, ImagePrior, TotalVariation
from pyinvert.objectives.units import (
    Activation,
    Caricature,
    ClassLogProbability,
    DeepDream,
    Direction,
)
from pyinvert.objectives.style import (
    ContentLoss,
    Gram,
    StyleLoss,
    gram_matrix,
    gram_parameter_count,
)

__all__ = [
    "Objective",
    "Scaled",
    "Sum",
    "Weight",
    "Inversion",
    "feature_distance",
    "inversion_objective",
    "ImagePrior",
    "TotalVariation",
    "AlphaNorm",
    "Activation",
    "Caricature",
    "ClassLogProbability",
    "DeepDream",
    "Direction",
    "Gram",
    "StyleLoss",
    "ContentLoss",
    "gram_matrix",
    "gram_parameter_count",
]
