"""Transforms applied to the optimized tensor before the representation sees it (jitter).

Randomness comes only from ``torch.Generator`` objects the caller seeds (one per row, so a row's
result does not depend on the other rows of its batch).
"""

from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def center_crop(x: Tensor, size) -> Tensor:
    """The centred H x W window of x (the offset is floor((extra)/2), as nnpreimage); x itself
    when it is H x W already (no slice: its backward would fill a zero tensor of x's shape
    and copy the gradient into it on every step)."""
    H, W = size
    if x.shape[-2] == H and x.shape[-1] == W:
        return x
    oy = (x.shape[-2] - H) // 2
    ox = (x.shape[-1] - W) // 2
    return x[..., oy : oy + H, ox : ox + W]


def jitter_offsets(generators: Sequence[torch.Generator], amount: int) -> Tensor:
    """[N, 2] random (dy, dx) offsets in [0, amount), one draw per row's generator."""
    if amount <= 1:
        return torch.zeros(len(generators), 2, dtype=torch.long)
    return (
        torch.stack([torch.randint(amount, (2,), generator=g) for g in generators])
        if len(generators)
        else torch.zeros(0, 2, dtype=torch.long)
    )


class _CropRows(torch.autograd.Function):
    """Row n of x cropped at (dy_n, dx_n) to H x W, with a backward that writes each row's
    gradient into one zero tensor of x's shape (one pass over x), instead of autograd's
    per-row slice backward (a zero tensor of x's full shape per row, then N additions: N
    passes over x, quadratic in the batch)."""

    @staticmethod
    def forward(ctx, x, offsets, H, W):
        ctx.offsets, ctx.shape = offsets, x.shape
        out = x.new_empty((x.shape[0], *x.shape[1:-2], H, W))
        for n, (dy, dx) in enumerate(offsets):
            out[n].copy_(x[n, ..., dy : dy + H, dx : dx + W])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        H, W = grad.shape[-2:]
        gx = grad.new_zeros(ctx.shape)
        for n, (dy, dx) in enumerate(ctx.offsets):
            gx[n, ..., dy : dy + H, dx : dx + W].copy_(grad[n])
        return gx, None, None, None


def jitter_crop(x: Tensor, size, offsets: Tensor) -> Tensor:
    """Crop row n of x at offsets[n] = (dy, dx) to H x W (differentiable).

    Shape: x (N, C, H + J - 1, W + J - 1), offsets (N, 2) -> (N, C, H, W).
    """
    H, W = size
    if x.shape[0] == 0:
        return x[..., :H, :W]
    offs = [(int(dy), int(dx)) for dy, dx in offsets.tolist()]
    if len(offs) != x.shape[0]:
        raise ValueError(
            f"jitter_crop: expected offsets of shape ({x.shape[0]}, 2), got {list(offsets.shape)}"
        )
    for dy, dx in offs:
        if not (0 <= dy <= x.shape[-2] - H and 0 <= dx <= x.shape[-1] - W):
            raise ValueError(
                f"jitter_crop: expected offsets in [0, {x.shape[-2] - H}] x "
                f"[0, {x.shape[-1] - W}], got ({dy}, {dx})"
            )
    return _CropRows.apply(x, offs, int(H), int(W))


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
