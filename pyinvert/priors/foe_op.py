"""The fused Fields-of-Experts energy: value, gradient and score-matching Laplacian in one pass.

This module is the only one that touches ``torch.ops.pyinvert.foe_energy_grad`` and
``torch.ops.pyinvert.foe_param_grad``: it validates arguments, registers the ops' fake
kernels and autograd formulas, and offers :func:`foe_energy` and :func:`foe_laplacian`.

Derivatives:

* ``foe_energy`` backward: the gradient with respect to ``x`` is the one the fused pass computed
  (scaled by the incoming gradient); the gradients with respect to ``filters`` and ``alphas``
  come from ``foe_param_grad`` (one more pass, only when they are needed).
* Second derivatives (``create_graph=True``, as score matching's 1/2 ||score||^2 term needs):
  the backward then recomputes the gradient with the pure-PyTorch formulation
  (:func:`pyinvert.reference.foe.foe_grad`, conv2d + conv_transpose2d), which autograd can
  differentiate again with respect to x, filters and alphas.
* ``foe_laplacian``: the value from the fused pass; its backward goes through
  :func:`pyinvert.reference.foe.foe_laplacian`.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from pyinvert import _ext  # noqa: F401  (registers the ops)
from pyinvert.reference import foe as _reference

EXPERTS = _reference.EXPERTS


def _check(x, filters, alphas, expert, fn: str) -> None:
    for name, t in (("x", x), ("filters", filters), ("alphas", alphas)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: expected x of shape (B, C, H, W), got {list(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: expected x of dtype float32 or float64, got {x.dtype}")
    C = x.shape[1]
    if (
        filters.dim() != 4
        or filters.shape[1] != C
        or filters.shape[2] != filters.shape[3]
        or filters.shape[2] < 1
    ):
        raise ValueError(
            f"{fn}: expected filters of shape (n, {C}, k, k) with k >= 1, got {list(filters.shape)}"
        )
    if alphas.shape != (filters.shape[0],):
        raise ValueError(
            f"{fn}: expected alphas of shape ({filters.shape[0]},), got {list(alphas.shape)}"
        )
    for name, t in (("filters", filters), ("alphas", alphas)):
        if t.device != x.device:
            raise ValueError(f"{fn}: expected {name} on {x.device}, got {t.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"{fn}: expected {name} of dtype {x.dtype}, got {t.dtype}")
    if not isinstance(expert, str) or expert not in EXPERTS:
        raise ValueError(f"{fn}: expected expert in {EXPERTS}, got {expert!r}")


@torch.library.register_fake("pyinvert::foe_energy_grad")
def _(x, filters, alphas, expert, with_laplacian):
    B = x.shape[0]
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    return x.new_empty(B), grad, x.new_empty(B if with_laplacian else 0)


@torch.library.register_fake("pyinvert::foe_param_grad")
def _(x, filters, alphas, expert, grad_energy):
    return (
        torch.empty_like(filters, memory_format=torch.contiguous_format),
        torch.empty_like(alphas, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    x, filters, alphas, expert, _ = inputs
    ctx.expert = expert
    ctx.save_for_backward(x, filters, alphas, output[1])
    # grad_x and the Laplacian are data, not differentiated through this op (the Laplacian has
    # its own autograd in foe_laplacian; grad_x's derivatives come from the reference below).
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_energy, _grad_grad, _grad_lap):
    x, filters, alphas, grad_x = ctx.saved_tensors
    if grad_energy is None:
        return None, None, None, None, None
    need_x, need_f, need_a = ctx.needs_input_grad[:3]
    gx = gf = ga = None
    if torch.is_grad_enabled():
        # create_graph=True: a differentiable formulation (second derivatives for score matching).
        if need_x:
            gx = grad_energy.view(-1, 1, 1, 1) * _reference.foe_grad(x, filters, alphas, ctx.expert)
        if need_f or need_a:
            energy = _reference.foe_energy(x, filters, alphas, ctx.expert)
            inputs = [t for t, need in ((filters, need_f), (alphas, need_a)) if need]
            grads = list(torch.autograd.grad(energy, inputs, grad_energy, create_graph=True))
            gf = grads.pop(0) if need_f else None
            ga = grads.pop(0) if need_a else None
        return gx, gf, ga, None, None
    if need_x:
        gx = grad_x * grad_energy.view(-1, 1, 1, 1).to(grad_x.dtype)
    if need_f or need_a:
        gf, ga = torch.ops.pyinvert.foe_param_grad(
            x, filters, alphas, ctx.expert, grad_energy.contiguous()
        )
        gf = gf if need_f else None
        ga = ga if need_a else None
    return gx, gf, ga, None, None


torch.library.register_autograd(
    "pyinvert::foe_energy_grad", _backward, setup_context=_setup_context
)


def foe_energy_grad(
    x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t", with_laplacian=False
) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The fused op itself: ``(energy[B], grad_x[B, C, H, W], laplacian[B] or None)``.

    Arguments as for :func:`foe_energy`. ``grad_x`` is dE/dx (not scaled by anything), returned
    as data (not differentiable); the energy is differentiable as in :func:`foe_energy`.

    Example:
        >>> e, g, lap = foe_energy_grad(torch.zeros(1, 1, 4, 4), torch.ones(2, 1, 3, 3),
        ...                             torch.ones(2), with_laplacian=True)
        >>> e, g.abs().sum(), lap
        (tensor([0.]), tensor(0.), tensor([72.]))
    """
    _check(x, filters, alphas, expert, "foe_energy_grad")
    energy, grad, lap = torch.ops.pyinvert.foe_energy_grad(
        x, filters, alphas, expert, bool(with_laplacian)
    )
    return energy, grad, (lap if with_laplacian else None)


