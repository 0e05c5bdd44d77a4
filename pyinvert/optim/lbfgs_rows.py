"""The scalar half of :class:`pyinvert.optim.lbfgs_state.LBFGS` on the CPU: its per-row
strong-Wolfe line search, stopping tests and step choices done row by row on NumPy scalars of
the run's dtype, instead of some 300 small tensor operations per ``tell`` (at 96 px, most of
the engine's time between two evaluations). The vector work (dot products, the two-loop
recursion, the trial points and histories) is done in place on buffers by three fused
compiled ops (:mod:`pyinvert.optim.lbfgs_vectors`).

Bit for bit the tensor path's decisions and values: every scalar operation is the tensor
path's, in its order and dtype (NumPy float32 scalars round each operation to float32, as
torch's float32 kernels; constants are cast to the dtype first, as torch casts a Python
scalar); ``torch.minimum``/``maximum``/``clamp`` are mirrored with their NaN propagation.
tests/test_lbfgs_rows.py checks that both paths give identical trajectories. Devices other than
the CPU keep the tensor path (a transfer per ``tell`` would cost more than it saves).
"""

import numpy as np
import torch
from torch import Tensor

from pyinvert.optim.lbfgs_vectors import (
    MODE_DIRECTION,
    MODE_SKIP,
    MODE_STAY,
    MODE_STEP,
    RowVectors,
    copy_rows,
)
from pyinvert.optim.rowwise import rowsum as _rowsum

RUNNING, GRADIENT, STEP, VALUE, DIRECTION, MAX_ITER, MAX_EVAL, LINE_SEARCH, NONFINITE = range(9)


def _min(a, b):
    """torch.minimum of two scalars (NaN propagates; a tie gives a, as its scalar kernel)."""
    if a != a:
        return a
    if b != b:
        return b
    return b if b < a else a


def _max(a, b):
    """torch.maximum of two scalars (NaN propagates; a tie gives a)."""
    if a != a:
        return a
    if b != b:
        return b
    return b if a < b else a


def _finite(v) -> bool:
    return bool(v - v == 0)


class RowState:
    """The [B] state of an :class:`LBFGS` as NumPy arrays (its tensors are copies of these,
    refreshed after each ``tell``), and the scalar constants cast to the run's dtype."""

    def __init__(self, opt):
        self.F = F = np.float64 if opt._x.dtype == torch.float64 else np.float32
        n = lambda v: v.numpy().copy()  # noqa: E731
        self.status, self.iterations, self.evaluations = (
            n(opt.status),
            n(opt.iterations),
            n(opt.evaluations),
        )
        self.f, self.t, self.f0, self.gtd0 = n(opt.f), n(opt.t), n(opt.f0), n(opt.gtd0)
        self.d_norm, self.prev, self.lo, self.hi = n(opt.d_norm), n(opt.prev), n(opt.lo), n(opt.hi)
        self.zoom, self.insuf, self.n_ls = n(opt.zoom), n(opt.insuf), n(opt.n_ls)
        self.updates, self.count, self.H_diag = n(opt.updates), n(opt.count), n(opt.H_diag)
        B = self.f.shape[0]
        # max |g| of the accepted gradient, of lo_g and of g_prev (no second reduction)
        self.g_max, self.lo_gmax, self.prev_gmax = (np.zeros(B, F) for _ in range(3))
        self.c1, self.neg_c2, self.lr = F(opt.c1), F(-opt.c2), F(opt.lr)
        self.tol_grad, self.tol_change = F(opt.tolerance_grad), F(opt.tolerance_change)
        self.one, self.zero, self.tiny = F(1.0), F(0.0), F(1e-10)
        self._buf = torch.empty(1, dtype=opt._x.dtype)
        self._buf_np = self._buf.numpy()

    def sqrt(self, v):
        """torch.sqrt of a scalar, by torch's kernel (its float32 result is not always the
        correctly rounded one NumPy gives)."""
        self._buf_np[0] = v
        torch.sqrt(self._buf, out=self._buf)
        return self._buf_np[0]


def _cubic(st, x1, f1, g1, x2, f2, g2, lo, hi):
    """:func:`pyinvert.optim.rowwise.cubic_minimizer` on scalars, the same operations."""
    F = st.F
    d1 = g1 + g2 - F(3) * (f1 - f2) / (x1 - x2)
    d2sq = d1 * d1 - g1 * g2
    zero = F(0)
    d2 = st.sqrt(zero if zero > d2sq else d2sq)  # clamp(min=0): NaN stays NaN
    if x1 <= x2:
        pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + F(2) * d2))
    else:
        pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + F(2) * d2))
    if d2sq >= 0 and _finite(pos):
        return _min(_max(pos, lo), hi)
    return (lo + hi) / F(2)


