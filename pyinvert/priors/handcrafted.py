"""The fused image priors: TV_beta and the alpha-norms, value and gradient in one pass.

This module is the only one that touches ``torch.ops.pyinvert.image_prior``: it validates
arguments, registers the op's fake kernel and autograd formula, and offers the function /
``nn.Module`` pair.
"""

import math
from numbers import Real
from typing import Union

import torch
from torch import Tensor, nn

from pyinvert import _ext  # noqa: F401  (registers the op)
from pyinvert import reference as _reference
from pyinvert.objectives.base import Objective, Scaled, check_weight, map_weight

Weight = Union[float, Tensor]


def _check_images(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected x of shape (B, C, H, W), got {list(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected x of dtype float32 or float64, got {x.dtype}")


def _positive(value, name: str, fn: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{fn}: expected {name} to be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{fn}: expected {name} to be finite, got {value}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ValueError(f"{fn}: expected {name} {'>=' if allow_zero else '>'} 0, got {value}")
    return float(value)


def _per_image(weight: Weight, x: Tensor, name: str, fn: str) -> Tensor:
    """A float or a Tensor[B] (or 0-dim) weight as a contiguous Tensor[B] like x. A float must
    be finite and >= 0 (checked here); a Tensor's values are checked by the op (which names the
    image), so that a CUDA weight costs no extra synchronization here."""
    B = x.shape[0]
    if isinstance(weight, Tensor):
        if weight.dim() == 0:
            weight = weight.expand(B)
        elif weight.shape != (B,):
            raise ValueError(
                f"{fn}: expected {name} to be a float or of shape ({B},), got {list(weight.shape)}"
            )
        # Weights are constants of the objective: the prior is not differentiated w.r.t. them.
        return weight.detach().to(device=x.device, dtype=x.dtype).contiguous()
    _check_float_weight(weight, name, fn)
    return torch.full((B,), float(weight), dtype=x.dtype, device=x.device)


def _check_float_weight(weight, name: str, fn: str) -> None:
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise TypeError(
            f"{fn}: expected {name} to be a float or a Tensor, got {type(weight).__name__}"
        )
    if not math.isfinite(weight):
        raise ValueError(f"{fn}: expected {name} to be finite, got {weight}")
    if weight < 0:
        raise ValueError(f"{fn}: expected {name} >= 0, got {weight}")


@torch.library.register_fake("pyinvert::image_prior")
def _(x, tv_weight, norm_weight, beta, alpha, isotropic, eps, compute_grad):
    grad = (
        torch.empty_like(x, memory_format=torch.contiguous_format)
        if compute_grad
        else x.new_empty(0)
    )
    return x.new_empty(x.shape[0]), grad


def _setup_context(ctx, inputs, output):
    x, *_, compute_grad = inputs
    ctx.x_shape = x.shape
    ctx.save_for_backward(output[1])
    # The gradient output is data, not differentiable; and without this autograd would fill an
    # x-sized zero "gradient of the gradient" on every backward.
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _is_eager_cpu(t: Tensor) -> bool:
    """A real CPU tensor, not traced (compile, fake or functional tensors), so its values can
    be read without a device sync or a data-dependent graph."""
    return (
        not torch.compiler.is_compiling()
        and type(t) is Tensor
        and t.device.type == "cpu"
        and not torch._is_functional_tensor(t)
    )


def _backward(ctx, grad_value, _grad_of_grad):
    # The gradient was computed in the forward pass, in the same sweep over x as the value:
    # an inversion always needs both, and a second sweep would read x again from memory, which
    # is what bounds this op. Backward only scales it by grad_value. When every scale is 1 (the
    # usual `loss = prior.sum()`, with the lambdas passed as weights) the stored gradient itself
    # is returned, saving a full read and write of it. Autograd's own accumulation into x.grad
    # never modifies it (x.grad gets a copy while the graph holds it), so further backward calls
    # (retain_graph=True) give the same gradient; only a caller who changes the returned tensor
    # in place (a torch.autograd.grad result) makes the next backward through this call raise.
    try:
        (grad,) = ctx.saved_tensors
    except RuntimeError as error:
        if "modified by an inplace operation" not in str(error):
            raise
        raise RuntimeError(
            "image_prior: a second backward through the same image_prior call "
            "(retain_graph=True) is not supported; call image_prior again"
        ) from None
    nones = (None,) * 7
    if grad_value is None:
        return (None, *nones)
    if grad.numel() == 0:
        if torch.Size(ctx.x_shape).numel() > 0:
            raise RuntimeError("image_prior: backward needs compute_grad=True in the forward call")
        return (grad.new_zeros(ctx.x_shape), *nones)
    if _is_eager_cpu(grad_value) and bool((grad_value == 1).all()):
        return (grad, *nones)
    return (grad * grad_value.view(-1, 1, 1, 1), *nones)


torch.library.register_autograd("pyinvert::image_prior", _backward, setup_context=_setup_context)


def image_prior(
    x: Tensor,
    *,
    tv_weight: Weight = 1.0,
    beta: float = 2.0,
    norm_weight: Weight = 0.0,
    alpha: float = 6.0,
    isotropic: bool = False,
    eps: float = 0.0,
) -> Tensor:
    r"""Fused image prior ``tv_weight * TV_beta(x) + norm_weight * N_alpha(x)``, per image.

    With forward differences :math:`dx, dy` (0 in the last column / row),

    .. math::
        TV_\beta(x_b) = \sum_{c,i,j} (dx^2 + dy^2 + \epsilon)^{\beta/2}, \quad
        N_\alpha(x_b) = \sum_{c,i,j} |x|^\alpha \ \text{or (isotropic)}\
        \sum_{i,j} \big(\sum_c x^2\big)^{\alpha/2}.

    Value and gradient are computed in one pass (C++/CUDA); backward only scales the stored
    gradient. Where a power's base is 0 and its derivative is undefined the gradient is 0. A
    term whose weight is 0 is switched off (not evaluated). Weights are not differentiated.

    Repeated backward passes through one call (``retain_graph=True``) give the same gradient
    each time (accumulated into ``x.grad`` as usual). One exception: when every output's
    gradient is 1 (e.g. ``value.sum()``) on the CPU, backward returns the stored gradient tensor
    itself (no copy); if the caller modifies that tensor in place (say the result of
    ``torch.autograd.grad``), a later backward through the same call raises ``RuntimeError``
    ("a second backward ... is not supported"): call ``image_prior`` again instead. Second
    derivatives are not supported: the stored gradient is a constant to autograd (with
    ``create_graph=True`` its dependence on ``x`` is not recorded).

    ``x`` is not checked for NaN / Inf (they propagate to the value and gradient, which is how an
    inversion detects a diverging image); every numeric argument is: ``beta``, ``alpha`` and
    ``eps`` must be finite and in range, and the weights finite and >= 0 (``ValueError``
    otherwise, naming the argument and, for a per-image weight, the image).

    Args:
        x: images, any strides, float32 or float64, CPU or CUDA.
        tv_weight: weight of TV_beta, >= 0, a float or a Tensor[B] (a per-image sweep).
            Default: 1.0.
        beta: exponent of TV, finite and > 0. Default: 2.0.
        norm_weight: weight of the alpha-norm, >= 0, a float or a Tensor[B]. Default: 0.0.
        alpha: exponent of the norm, finite and > 0. Default: 6.0.
        isotropic: use the IJCV 2016 isotropic N_alpha (norm over channels first) instead of
            the CVPR 2015 elementwise alpha-norm. Default: False.
        eps: added under the TV power, finite and >= 0 (smooths beta < 2 at 0). Default: 0.0.

    Returns:
        The prior of each image.

    Shape:
        - x: (B, C, H, W)
        - output: (B,)

    Example:
        >>> x = torch.ones(2, 3, 4, 4)
        >>> image_prior(x, norm_weight=1.0, alpha=2.0)
        tensor([48., 48.])

    References:
        Mahendran & Vedaldi, CVPR 2015, eqs. (2) and (3); IJCV 2016, sec. 3.2.
    """
    fn = "image_prior"
    _check_images(x, fn)
    beta = _positive(beta, "beta", fn)
    alpha = _positive(alpha, "alpha", fn)
    eps = _positive(eps, "eps", fn, allow_zero=True)
    tv = _per_image(tv_weight, x, "tv_weight", fn)
    norm = _per_image(norm_weight, x, "norm_weight", fn)
    compute_grad = torch.is_grad_enabled() and x.requires_grad
    value, _ = torch.ops.pyinvert.image_prior(
        x, tv, norm, beta, alpha, bool(isotropic), eps, compute_grad
    )
    return value


def tv_norm(x: Tensor, beta: float = 2.0, eps: float = 0.0) -> Tensor:
    """TV_beta of each image (see :func:`image_prior`). Shape: (B, C, H, W) -> (B,).

    Example:
        >>> tv_norm(torch.zeros(1, 1, 3, 3))
        tensor([0.])
    """
    return image_prior(x, tv_weight=1.0, beta=beta, norm_weight=0.0, eps=eps)


def alpha_norm(x: Tensor, alpha: float = 6.0) -> Tensor:
    """The CVPR 2015 alpha-norm sum |x|^alpha of each image. Shape: (B, C, H, W) -> (B,).

    Example:
        >>> alpha_norm(torch.full((1, 1, 2, 2), 2.0), alpha=2.0)
        tensor([16.])
    """
    return image_prior(x, tv_weight=0.0, norm_weight=1.0, alpha=alpha)


def isotropic_norm(x: Tensor, alpha: float = 6.0) -> Tensor:
    """The IJCV 2016 N_alpha, sum over pixels of (sum_c x^2)^(alpha/2). (B, C, H, W) -> (B,).

    Example:
        >>> isotropic_norm(torch.ones(1, 4, 1, 1), alpha=2.0)
        tensor([4.])
    """
    return image_prior(x, tv_weight=0.0, norm_weight=1.0, alpha=alpha, isotropic=True)


class ImagePrior(Objective, nn.Module):
    r"""The image priors ``tv_weight TV_beta(x) + norm_weight N_alpha(x)`` per image: the module
    form of :func:`image_prior` and the prior term of an objective (IJCV 2016 eq. (2) and
    Sec. 3.3-3.4; CVPR 2015 eq. (2)-(3)), one class for both.

    ``prior(x)`` is the value [B]; as an :class:`pyinvert.objectives.Objective` it adds to
    data terms (``100 * Inversion(t) + ImagePrior(...)``), and scaling it by a float or a
    per-row Tensor scales its weights (the fused op's fast path, value and gradient in one
    pass, is kept); a TV-only and a norm-only prior in a sum fuse into one call.

    Args:
        tv_weight: weight of TV_beta, a float or Tensor[B]. Default: 1.0.
        beta: TV exponent. Default: 2.0.
        norm_weight: weight of N_alpha (R_alpha when not isotropic). Default: 0.0.
        alpha: norm exponent. Default: 6.0.
        isotropic: N_alpha over the channels of a pixel (IJCV) instead of elementwise.
            Default: False.
        eps: TV smoothing (see :func:`image_prior`). Default: 0.0.
        backend: "fused" (:func:`image_prior`) or "reference" (pure PyTorch). Default: "fused".

    Shape:
        - input: (B, C, H, W)
        - output: (B,)

    Example:
        >>> prior = ImagePrior(tv_weight=1.0, norm_weight=1e-3, alpha=6.0)
        >>> prior(torch.zeros(2, 3, 8, 8))
        tensor([0., 0.])
    """

    needs_code = False
    _FIELDS = ("tv_weight", "beta", "norm_weight", "alpha", "isotropic", "eps", "backend")

    def __init__(
        self,
        *,
        tv_weight: Weight = 1.0,
        beta: float = 2.0,
        norm_weight: Weight = 0.0,
        alpha: float = 6.0,
        isotropic: bool = False,
        eps: float = 0.0,
        backend: str = "fused",
    ):
        nn.Module.__init__(self)
        fn = "ImagePrior"
        if backend not in ("fused", "reference"):
            raise ValueError(f"{fn}: expected backend in ('fused', 'reference'), got {backend!r}")
        self.tv_weight = check_weight(tv_weight, fn)
        self.norm_weight = check_weight(norm_weight, fn)
        self.beta = _positive(beta, "beta", fn)
        self.alpha = _positive(alpha, "alpha", fn)
        self.eps = _positive(eps, "eps", fn, allow_zero=True)
        self.isotropic = bool(isotropic)
        for name, weight in (("tv_weight", tv_weight), ("norm_weight", norm_weight)):
            if not isinstance(weight, Tensor):
                _check_float_weight(weight, name, fn)
        self.backend = backend

    def forward(self, *args) -> Tensor:
        """``prior(x)`` (the module) or ``prior(code, x)`` (an objective): the value [B]."""
        return self.evaluate(None, args[-1])[0]

    __call__ = nn.Module.__call__

    def evaluate(self, code, x):
        f = image_prior if self.backend == "fused" else _reference.image_prior
        return f(
            x,
            tv_weight=self.tv_weight,
            beta=self.beta,
            norm_weight=self.norm_weight,
            alpha=self.alpha,
            isotropic=self.isotropic,
            eps=self.eps,
        ), None

    def _off(self, w) -> bool:
        return not isinstance(w, Tensor) and w == 0.0

    def _replace(self, **kw) -> "ImagePrior":
        out = ImagePrior.__new__(ImagePrior)
        nn.Module.__init__(out)
        for k in self._FIELDS:
            setattr(out, k, kw.get(k, getattr(self, k)))
        return out

    def __mul__(self, weight):
        if not isinstance(weight, (int, float, Tensor)) or isinstance(weight, bool):
            return NotImplemented
        w = check_weight(weight, "ImagePrior")
        if bool((torch.as_tensor(w) < 0).any()):
            # The op's weights must be >= 0: a negative factor scales the value instead.
            return Scaled(self, w)
        return self._replace(tv_weight=self.tv_weight * w, norm_weight=self.norm_weight * w)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def fuse(self, other):
        """A TV-only and a norm-only prior (same backend) as one fused term."""
        if not isinstance(other, ImagePrior) or other.backend != self.backend:
            return None
        if self._off(self.norm_weight) and other._off(other.tv_weight):
            return self._replace(
                norm_weight=other.norm_weight, alpha=other.alpha, isotropic=other.isotropic
            )
        if self._off(self.tv_weight) and other._off(other.norm_weight):
            return self._replace(tv_weight=other.tv_weight, beta=other.beta, eps=other.eps)
        return None

    def map_rows(self, fn):
        return self._replace(
            tv_weight=map_weight(self.tv_weight, fn), norm_weight=map_weight(self.norm_weight, fn)
        )

    def to(self, *args, **kwargs) -> "ImagePrior":
        """A copy with the weights moved (``to(device)``, ``to(dtype)``, ``to(device, dtype)``
        as for a module)."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        return Objective.to(self, device=device, dtype=dtype)

    def describe(self):
        def w(v):
            return "w[N]" if isinstance(v, Tensor) else v

        return (
            f"ImagePrior(tv={w(self.tv_weight)}, beta={self.beta}, "
            f"norm={w(self.norm_weight)}, alpha={self.alpha}, isotropic={self.isotropic})"
        )

    def extra_repr(self) -> str:
        return (
            f"tv_weight={self.tv_weight}, beta={self.beta}, norm_weight={self.norm_weight}, "
            f"alpha={self.alpha}, isotropic={self.isotropic}, eps={self.eps}, "
            f"backend={self.backend!r}"
        )