def foe_energy(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    r"""Fields-of-Experts energy of each image, over the valid positions (no padding).

    .. math::
        E(x_b) = \sum_p \sum_i \alpha_i\, \rho\big(\langle f_i, x_{b,p} \rangle\big),

    with :math:`x_{b,p}` the C x k x k patch at position p (correlation, as ``F.conv2d``) and
    ``student_t``: :math:`\rho(s) = \log(1 + s^2/2)` or ``logcosh``: :math:`\rho(s) = \log\cosh s`.
    Energy and dE/dx are computed in one pass over x (C++/CUDA): the n responses of a position
    are never written out as maps. Backward is differentiable with respect to x, filters and
    alphas, also twice (see the module docstring). Images smaller than the filters have no
    positions: energy 0 and gradient 0. NaN / Inf in the inputs propagate; nothing is checked
    for finiteness and alphas may have any sign.

    Args:
        x: images, any strides, float32 or float64, CPU or CUDA.
        filters: the n experts' filters, same dtype and device as x.
        alphas: the experts' weights.
        expert: ``"student_t"`` (Roth & Black) or ``"logcosh"`` (ICA). Default: "student_t".

    Returns:
        The energy of each image.

    Shape:
        - x: (B, C, H, W)
        - filters: (n, C, k, k)
        - alphas: (n,)
        - output: (B,)

    Example:
        >>> x = torch.ones(2, 1, 5, 5)
        >>> foe_energy(x, torch.full((1, 1, 3, 3), 1 / 9), torch.ones(1))
        tensor([3.6492, 3.6492])

    References:
        Roth & Black, "Fields of Experts", CVPR 2005, eq. (5); Hyvarinen, "Estimation of
        Non-Normalized Statistical Models by Score Matching", JMLR 2005.
    """
    _check(x, filters, alphas, expert, "foe_energy")
    energy, _, _ = torch.ops.pyinvert.foe_energy_grad(x, filters, alphas, expert, False)
    return energy


class _Laplacian(torch.autograd.Function):
    @staticmethod
    def forward(x, filters, alphas, expert):
        return torch.ops.pyinvert.foe_energy_grad(x, filters, alphas, expert, True)[2]

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.expert = inputs[3]
        ctx.save_for_backward(*inputs[:3])

    @staticmethod
    def backward(ctx, grad):
        x, filters, alphas = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [
                t.detach().requires_grad_(need)
                for t, need in zip((x, filters, alphas), ctx.needs_input_grad[:3])
            ]
            value = _reference.foe_laplacian(*leaves, ctx.expert)
            wanted = [t for t in leaves if t.requires_grad]
            grads = iter(
                torch.autograd.grad(value, wanted, grad, create_graph=torch.is_grad_enabled())
                if wanted
                else ()
            )
        return tuple(next(grads) if t.requires_grad else None for t in leaves) + (None,)


def foe_laplacian(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    r"""The score-matching Laplacian term of each image: the trace of the Hessian of
    :func:`foe_energy` with respect to x,

    .. math::
        L(x_b) = \sum_i \alpha_i \lVert f_i \rVert^2 \sum_p \rho''\big(\langle f_i, x_{b,p}
        \rangle\big),

    from the fused pass (no second backward). Differentiable with respect to x, filters and
    alphas (through :func:`pyinvert.reference.foe.foe_laplacian`).

    Args:
        x: images (B, C, H, W), float32 or float64.
        filters: (n, C, k, k).
        alphas: (n,).
        expert: ``"student_t"`` or ``"logcosh"``. Default: "student_t".

    Returns:
        The Laplacian term of each image, shape (B,).

    Example:
        >>> foe_laplacian(torch.zeros(1, 1, 4, 4), torch.ones(2, 1, 3, 3), torch.ones(2))
        tensor([72.])

    References:
        Hyvarinen, JMLR 2005, eq. (4) (the sum of the second derivatives).
    """
    _check(x, filters, alphas, expert, "foe_laplacian")
    return _Laplacian.apply(x, filters, alphas, expert)