def tell(opt, f_t: Tensor, grad: Tensor, scale=None) -> None:
    """``opt.tell`` on the CPU with the state in :class:`RowState` and the vectors in
    :class:`pyinvert.optim.lbfgs_vectors.RowVectors` (module docstring); the gradient is
    ``grad * scale`` (scale [B], or None for 1)."""
    if opt._rows is None:
        opt._rows = RowState(opt)
        opt._vec = RowVectors(opt)
    st, vec = opt._rows, opt._vec
    was_running = st.status == RUNNING
    with np.errstate(all="ignore"):
        begun = _tell(opt, st, vec, f_t, grad, scale)
    opt.status = torch.from_numpy(st.status.copy())
    opt.iterations = torch.from_numpy(st.iterations.copy())
    opt.evaluations = torch.from_numpy(st.evaluations.copy())
    opt.f = torch.from_numpy(st.f.copy())
    opt.t = torch.from_numpy(st.t.copy())
    opt._x, opt.g, opt.d = vec.x, vec.g, vec.d
    # the trial points of the rows not just begun: a line-search step along d, or x itself
    run = st.status == RUNNING
    mode = np.where(run & ~begun, MODE_STEP, np.where(was_running & ~run, MODE_STAY, MODE_SKIP))
    if mode.any():
        vec.advance(mode, st.t, st.H_diag)
    opt._trial = vec.trial


def _tell(opt, st: RowState, vec: RowVectors, f_t: Tensor, grad: Tensor, scale) -> np.ndarray:
    """One evaluation; returns the rows given a new direction and trial (``_begin``)."""
    B = st.f.shape[0]
    wolfe = opt._started and opt.line_search is not None
    gmax, gtd = vec.observe(grad, scale)
    f = f_t.numpy()
    run = st.status == RUNNING
    st.evaluations += run
    ok = run & np.isfinite(f) & np.isfinite(gmax)
    st.status[run & ~ok] = NONFINITE
    if not opt._started:
        opt._started = True
        st.f = np.where(ok, f, st.f)
        if ok.all():
            vec.g, vec.g_new = vec.g_new, vec.g
        else:
            copy_rows(vec.g, vec.g_new, ok)
        st.g_max = np.where(ok, gmax, st.g_max)
        small = ok & (st.g_max <= st.tol_grad)
        st.status[small] = GRADIENT
        return _begin(opt, st, vec, ok & ~small)
    if not wolfe:
        return _finish(opt, st, vec, ok, st.t.copy(), f.copy(), gmax)
    return _wolfe_rows(opt, st, vec, ok, f, gtd, gmax, B)


def _wolfe_rows(opt, st, vec, ok, f, gtd, gmax, B):
    """One evaluation of each running row's line search (the tensor path's ``_wolfe``)."""
    F = st.F
    acc = np.zeros(B, bool)
    take_new = np.zeros(B, bool)
    t_acc, f_acc, gmax_acc = np.zeros(B, F), np.zeros(B, F), np.zeros(B, F)
    to_new, to_prev, ext = (np.zeros(B, bool) for _ in range(3))
    tol = st.tol_change
    for b in np.flatnonzero(ok):
        t, fb, gb = st.t[b], f[b], gtd[b]
        st.n_ls[b] += 1
        out = st.n_ls[b] >= opt.max_ls
        gtd0 = st.gtd0[b]
        armijo_fail = fb > st.f0[b] + st.c1 * t * gtd0
        curv = abs(gb) <= st.neg_c2 * gtd0
        prev, lo, hi = st.prev[b].copy(), st.lo[b].copy(), st.hi[b].copy()
        f_prev, lo_f = prev[1], lo[1]
        A = W = C = E = enter = new_lo = H = swap = L = Z = flip = False
        zm = bool(st.zoom[b])
        if not zm:
            A = bool(armijo_fail or (st.n_ls[b] > 2 and fb >= f_prev))
            W = not A and bool(curv)
            C = not A and not W and bool(gb >= 0)
            E = not (A or W or C)
            enter = A or C
            new_lo = enter and bool(fb < f_prev)
        else:
            H = bool(armijo_fail or fb >= lo_f)
            swap = H and bool(fb < lo_f)
            L = not H
            Z = L and bool(curv)
            flip = L and not curv and bool(gb * (hi[0] - lo[0]) >= 0)
        new = np.array([t, fb, gb], F)
        if (enter and not new_lo) or (H and not swap):
            st.hi[b] = new
        elif swap or flip:
            st.hi[b] = lo
        elif new_lo:
            st.hi[b] = prev
        if new_lo or swap or L:
            st.lo[b] = new
            to_new[b] = True
            st.lo_gmax[b] = gmax[b]
        elif enter:
            st.lo[b] = prev
            to_prev[b] = True
            st.lo_gmax[b] = st.prev_gmax[b]
        st.zoom[b] = zm or enter
        lo_t, hi_t = st.lo[b, 0], st.hi[b, 0]
        tn = W or Z or (E and out)
        zooming = enter or (zm and not Z)
        tl = zooming and bool(out or abs(hi_t - lo_t) * st.d_norm[b] < tol)
        zooming = zooming and not tl
        if E and not out:
            t_prev = prev[0]
            st.t[b] = _cubic(
                st, t_prev, f_prev, prev[2], t, fb, gb, t + F(0.01) * (t - t_prev), t * F(10)
            )
            st.prev[b] = new
            ext[b] = True
            st.prev_gmax[b] = gmax[b]
        if zooming:
            lo_b, hi_b = _min(lo_t, hi_t), _max(lo_t, hi_t)
            t_z = _cubic(st, *st.lo[b], *st.hi[b], lo_b, hi_b)
            eps = F(0.1) * (hi_b - lo_b)
            near = bool(_min(hi_b - t_z, t_z - lo_b) < eps)
            move = near and bool(st.insuf[b] or t_z >= hi_b or t_z <= lo_b)
            if move:
                t_z = hi_b - eps if abs(t_z - hi_b) < abs(t_z - lo_b) else lo_b + eps
            st.insuf[b] = near and not move
            st.t[b] = t_z
        acc[b], take_new[b] = tn or tl, tn
        t_acc[b] = t if tn else lo_t
        f_acc[b] = fb if tn else st.lo[b, 1]
        gmax_acc[b] = gmax[b] if tn else st.lo_gmax[b]
    # the line search's gradients (the tensor path's lo_g, g_prev and accepted g), row by row
    for b in np.flatnonzero(to_prev):
        vec.lo_g[b].copy_(vec.prev_gradient(b))
    copy_rows(vec.lo_g, vec.g_new, to_new)
    copy_rows(vec.g_prev, vec.g_new, ext)
    vec.prev_is_g[ext] = False
    copy_rows(vec.g_new, vec.lo_g, acc & ~take_new)  # a row taking its bracket's low end
    return _finish(opt, st, vec, acc, t_acc, f_acc, gmax_acc)


