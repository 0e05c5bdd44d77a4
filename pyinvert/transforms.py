"""Transforms applied to the optimized tensor before the representation sees it (jitter).

Randomness comes only from ``torch.Generator`` objects the caller seeds (one per row, so a row's
result does not depend on the other rows of its batch).
"""
from typing import Sequence

import torch
from torch import Tensor


def center_crop(x: Tensor, size) -> Tensor:
    """The centred H x W window of x (the offset is floor((extra)/2), as nnpreimage)."""
    H, W = size
    oy = (x.shape[-2] - H) // 2
    ox = (x.shape[-1] - W) // 2
    return x[..., oy:oy + H, ox:ox + W]


def jitter_offsets(generators: Sequence[torch.Generator], amount: int) -> Tensor:
    """[N, 2] random (dy, dx) offsets in [0, amount), one draw per row's generator."""
    if amount <= 1:
        return torch.zeros(len(generators), 2, dtype=torch.long)
    return torch.stack([torch.randint(amount, (2,), generator=g) for g in generators]) \
        if len(generators) else torch.zeros(0, 2, dtype=torch.long)


def jitter_crop(x: Tensor, size, offsets: Tensor) -> Tensor:
    """Crop row n of x at offsets[n] = (dy, dx) to H x W (differentiable: a gather of slices).

    Shape: x (N, C, H + J - 1, W + J - 1), offsets (N, 2) -> (N, C, H, W).
    """
    H, W = size
    if x.shape[0] == 0:
        return x[..., :H, :W]
    rows = [x[n:n + 1, :, int(dy):int(dy) + H, int(dx):int(dx) + W]
            for n, (dy, dx) in enumerate(offsets.tolist())]
    return torch.cat(rows, 0)


class Jitter:
    """Random translation by up to ``amount - 1`` pixels (the IJCV 2016 jitter), as a crop of
    the larger optimized tensor.

    Args:
        amount: jitter amount J (1 = none).
        size: output (H, W).
    """

    def __init__(self, amount: int, size):
        self.amount = int(amount)
        self.size = tuple(size)

    def __call__(self, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        if self.amount <= 1:
            return center_crop(x, self.size)
        return jitter_crop(x, self.size, jitter_offsets(generators, self.amount))
