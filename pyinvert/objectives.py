"""The inversion objective: a normalized data term plus the image priors, per image.

``loss_b = C_b |Phi(x_b) - Phi0_b|^2 / |Phi0_b|^2 + tv_b TV_beta(x_b) + norm_b N_alpha(x_b)``,
with the prior weights already scaled as the recipe says (see :mod:`pyinvert.recipes`). The
priors go through the fused ``pyinvert.image_prior`` (value and gradient in one pass: the loss
is summed with unit weights, its fast path) or, with backend="reference", through
``pyinvert.reference.image_prior``.
"""
from typing import Tuple

import torch
from torch import Tensor

from pyinvert import reference as _reference
from pyinvert.regularizers import image_prior as _image_prior


def feature_distance(code: Tensor, target: Tensor) -> Tensor:
    """Squared distance |code_b - target_b|^2 per image. Shape: (B, ...) x (B, ...) -> (B,)."""
    d = (code - target).flatten(1)
    return (d * d).sum(1)


class Objective:
    """Per-image inversion objective (see the module docstring).

    Args:
        representation: the module Phi.
        targets: the codes Phi0, [N, ...].
        data_weight: C, Tensor[N].
        tv_weight: the scaled TV weight, Tensor[N].
        norm_weight: the scaled norm weight, Tensor[N].
        beta: TV exponent.
        alpha: norm exponent.
        isotropic: isotropic N_alpha (IJCV 2016) instead of R_alpha (CVPR 2015).
        backend: "fused" or "reference" (the prior's implementation).

    References:
        Mahendran & Vedaldi, CVPR 2015, eq. (1); IJCV 2016, eq. (3).
    """

    def __init__(self, representation, targets: Tensor, *, data_weight: Tensor,
                 tv_weight: Tensor, norm_weight: Tensor, beta: float, alpha: float,
                 isotropic: bool, backend: str = "fused"):
        self.representation = representation
        self.targets = targets
        # |Phi0|^2; a blank image's code is 0: normalize by 1 there instead of dividing by 0.
        norm2 = feature_distance(targets, torch.zeros_like(targets))
        self.target_norm2 = torch.where(norm2 > 0, norm2, torch.ones_like(norm2))
        self.data_weight = data_weight
        self.tv_weight = tv_weight
        self.norm_weight = norm_weight
        self.beta = beta
        self.alpha = alpha
        self.isotropic = isotropic
        self.prior_fn = _image_prior if backend == "fused" else _reference.image_prior

    def __call__(self, crop: Tensor, full: Tensor) -> Tuple[Tensor, Tensor]:
        """(loss [N], normalized feature error [N]) of the crop seen by Phi and the full
        optimized tensor the priors act on."""
        code = self.representation(crop)
        error = feature_distance(code, self.targets) / self.target_norm2
        prior = self.prior_fn(full, tv_weight=self.tv_weight, beta=self.beta,
                              norm_weight=self.norm_weight, alpha=self.alpha,
                              isotropic=self.isotropic)
        return self.data_weight * error + prior, error
