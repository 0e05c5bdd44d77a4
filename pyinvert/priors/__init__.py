"""Image priors: what makes an image natural, as a function of the image alone.

- Handcrafted (:mod:`pyinvert.priors.handcrafted`): the TV_beta and alpha-norm of Mahendran &
  Vedaldi (one fused op); :class:`ImagePrior` is also an objective term.
- Learned (:mod:`pyinvert.priors.models`): over-complete :class:`ICA`, Fields of Experts
  (:class:`FoE`) and the separable FoE (:class:`SeparableFoE`), their energies through
  :func:`pyinvert.priors.experts.conv_energy`, trained by score matching
  (:func:`score_matching_loss`, :func:`train`).
"""

# The objective algebra first: ImagePrior is an Objective, and pyinvert.objectives builds
# ImagePrior terms (a real cycle, broken by this order whichever package is imported first).
from pyinvert import objectives  # noqa: F401
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm
from pyinvert.priors.experts import conv_energy
from pyinvert.priors.models import FoE, ICA, SeparableFoE, amari_index
from pyinvert.priors.score import score_matching_loss
from pyinvert.priors.train import TrainResult, train

__all__ = [
    "image_prior",
    "tv_norm",
    "alpha_norm",
    "isotropic_norm",
    "ImagePrior",
    "conv_energy",
    "ICA",
    "FoE",
    "SeparableFoE",
    "amari_index",
    "score_matching_loss",
    "train",
    "TrainResult",
]
