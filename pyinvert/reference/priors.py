"""The image priors in plain PyTorch autograd: the definitions, written for clarity.

References:
    Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, eq. (2) alpha-norm and eq. (3) TV_beta.
    Mahendran & Vedaldi, "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016, sec. 3.2 (isotropic N_alpha).
"""

import torch
import torch.nn.functional as F


def _power(s: torch.Tensor, gamma: float) -> torch.Tensor:
    """s^(gamma/2) for s >= 0, with value 0 and gradient 0 where s == 0 (the op's rule for a
    derivative that is undefined at 0)."""
    positive = s > 0
    safe = torch.where(positive, s, torch.ones_like(s))
    return torch.where(positive, safe ** (gamma / 2), torch.zeros_like(s))


def tv_norm(x: torch.Tensor, beta: float = 2.0, eps: float = 0.0) -> torch.Tensor:
    """TV_beta(x_b) = sum_{c,i,j} (dx^2 + dy^2 + eps)^(beta/2), dx = 0 in the last column and
    dy = 0 in the last row. Shape: (B, C, H, W) -> (B,)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return _power(dx**2 + dy**2 + eps, beta).sum(dim=(1, 2, 3))


def alpha_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """R_alpha(x_b) = sum_{c,i,j} |x|^alpha. Shape: (B, C, H, W) -> (B,)."""
    return _power(x**2, alpha).sum(dim=(1, 2, 3))


def isotropic_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """N_alpha(x_b) = sum_{i,j} (sum_c x^2)^(alpha/2). Shape: (B, C, H, W) -> (B,)."""
    return _power((x**2).sum(dim=1), alpha).sum(dim=(1, 2))


def image_prior(
    x: torch.Tensor,
    *,
    tv_weight=1.0,
    beta: float = 2.0,
    norm_weight=0.0,
    alpha: float = 6.0,
    isotropic: bool = False,
    eps: float = 0.0,
) -> torch.Tensor:
    """tv_weight[b] * TV_beta(x_b) + norm_weight[b] * N(x_b), per image. A term whose weight is
    0 is switched off (not evaluated), as in the fused op."""
    B = x.shape[0]
    tv_weight = torch.as_tensor(tv_weight, dtype=x.dtype, device=x.device).expand(B)
    norm_weight = torch.as_tensor(norm_weight, dtype=x.dtype, device=x.device).expand(B)
    norm = isotropic_norm(x, alpha) if isotropic else alpha_norm(x, alpha)
    tv = tv_norm(x, beta, eps)
    zero = torch.zeros_like(tv)
    return torch.where(tv_weight != 0, tv_weight * tv, zero) + torch.where(
        norm_weight != 0, norm_weight * norm, zero
    )