def _finish(opt, st, vec, acc, t, f, gmax) -> np.ndarray:
    """The end of an iteration for the accepted rows ``acc`` (the tensor path's ``_finish``):
    t, f, gmax [B] NumPy, their gradients in ``vec.g_new``; returns the rows begun."""
    stuck = acc & (t == 0)
    st.status[stuck] = LINE_SEARCH
    acc = acc & ~stuck
    if not acc.any():
        return acc
    ys, yy = vec.accept(acc, t)
    cont = np.zeros_like(acc)
    for b in np.flatnonzero(acc):
        f_old = st.f[b]
        st.f[b], st.g_max[b] = f[b], gmax[b]
        st.iterations[b] += 1
        if gmax[b] <= st.tol_grad:
            st.status[b] = GRADIENT
        elif abs(t[b]) * st.d_norm[b] <= st.tol_change:  # max |t d| = |t| max |d|
            st.status[b] = STEP
        elif abs(f[b] - f_old) < st.tol_change:
            st.status[b] = VALUE
        elif st.iterations[b] >= opt.max_iter:
            st.status[b] = MAX_ITER
        elif st.evaluations[b] >= opt.max_eval:
            st.status[b] = MAX_EVAL
        else:
            cont[b] = True
    upd = cont & (ys > st.tiny)
    if upd.any():
        m = opt.history_size
        vec.commit(upd, st.one / ys, st.count, m)  # torch's 1 / ys: reciprocal (times 1)
        st.updates = st.updates + upd
        st.count = np.minimum(st.count + upd, m)
        st.H_diag = np.where(upd, ys / yy, st.H_diag)
        opt.updates = torch.from_numpy(st.updates)
        opt.count = torch.from_numpy(st.count)
        opt.H_diag = torch.from_numpy(st.H_diag)
    return _begin(opt, st, vec, cont)


def _begin(opt, st, vec, rows) -> np.ndarray:
    """New directions and line-search starts for ``rows`` (the tensor path's ``_begin``), with
    their trials; returns the rows begun (started or stopped for their direction)."""
    if not rows.any():
        return rows
    first = rows & (st.iterations == 0)
    t = st.t.copy()
    t[rows] = st.lr
    if first.any():  # d = -g (no pairs yet; h = 1) and t = clamp(1 / |g|_1, max=1) lr
        l1 = _rowsum(vec.g.abs()).numpy()
        for b in np.flatnonzero(first):
            t[b] = _clamp_max(st.one / l1[b], st.one) * st.lr
    mode = np.where(rows, MODE_DIRECTION, MODE_SKIP)
    gtd, dn = vec.advance(mode, t, st.H_diag, vec.slots(rows & ~first, st.count))
    for b in np.flatnonzero(rows):
        if gtd[b] > -st.tol_change:
            st.status[b] = DIRECTION
            continue
        st.t[b] = t[b]
        st.f0[b], st.gtd0[b] = st.f[b], gtd[b]
        st.prev[b] = (st.zero, st.f[b], gtd[b])
        st.prev_gmax[b] = st.g_max[b]
        st.d_norm[b] = dn[b]
        st.zoom[b] = st.insuf[b] = False
        st.n_ls[b] = 0
        vec.prev_is_g[b] = True
    return rows


def _clamp_max(a, hi):
    """torch.clamp(a, max=hi) of a scalar (NaN stays NaN)."""
    return hi if hi < a else a
