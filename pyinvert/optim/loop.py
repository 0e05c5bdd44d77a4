"""The batched optimization loop and the two update rules of the papers.

Every row of the optimized tensor is an independent problem: the rules are elementwise, the
learning-rate multiplier is per row, and a row whose loss (or gradient) becomes NaN/Inf is
frozen and reported while the others go on.
"""
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from pyinvert.optim.recipes import Recipe
from pyinvert.optim.jitter import Jitter, center_crop


def _rows(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class MomentumRule:
    """CVPR 2015: ``v = m v - lr g; x += v``."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.v = None

    def reset(self):
        self.v = None

    def step(self, x: Tensor, g: Tensor, lr: Tensor):
        if self.v is None:
            self.v = torch.zeros_like(x)
        self.v.mul_(self.momentum).addcmul_(g, _rows(-lr, g))
        x.add_(self.v)


class AdagradMomentumRule:
    """IJCV 2016: ``G = m G + g^2; v = m v - g / (1/lr + sqrt(G)); x += v``."""

    def __init__(self, momentum: float):
        self.momentum = momentum
        self.v = None
        self.G = None

    def reset(self):
        # nnpreimage zeroes the momentum on a learning-rate change; its AdaGrad accumulator
        # keeps going (the reset there targets a misspelled variable), and so does ours.
        self.v = None

    def step(self, x: Tensor, g: Tensor, lr: Tensor):
        if self.v is None:
            self.v = torch.zeros_like(x)
        if self.G is None:
            self.G = torch.zeros_like(x)
        self.G.mul_(self.momentum).addcmul_(g, g)
        denom = self.G.sqrt().add_(_rows(1.0 / lr, g))
        # v - g / denom in one pass (-1 * q is exact: the same values as a division and a
        # subtraction).
        self.v.mul_(self.momentum).addcdiv_(g, denom, value=-1.0)
        x.add_(self.v)


class NormalizedRule:
    """DeepDream's step: ``x -= lr g / mean|g|`` per row (a fixed step length per image)."""

    def reset(self):
        pass

    def step(self, x: Tensor, g: Tensor, lr: Tensor):
        scale = g.abs().flatten(1).mean(1).clamp_min(1e-20)
        x.sub_(g * _rows(lr / scale, g))


def make_rule(recipe: Recipe):
    if recipe.optimizer == "momentum":
        return MomentumRule(recipe.momentum)
    if recipe.optimizer == "normalized":
        return NormalizedRule()
    return AdagradMomentumRule(recipe.momentum)


def project_ball(x: Tensor, bound: float) -> None:
    """In place: scale each pixel's channel vector into the ball |x(v)| <= bound (IJCV 2016)."""
    n = x.square().sum(1, keepdim=True).sqrt_()
    x.mul_(torch.clamp(bound / n.clamp_min(1e-30), max=1.0))


def optimize(x: Tensor, objective, recipe: Recipe, *, image_size, lr_scale: Tensor,
             generators: Sequence[torch.Generator], progress=None,
             callback: Optional[Callable] = None):
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
            crop = jitter(x, generators) if stage.jitter else center_crop(x, image_size)
            loss, error = objective(crop, x)
            grad, = torch.autograd.grad(loss.sum(), x)
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
                    if recipe.bound is not None:
                        project_ball(x, recipe.bound)
                    x.copy_(torch.where(keep, x, before))
                else:
                    rule.step(x, grad, lr)
                    if recipe.bound is not None:
                        project_ball(x, recipe.bound)
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
