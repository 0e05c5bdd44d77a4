"""pyinvert: understanding visual representations by inverting them.

Fused C++/CUDA kernels for the image priors (TV_beta, alpha-norm) and for differentiable HOG
and dense SIFT that equal VLFeat's, with pure-PyTorch references beside them; one batched
engine for inversion (:func:`invert`), activation maximization, caricatures, DeepDream and
invariance maps of HOG, DSIFT and CNN layers (:mod:`pyinvert.models`: an offline model zoo).
"""
from pyinvert import _ext  # noqa: F401  (loads the kernels first)
from pyinvert import _compat
from pyinvert import reference
from pyinvert.features import HOG, DenseSIFT, dsift, hog, render_hog
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm
from pyinvert import metrics
from pyinvert.tasks.inversion import InversionResult, invert
from pyinvert import models, objectives
from pyinvert.representations.cnn import CNN
from pyinvert.tasks.visualization import (VisualizationResult, actmax, caricature, dream, invariance_map,
                                visualize)

_compat.install()

__version__ = "0.1.0"

__all__ = [
    "image_prior", "tv_norm", "alpha_norm", "isotropic_norm", "ImagePrior",
    "hog", "HOG", "render_hog", "dsift", "DenseSIFT",
    "reference",
    "invert", "InversionResult", "metrics",
    "models", "objectives", "CNN", "visualize", "VisualizationResult", "actmax", "caricature",
    "dream", "invariance_map",
]
