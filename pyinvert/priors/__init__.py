"""Image priors: the handcrafted TV_beta and alpha-norm of Mahendran & Vedaldi (one fused
op, :mod:`pyinvert.priors.handcrafted`); learned priors join this package."""
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm

__all__ = ["image_prior", "tv_norm", "alpha_norm", "isotropic_norm", "ImagePrior"]
