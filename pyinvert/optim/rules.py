"""The update rules of the papers (and DeepDream's), elementwise with a per-row learning rate,
and the IJCV 2016 per-pixel ball projection."""

import torch
from torch import Tensor

from pyinvert.optim.recipes import Recipe


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
