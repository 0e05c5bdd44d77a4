"""Image priors: what makes an image natural, as a function of the image alone.

- Handcrafted (:mod:`pyinvert.priors.handcrafted`): the TV_beta and alpha-norm of Mahendran &
  Vedaldi (one fused op); :class:`ImagePrior` is also an objective term.
- Learned (:mod:`pyinvert.priors.models`): over-complete :class:`ICA`, Fields of Experts
  (:class:`FoE`) and the separable FoE (:class:`SeparableFoE`), their energies through
  the fused op (:func:`pyinvert.priors.experts.field_energy`, inference) or conv2d
  (:func:`pyinvert.priors.experts.conv_energy`, training), trained by score matching
  (:func:`score_matching_loss`, :func:`train`), shipped as ``load("foe")`` / ``load("ica")``,
  evaluated by MAP denoising (:func:`denoise`), and used in inversions as objective terms
  (:class:`LearnedPrior`, :class:`FeaturePrior` on a CNN layer; ``invert(prior="foe")``).
  ``pyinvert.priors.train`` and ``pyinvert.priors.denoise`` are the functions; their modules
  are ``pyinvert.priors.train`` / ``.denoise`` in ``sys.modules`` (import names from them).
"""

# The objective algebra first: ImagePrior is an Objective, and pyinvert.objectives builds
# ImagePrior terms (a real cycle, broken by this order whichever package is imported first).
from pyinvert import objectives  # noqa: F401
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm
from pyinvert.priors.experts import conv_energy
from pyinvert.priors.models import FoE, ICA, SeparableFoE, amari_index
from pyinvert.priors.score import score_matching_loss
from pyinvert.priors.train import TrainResult, train
from pyinvert.priors.store import load, save
from pyinvert.priors.denoise import denoise
from pyinvert.priors.objective import FeaturePrior, LearnedPrior, train_feature_prior

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
    "load",
    "save",
    "denoise",
    "LearnedPrior",
    "FeaturePrior",
    "train_feature_prior",
]
