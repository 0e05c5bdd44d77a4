"""The Fields-of-Experts energy in plain PyTorch: F.conv2d, the expert elementwise, a sum.

The test oracle and benchmark baseline of the fused op (:mod:`pyinvert.priors.foe_op`); every
gradient (also the second derivatives score matching needs) comes from autograd.

References:
    Roth & Black, "Fields of Experts: A Framework for Learning Image Priors", CVPR 2005
    (Student-t experts). Hyvarinen, "Estimation of Non-Normalized Statistical Models by Score
    Matching", JMLR 2005 (log cosh, and the Laplacian term).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

EXPERTS = ("student_t", "logcosh")


def rho(s: Tensor, expert: str) -> Tensor:
    """The expert's negative log density rho(s) (up to a constant), elementwise."""
    if expert == "student_t":
        return torch.log1p(0.5 * s * s)
    if expert == "logcosh":
        a = s.abs()
        return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)
    raise ValueError(f"foe_energy: expected expert in {EXPERTS}, got {expert!r}")


def rho_d1(s: Tensor, expert: str) -> Tensor:
    """rho'(s), elementwise."""
    if expert == "student_t":
        return 2 * s / (2 + s * s)
    if expert == "logcosh":
        return torch.tanh(s)
    raise ValueError(f"foe_energy: expected expert in {EXPERTS}, got {expert!r}")


def rho_d2(s: Tensor, expert: str) -> Tensor:
    """rho''(s), elementwise."""
    if expert == "student_t":
        return (4 - 2 * s * s) / (2 + s * s) ** 2
    if expert == "logcosh":
        return 1 - torch.tanh(s) ** 2
    raise ValueError(f"foe_energy: expected expert in {EXPERTS}, got {expert!r}")


def foe_energy(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    """E[b] = sum_p sum_i alphas_i rho(<filters_i, patch_p(x_b)>) over the valid positions.

    Shape: x (B, C, H, W), filters (n, C, k, k), alphas (n,) -> (B,).
    """
    r = F.conv2d(x, filters)
    return (alphas.view(1, -1, 1, 1) * rho(r, expert)).sum(dim=(1, 2, 3))


def foe_grad(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    """dE/dx = sum_i conv_transpose(alphas_i rho'(r_i), filters_i), differentiable (for the
    1/2 ||score||^2 term of score matching). Shape: like x."""
    r = F.conv2d(x, filters)
    return F.conv_transpose2d(alphas.view(1, -1, 1, 1) * rho_d1(r, expert), filters)


def foe_laplacian(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    """L[b] = sum_i alphas_i ||filters_i||^2 sum_p rho''(r_i(p)): the trace of the Hessian of E
    with respect to x (valid convolution: each pixel of a patch meets each tap once).
    Shape: (B,)."""
    r = F.conv2d(x, filters)
    weight = alphas * filters.flatten(1).pow(2).sum(1)
    return (weight.view(1, -1, 1, 1) * rho_d2(r, expert)).sum(dim=(1, 2, 3))
