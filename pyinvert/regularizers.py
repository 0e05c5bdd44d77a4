"""Placeholder: being written (issue 2)."""
image_prior = tv_norm = alpha_norm = isotropic_norm = ImagePrior = None
