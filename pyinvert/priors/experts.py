r"""The experts of the learned priors and the one function every model's energy goes through.

A learned prior's energy (its negative log density up to a constant) is a sum over all the
valid k x k patches ``x_p`` of an image and over its n filters ``w_i``:

.. math::
    E(x) = \sum_p \sum_i \alpha_i \, \rho(\langle w_i, x_p \rangle).

The experts :math:`\rho` (:data:`EXPERTS`), with their first and second derivatives:

- ``"student_t"`` (Roth & Black 2005, the Student-t expert with exponent 1):
  :math:`\rho(s) = \log(1 + s^2/2)`, :math:`\rho'(s) = 2s / (2 + s^2)`,
  :math:`\rho''(s) = 2 (2 - s^2) / (2 + s^2)^2`.
- ``"logcosh"`` (Hyvarinen 2005's ICA, G(s) = -log cosh s):
  :math:`\rho(s) = \log\cosh s`, computed as :math:`|s| + \log(1 + e^{-2|s|}) - \log 2`
  (no overflow), :math:`\rho'(s) = \tanh s`, :math:`\rho''(s) = 1 - \tanh^2 s`.

Two code paths compute this energy, one per purpose:

- **Training** (:func:`conv_energy`, :func:`energy_and_laplacian`, used by
  :func:`pyinvert.priors.score_matching_loss`): pure PyTorch, ``F.conv2d``, whose double
  backward score matching needs (``create_graph=True`` through the gradient with respect to
  x, then to the filters).
- **Inference** (:func:`field_energy`, behind every model's ``energy`` and hence
  :func:`pyinvert.priors.denoise` and :class:`pyinvert.priors.LearnedPrior`): the fused
  C++/CUDA op :func:`pyinvert.priors.foe_op.foe_energy`, energy and dE/dx in one pass over
  the image (about 8x faster than compiled conv2d for energy + gradient). Its gradients with
  respect to the filters and alphas are exact too, and a second derivative goes through the
  conv2d reference, so it is correct everywhere; it is only slower than :func:`conv_energy`
  where a double backward is taken.

References:
    S. Roth, M. J. Black. Fields of Experts: A Framework for Learning Image Priors. CVPR 2005,
    eq. (4)-(5).
    A. Hyvarinen. Estimation of Non-Normalized Statistical Models by Score Matching. JMLR 6,
    2005, Sec. 4 (eq. 8, the ICA model with G = -log cosh).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.priors import foe_op as _foe_op

#: The experts accepted by :func:`conv_energy`.
EXPERTS = ("student_t", "logcosh")

_LOG2 = math.log(2.0)


def _check_expert(expert: str, fn: str) -> None:
    if expert not in EXPERTS:
        raise ValueError(f"{fn}: expected expert in {EXPERTS}, got {expert!r}")


def rho(s: Tensor, expert: str) -> Tensor:
    """The expert's energy rho(s), elementwise (see the module docstring)."""
    _check_expert(expert, "rho")
    if expert == "student_t":
        return torch.log1p(0.5 * s * s)
    a = s.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - _LOG2


def rho_prime(s: Tensor, expert: str) -> Tensor:
    """rho'(s), elementwise."""
    _check_expert(expert, "rho_prime")
    if expert == "student_t":
        return 2.0 * s / (2.0 + s * s)
    return torch.tanh(s)


def rho_second(s: Tensor, expert: str) -> Tensor:
    """rho''(s), elementwise."""
    _check_expert(expert, "rho_second")
    if expert == "student_t":
        d = 2.0 + s * s
        return 2.0 * (2.0 - s * s) / (d * d)
    t = torch.tanh(s)
    return 1.0 - t * t


