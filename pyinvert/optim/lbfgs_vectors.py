"""The vectors of the CPU row path of the per-row L-BFGS (:mod:`pyinvert.optim.lbfgs_rows`):
buffers allocated once per run and written in place by three fused compiled ops, instead of
some twenty elementwise ops and reductions per ``tell`` that each allocate a new [B, D]
tensor. Two things made that matter (bench/bench_texture.py): every pass over a row costs
memory traffic next to the network's, and tensors allocated between two evaluations and kept
across the next one fragment the heap, so that glibc trims it and the network's next
activations fault their pages in again (about 200 page faults per evaluation at 96 px,
2,700 at 224 px, none in a bare loop of evaluations).

The ops (csrc/common/rowwise_math.h; CPU and CUDA) round every operation as the tensor path's
elementwise ops and ``rowwise_dot`` do, in their order, so the row path keeps the tensor path's
bits (tests/test_lbfgs_rows.py):

* ``lbfgs_observe``: the incoming gradient times the row's scale into ``g_new``, with max |g|
  and g.d (one pass);
* ``lbfgs_accept``: an accepted step: x += t d, s = t d and y = g - g_old into the row's spare
  history slot, with y.s and y.y (one pass);
* ``lbfgs_advance``: per row, the two-loop direction (N&W Alg. 7.4) into ``d`` with g.d and
  max |d|, and the next trial x + t d (or x) with its scaled copy ``z`` (what the engine
  evaluates).

The history is a ring per row over P = min(m, max_iter) + 1 physical slots: a new pair is
written into the row's spare slot and, when it is kept (y.s > 1e-10), becomes the newest
(the oldest one, if the ring is full, becomes the spare), so no pair is ever copied.
"""

import numpy as np
import torch
from torch import Tensor

from pyinvert import _ext  # noqa: F401  (registers torch.ops.pyinvert)

#: lbfgs_advance's row modes (AdvanceMode in csrc/common/rowwise_math.h)
MODE_SKIP, MODE_DIRECTION, MODE_STEP, MODE_STAY = range(4)

_ops = torch.ops.pyinvert


@torch.library.register_fake("pyinvert::lbfgs_observe")
def _(grad, scale, d, g):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


@torch.library.register_fake("pyinvert::lbfgs_accept")
def _(g, g_old, d, t, rows, spare, x, S, Y):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


@torch.library.register_fake("pyinvert::lbfgs_advance")
def _(g, S, Y, rho, h, slots, modes, t, x, scale, d, trial, z):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


class RowVectors:
    """The [B, D] state of a row-path run (module docstring). ``g`` is the accepted gradient,
    ``g_new`` the one just observed (the two swap when every row accepts it); ``lo_g`` and
    ``g_prev`` hold the line search's gradients where they are not ``g`` (``prev_is_g``)."""

    def __init__(self, opt):
        x = opt._x
        B, D = x.shape
        self.x = x
        self.g, self.g_new = opt.g, torch.empty_like(x)
        self.d, self.lo_g, self.g_prev = opt.d, opt.lo_g, opt.g_prev
        self.prev_is_g = np.zeros(B, bool)
        self.trial = x.clone()
        scale = getattr(opt, "_ask_scale", None)
        self.ones = torch.ones(B, dtype=x.dtype)
        if scale is None:
            self.scale, self.z = x.new_empty(0), x.new_empty(0)
        else:
            self.scale, self.z = scale, torch.empty_like(x)
        self.P = min(opt.history_size, opt.max_iter) + 1
        # allocated, not touched: a slot's pages are mapped when its first pair is written
        self.S, self.Y = (x.new_empty(self.P, B, D) for _ in range(2))
        self.rho = x.new_zeros(self.P, B)
        self.rho_np = self.rho.numpy()
        self.ring = np.full((B, opt.history_size), -1, np.int64)  # physical slots, newest first
        self.spare = np.zeros(B, np.int64)
        self.used = np.ones(B, np.int64)  # physical slots a row has written so far (+ spare)

    def observe(self, grad: Tensor, scale) -> tuple:
        """g_new = grad * scale; (max |g_new|, g_new . d) as NumPy [B]."""
        c = self.ones if scale is None else scale
        gmax, gtd = _ops.lbfgs_observe.default(grad, c, self.d, self.g_new)
        return gmax.numpy(), gtd.numpy()

    def accept(self, acc: np.ndarray, t: np.ndarray) -> tuple:
        """The accepted step of the rows ``acc`` (their gradient in ``g_new``): x += t d, the
        pair into each row's spare slot, g = g_new; (y.s, y.y) as NumPy [B]."""
        ys, yy = _ops.lbfgs_accept.default(
            self.g_new,
            self.g,
            self.d,
            torch.from_numpy(t),
            torch.from_numpy(acc),
            torch.from_numpy(self.spare),
            self.x,
            self.S,
            self.Y,
        )
        if acc.all():
            self.g, self.g_new = self.g_new, self.g
        else:
            copy_rows(self.g, self.g_new, acc)
        return ys.numpy(), yy.numpy()

    def commit(self, upd: np.ndarray, inv_ys: np.ndarray, count: np.ndarray, m: int) -> None:
        """Keep the spare pairs of the rows ``upd`` as their newest (``count`` before the
        update; ``inv_ys`` = 1 / y.s)."""
        for b in np.flatnonzero(upd):
            slot = self.spare[b]
            self.rho_np[slot, b] = inv_ys[b]
            oldest = self.ring[b, m - 1]
            self.ring[b, 1:] = self.ring[b, :-1]
            self.ring[b, 0] = slot
            if count[b] == m:  # the ring was full: its oldest slot is free again
                self.spare[b] = oldest
            else:
                self.spare[b] = self.used[b]
                self.used[b] += 1

    def slots(self, rows: np.ndarray, count: np.ndarray) -> Tensor:
        """[B, K] the history slots of ``rows``, newest first, -1 after the last."""
        K = int(count[rows].max()) if rows.any() else 0
        if rows.all() and (count == K).all():  # rows in step (one row): the rings as they are
            return torch.from_numpy(np.ascontiguousarray(self.ring[:, :K]))
        j = np.arange(K)
        valid = rows[:, None] & (count[:, None] > j)
        return torch.from_numpy(np.where(valid, self.ring[:, :K], -1))

    def advance(self, mode: np.ndarray, t: np.ndarray, h: np.ndarray, slots=None) -> tuple:
        """lbfgs_advance with per-row ``mode``; (g.d, max |d|) as NumPy [B] (direction rows)."""
        if slots is None:
            slots = torch.full((mode.shape[0], 0), -1, dtype=torch.int64)
        gtd, dmax = _ops.lbfgs_advance.default(
            self.g,
            self.S,
            self.Y,
            self.rho,
            torch.from_numpy(h),
            slots,
            torch.from_numpy(mode),
            torch.from_numpy(t),
            self.x,
            self.scale,
            self.d,
            self.trial,
            self.z,
        )
        return gtd.numpy(), dmax.numpy()

    def prev_gradient(self, b: int) -> Tensor:
        """Row b of the line search's previous gradient."""
        return self.g[b] if self.prev_is_g[b] else self.g_prev[b]


def copy_rows(dst: Tensor, src: Tensor, rows: np.ndarray) -> None:
    """dst[b] = src[b] for the rows b of the mask ``rows``."""
    for b in np.flatnonzero(rows):
        dst[b].copy_(src[b])
