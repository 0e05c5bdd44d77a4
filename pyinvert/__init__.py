"""pyinvert: understanding visual representations by inverting them.

Fused C++/CUDA kernels for the image priors (TV_beta, alpha-norm) and for differentiable HOG
and dense SIFT that equal VLFeat's, with pure-PyTorch references beside them; one batched
engine for inversion (:func:`invert`), activation maximization, caricatures, DeepDream,
texture synthesis (:func:`texture`), style transfer (:func:`style_transfer`) and invariance
maps of any representation: HOG, DSIFT, CNN layers (:mod:`pyinvert.models`: an offline
model zoo), your own ``nn.Module`` or function.

The package tree is the architecture: ``features/`` (the ops), ``reference/`` (their
pure-PyTorch oracles), ``priors/``, ``representations/`` (the protocol and its Code),
``objectives/``, ``optim/`` (options, parameterizations, engine, loop, rules, jitter,
recipes), ``tasks/`` (one file per task), ``figures/``, ``models/``, ``batch/``, ``cli/``, and
``attribution/`` (saliency, backward rules, Grad-CAM, occlusion, their evaluations),
``analysis/`` (equivariance and equivalence), ``toolbox/`` (filters, neighbours, embeddings,
fooling images, Yosinski's regularizers, non-parametric textures), ``experiments/`` (Table 1),
``priors/`` (also the learned ICA and Fields-of-Experts priors, trained by score matching, and
MAP denoising), ``decoders/`` (trained inverting networks and HOGgle) and ``training/`` (what
the training loops share: checkpoints, data parallelism).
"""

from pyinvert import _ext  # noqa: F401  (loads the kernels first)
from pyinvert import _compat
from pyinvert import objectives  # before priors: ImagePrior is an objective term
from pyinvert import analysis, attribution, metrics, models, reference
from pyinvert import decoders, priors, training
from pyinvert.features import HOG, DenseSIFT, dsift, hog, render_hog
from pyinvert.optim.options import RunOptions
from pyinvert.optim.parameterizations import FourierImage, PixelCanvas
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm
from pyinvert.representations import (
    CNN,
    Code,
    Representation,
    as_representation,
    register_representation,
)
from pyinvert.attribution import AttributionResult, attribute, top_patches
from pyinvert.tasks.caricature import caricature
from pyinvert.tasks.dream import dream
from pyinvert.tasks.invariance import InvarianceResult, invariance_map
from pyinvert.tasks.inversion import InversionResult, invert
from pyinvert.tasks.result import Result
from pyinvert.tasks.style import StyleResult, style_transfer
from pyinvert.tasks.texture import TextureResult, texture
from pyinvert.tasks.visualization import VisualizationResult, actmax, visualize

# the toolbox: filters, neighbours and embeddings, fooling images, non-parametric textures
from pyinvert.toolbox import (
    EmbedResult,
    FiltersResult,
    FoolResult,
    NeighborsResult,
    NonparametricResult,
    embed,
    filters,
    fool,
    neighbors,
    texture_nonparametric,
)

_compat.install()

__version__ = "0.1.0"

__all__ = [
    # the ops and their module forms
    "image_prior",
    "tv_norm",
    "alpha_norm",
    "isotropic_norm",
    "ImagePrior",
    "hog",
    "HOG",
    "render_hog",
    "dsift",
    "DenseSIFT",
    # representations
    "Representation",
    "Code",
    "CNN",
    "as_representation",
    "register_representation",
    # tasks and their results
    "invert",
    "InversionResult",
    "visualize",
    "actmax",
    "caricature",
    "dream",
    "invariance_map",
    "VisualizationResult",
    "InvarianceResult",
    "Result",
    "texture",
    "TextureResult",
    "style_transfer",
    "StyleResult",
    # attribution
    "attribute",
    "AttributionResult",
    "top_patches",
    # the toolbox and its results
    "filters",
    "neighbors",
    "embed",
    "fool",
    "texture_nonparametric",
    "FiltersResult",
    "NeighborsResult",
    "EmbedResult",
    "FoolResult",
    "NonparametricResult",
    # how to run
    "RunOptions",
    "PixelCanvas",
    "FourierImage",
    # sub-packages
    "reference",
    "metrics",
    "models",
    "objectives",
    "analysis",
    "attribution",
    "priors",
    "decoders",
    "training",
]