def check_filters(x: Tensor, filters: Tensor, alphas: Tensor, fn: str) -> None:
    """Shapes and dtypes of :func:`conv_energy`'s arguments (errors name ``fn``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: expected x of shape (B, C, H, W), got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected x of a floating dtype, got {x.dtype}")
    if filters.dim() != 4 or filters.shape[1] != x.shape[1]:
        raise ValueError(
            f"{fn}: expected filters of shape (n, {x.shape[1]}, k, k), got {list(filters.shape)}"
        )
    if alphas.shape != filters.shape[:1]:
        raise ValueError(
            f"{fn}: expected alphas of shape ({filters.shape[0]},), got {list(alphas.shape)}"
        )
    k = filters.shape[-1]
    if x.shape[-2] < k or x.shape[-1] < k:
        raise ValueError(
            f"{fn}: expected images of at least {k}x{k} pixels (one {k}x{k} patch), got "
            f"{x.shape[-2]}x{x.shape[-1]}"
        )


def responses(x: Tensor, filters: Tensor) -> Tensor:
    """The filter responses ``<w_i, x_p>`` at every valid patch: [B, n, H-k+1, W-k+1]."""
    return F.conv2d(x, filters.to(x.dtype))


def conv_energy(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    r"""The energy :math:`\sum_p \sum_i \alpha_i \rho(\langle w_i, x_p \rangle)` of each image
    over all valid patches (no padding).

    Differentiable with respect to ``x``, ``filters`` and ``alphas``, twice (``F.conv2d``).

    Args:
        x: images, float32 or float64.
        filters: the filters w_i.
        alphas: the experts' weights alpha_i (any sign is computed; the models keep them > 0).
        expert: "student_t" or "logcosh". Default: "student_t".

    Returns:
        The energy of each image.

    Shape:
        - x: (B, C, H, W) with H, W >= k
        - filters: (n, C, k, k); alphas: (n,)
        - output: (B,)

    Example:
        >>> x = torch.zeros(2, 1, 5, 5)
        >>> conv_energy(x, torch.ones(3, 1, 3, 3), torch.ones(3))
        tensor([0., 0.])
    """
    fn = "conv_energy"
    _check_expert(expert, fn)
    check_filters(x, filters, alphas, fn)
    r = responses(x, filters)
    return (rho(r, expert).sum(dim=(2, 3)) * alphas.to(x.dtype)).sum(dim=1)


def field_energy(x: Tensor, filters: Tensor, alphas: Tensor, expert: str = "student_t") -> Tensor:
    r"""The inference path: :func:`conv_energy`'s value, computed by the fused op
    (:func:`pyinvert.priors.foe_op.foe_energy`; the filters and alphas are cast to x's dtype
    and device).

    Args:
        x: images, float32 or float64.
        filters: the filters w_i.
        alphas: the experts' weights alpha_i.
        expert: "student_t" or "logcosh". Default: "student_t".

    Returns:
        The energy of each image.

    Shape:
        - x: (B, C, H, W) with H, W >= k
        - filters: (n, C, k, k); alphas: (n,)
        - output: (B,)

    Example:
        >>> x = torch.zeros(2, 1, 5, 5)
        >>> field_energy(x, torch.ones(3, 1, 3, 3), torch.ones(3))
        tensor([0., 0.])
    """
    fn = "field_energy"
    _check_expert(expert, fn)
    check_filters(x, filters, alphas, fn)
    f = filters.to(device=x.device, dtype=x.dtype)
    return _foe_op.foe_energy(x, f, alphas.to(device=x.device, dtype=x.dtype), expert)


def energy_and_laplacian(x: Tensor, filters: Tensor, alphas: Tensor, expert: str):
    r"""The energy [B] and its Laplacian :math:`\sum_j \partial^2 E / \partial x_j^2` [B] in
    closed form, from one convolution:

    .. math::
        \Delta E(x) = \sum_p \sum_i \alpha_i \, \rho''(\langle w_i, x_p \rangle) \, \|w_i\|^2

    (each pixel j of patch p contributes :math:`\alpha_i \rho'' w_{i,j-p}^2`; summed over the
    patch's pixels that is the squared norm). No second backward pass is needed.
    """
    fn = "energy_and_laplacian"
    _check_expert(expert, fn)
    check_filters(x, filters, alphas, fn)
    r = responses(x, filters)
    a = alphas.to(x.dtype)
    energy = (rho(r, expert).sum(dim=(2, 3)) * a).sum(dim=1)
    norms = filters.to(x.dtype).pow(2).sum(dim=(1, 2, 3))
    lap = (rho_second(r, expert).sum(dim=(2, 3)) * (a * norms)).sum(dim=1)
    return energy, lap
