"""Attribution: which pixels a network's score depends on, and how to test the answer.

Gradient methods (saliency, deconvnet, guided backprop, Grad-CAM, guided Grad-CAM, integrated
gradients, SmoothGrad) and occlusion, through one entry point :func:`attribute`; backward rules
of the ReLU family (:func:`backward_rule`) that see ReLU6, LeakyReLU, hardtanh, ``F.relu`` and
in-place units; maximally activating patches (:func:`top_patches`); and evaluations: the
model-parameter randomization test, deletion / insertion curves and the pointing game.
"""

from pyinvert.attribution.api import GRADIENT_METHODS, METHODS, AttributionResult, attribute
from pyinvert.attribution.evaluation import (
    cascade_layers,
    deletion_insertion,
    pointing_game,
    randomization_figure,
    randomization_test,
    spearman,
    ssim,
)
from pyinvert.attribution.gradient import DEFAULT_LAYERS
from pyinvert.attribution.patches import TopPatches, receptive_field, top_patches
from pyinvert.attribution.rules import RULES, backward_rule

__all__ = [
    "attribute",
    "AttributionResult",
    "METHODS",
    "GRADIENT_METHODS",
    "DEFAULT_LAYERS",
    "backward_rule",
    "RULES",
    "top_patches",
    "TopPatches",
    "receptive_field",
    "randomization_test",
    "randomization_figure",
    "cascade_layers",
    "deletion_insertion",
    "pointing_game",
    "spearman",
    "ssim",
]
