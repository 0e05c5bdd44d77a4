"""The batched optimization loop (the update rules are in :mod:`pyinvert.optim.rules`).

Every row of the optimized tensor is an independent problem: the rules are elementwise, the
learning-rate multiplier is per row, and a row whose loss (or gradient) becomes NaN/Inf is
frozen and reported while the others go on.
"""

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from pyinvert.optim.jitter import Jitter, center_crop
from pyinvert.optim.recipes import Recipe
from pyinvert.optim.rules import (
    AdagradMomentumRule,  # noqa: F401 (re-exported)
    MomentumRule,  # noqa: F401 (re-exported)
    NormalizedRule,  # noqa: F401 (re-exported)
    _rows,
    make_rule,
    project_ball,
)


def optimize(
    x: Tensor,
    objective,
    recipe: Recipe,
    *,
    image_size,
    lr_scale: Tensor,
    generators: Sequence[torch.Generator],
    progress=None,
    callback: Optional[Callable] = None,
    to_image: Optional[Callable] = None,
):
    """Run the recipe's schedule on x in place.

    Args:
        x: [N, C, H + J - 1, W + J - 1] the optimized tensor (modified in place).
        objective: callable (crop, full) -> (loss [N], feature error [N]).
        recipe: the schedule, update rule, bound and jitter.
        image_size: (H, W) seen by the representation.
        lr_scale: [N] per-row learning-rate multipliers.
        generators: one torch.Generator per row (jitter draws).
        progress: an object with ``update(n)`` (e.g. tqdm), or None.
        callback: called as ``callback(iteration, x, loss, error, active)`` after each step;
            returning True stops the run.
        to_image: None when x is the image canvas itself (pixels: the recipe's bound projects
            x); else the parameterization's map from x to the canvas (no projection).

    Returns:
        (history [N, T] of losses (NaN after a row stopped), errors [N, T], active [N] bool,
        stopped_at [N] long: the iteration whose loss was not finite, -1 for none).
    """
    N = x.shape[0]
    T = recipe.iterations
    # Histories and stops live on x's device and are copied to the CPU once at the end: no
    # per-step device -> host copy (a synchronization on a GPU).
    hdtype = torch.float64 if x.device.type != "mps" else torch.float32
    history = torch.full((N, T), float("nan"), dtype=hdtype, device=x.device)
    errors = torch.full((N, T), float("nan"), dtype=hdtype, device=x.device)
    active = torch.ones(N, dtype=torch.bool, device=x.device)
    stopped_at = torch.full((N,), -1, dtype=torch.long, device=x.device)
    rule = make_rule(recipe)
    bound = recipe.bound if to_image is None else None
    jitter = Jitter(recipe.jitter, image_size)

    def result(t_end=None):
        h, e = (history, errors) if t_end is None else (history[:, :t_end], errors[:, :t_end])
        return h.double().cpu(), e.double().cpu(), active, stopped_at.cpu()

    prev_lr = None
    t = 0
    for stage in recipe.stages:
        if recipe.reset_momentum and prev_lr is not None and stage.lr != prev_lr:
            rule.reset()
        prev_lr = stage.lr
        lr = lr_scale * stage.lr
        for _ in range(stage.iterations):
            x.requires_grad_(True)
            image = x if to_image is None else to_image(x)
            crop = jitter(image, generators) if stage.jitter else center_crop(image, image_size)
            loss, error = objective(crop, image)
            (grad,) = torch.autograd.grad(loss.sum(), x)
            x.requires_grad_(False)
            with torch.no_grad():
                # One reduction pass: a row's gradient sum is finite iff all its entries are
                # (an overflow of the sum itself would also stop the row, which is wanted).
                finite = torch.isfinite(loss) & torch.isfinite(grad.flatten(1).sum(1))
                stopped_at.masked_fill_(active & ~finite, t)
                active &= finite
                n_active = int(active.sum()) if N else 0  # the step's one host sync
                if n_active < N:
                    keep = _rows(active, grad)
                    grad = torch.where(keep, grad, torch.zeros_like(grad))
                    before = x.clone()
                    rule.step(x, grad, torch.where(active, lr, torch.ones_like(lr)))
                    if bound is not None:
                        project_ball(x, bound)
                    x.copy_(torch.where(keep, x, before))
                else:
                    rule.step(x, grad, lr)
                    if bound is not None:
                        project_ball(x, bound)
                # A finite step can still overflow x: such a row stops here (zeroed, reported),
                # so that Phi, which refuses non-finite pixels, never sees it.
                overflow = ~torch.isfinite(x.flatten(1).sum(1))
                if bool(overflow.any()):  # rare: the masking pass only then
                    x.masked_fill_(_rows(overflow, x), 0.0)
                    stopped_at.masked_fill_(active & overflow, t)
                    active &= ~overflow
                history[:, t] = loss.detach()
                errors[:, t] = error.detach()
            t += 1
            if progress is not None:
                progress.update(1)
            if callback is not None and callback(t, x, loss.detach(), error.detach(), active):
                return result(t)
            if n_active == 0:
                return result()
    return result()
