"""Image priors: what makes an image natural, as a function of the image alone.

Today: the handcrafted TV_beta and alpha-norm of Mahendran & Vedaldi (one fused op,
:mod:`pyinvert.priors.handcrafted`; :class:`ImagePrior` is also an objective term). A new prior
goes in a module of its own here (``priors/learned.py``: ICA / field-of-experts priors;
``priors/score.py``: score matching), as a function ``prior(x) -> Tensor[B]`` plus an
:class:`pyinvert.objectives.Objective` term with ``needs_code = False``.
"""

# The objective algebra first: ImagePrior is an Objective, and pyinvert.objectives builds
# ImagePrior terms (a real cycle, broken by this order whichever package is imported first).
from pyinvert import objectives  # noqa: F401
from pyinvert.priors.handcrafted import ImagePrior, alpha_norm, image_prior, isotropic_norm, tv_norm

__all__ = ["image_prior", "tv_norm", "alpha_norm", "isotropic_norm", "ImagePrior"]
