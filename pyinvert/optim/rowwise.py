"""Per-row arithmetic whose rounding does not depend on the batch: a row of [B, D] gives the
same bits for B = 1 or B = 100, on any thread count or device (what :mod:`pyinvert.optim.lbfgs`
needs to make a row's result independent of its batch mates)."""

import torch
from torch import Tensor


def rowsum(v: Tensor) -> Tensor:
    """Sum over dim 1 of [B, D] as a pairwise tree of elementwise adds, whose shape depends on
    D only: the same rounding for every row whatever B, the thread count or the device. (An
    odd level folds its last column into the one before.)"""
    n = v.shape[1]
    if n == 0:
        return v.new_zeros(v.shape[0])
    while n > 1:
        h = n // 2
        w = v[:, :h] + v[:, h : 2 * h]
        if n % 2:
            w[:, h - 1] = w[:, h - 1] + v[:, 2 * h]
        v, n = w, h
    return v[:, 0]


def dot(a: Tensor, b: Tensor) -> Tensor:
    return rowsum(a * b)


def amax(v: Tensor) -> Tensor:
    return v.abs().amax(1) if v.shape[1] else v.new_zeros(v.shape[0])


def where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """torch.where with a per-row mask [B] against [B] or [B, D] values."""
    if a.dim() == 2 or (isinstance(b, Tensor) and b.dim() == 2):
        mask = mask[:, None]
    return torch.where(mask, a, b)


def cubic_minimizer(x1, f1, g1, x2, f2, g2, lo, hi):
    """Minimizer of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to [lo, hi]; the
    midpoint of [lo, hi] where it has none (N&W eq. 3.59)."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2sq = d1 * d1 - g1 * g2
    d2 = torch.sqrt(torch.clamp(d2sq, min=0))
    up = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    down = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    pos = torch.where(x1 <= x2, up, down)
    ok = (d2sq >= 0) & torch.isfinite(pos)
    return torch.where(ok, torch.minimum(torch.maximum(pos, lo), hi), (lo + hi) / 2)
