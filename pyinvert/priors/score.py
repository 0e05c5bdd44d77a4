r"""Score matching (Hyvarinen 2005): fitting an unnormalized density without its normalizer.

For a model density :math:`p(x) \propto e^{-E(x)}` with score :math:`s(x) = -\nabla_x E(x)`,
Hyvarinen's objective (JMLR 2005, eq. 8 with Theorem 1) is

.. math::
    J = \mathbb{E}_x\Big[\sum_j \partial_j s_j(x) + \tfrac12 s_j(x)^2\Big]
      = \mathbb{E}_x\Big[-\Delta E(x) + \tfrac12 \|\nabla_x E(x)\|^2\Big],

equal, up to a constant, to the expected squared distance between the model's score and the
data's. For the convolutional models the Laplacian is closed-form
(:func:`pyinvert.priors.experts.energy_and_laplacian`: rho'' of the responses times the
squared filter norms); only the gradient takes a backward pass (kept in the graph, so that J
is differentiable with respect to the model's parameters: the double backward of conv2d).
"""

import torch
from torch import Tensor

from pyinvert.priors import experts as _experts


def score_matching_loss(model, data: Tensor, reduction: str = "mean") -> Tensor:
    r"""Hyvarinen's exact score matching objective J of ``model`` on ``data``.

    Args:
        model: a :class:`pyinvert.priors.models.LearnedModel` (ICA, FoE, SeparableFoE).
        data: samples: patches [N, C k^2] or images / crops [B, C, H, W] (each crop's J sums
            over all its pixels, the energy over all its patches).
        reduction: "mean" (over samples) or "none" (J of each sample). Default: "mean".

    Returns:
        J (a scalar, or [N] with ``reduction="none"``), differentiable with respect to the
        model's parameters.

    Shape:
        - data: (N, C k^2) or (B, C, H, W)
        - output: () or (N,)

    Example:
        >>> from pyinvert.priors import FoE
        >>> model = FoE(filter_size=3, n_experts=4, generator=torch.Generator().manual_seed(0))
        >>> score_matching_loss(model, torch.rand(8, 1, 7, 7)).shape
        torch.Size([])

    References:
        A. Hyvarinen. Estimation of Non-Normalized Statistical Models by Score Matching.
        JMLR 6, 2005, eq. (8) (Theorem 1).
    """
    fn = "score_matching_loss"
    if reduction not in ("mean", "none"):
        raise ValueError(f"{fn}: expected reduction in ('mean', 'none'), got {reduction!r}")
    x = model.as_images(data, fn)
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected data of a floating dtype, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: expected at least one sample, got shape {list(data.shape)}")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        energy, lap = _experts.energy_and_laplacian(
            x, model.filter_bank().to(x.dtype), model.alphas, model.expert
        )
        (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
    j = -lap + 0.5 * grad.pow(2).flatten(1).sum(dim=1)
    return j.mean() if reduction == "mean" else j
