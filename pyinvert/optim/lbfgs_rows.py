"""The row path of :class:`pyinvert.optim.lbfgs_state.LBFGS` (the CPU's default; CUDA's with
``_path="rows"``): each ``tell`` is one call of the compiled op
``torch.ops.pyinvert.lbfgs_tell`` (csrc/common/lbfgs_tell_math.h), which takes the
evaluation for every row (the line search, the accepted step and its history pair, the stopping
tests, the next direction and trial point) in place on the buffers below. The tensor path does
the same with some 300 small tensor operations per ``tell``; a NumPy version of the scalar logic
with three fused vector ops took 0.8 ms per ``tell`` at 96 px (half of it Python), the compiled
call 0.3 ms: after the network's backward every code path runs cold (bench/bench_texture.py).

Bit for bit the tensor path's decisions and values (tests/test_lbfgs_rows.py checks every ask
and the per-row state after every tell, on the CPU and, where there is one, on a GPU).

The buffers are allocated once, at the first ``tell``, and written in place: tensors allocated
between two evaluations and kept across the next one fragment the heap, so that glibc trims it
and the network's next activations fault their pages in again (see :mod:`pyinvert.optim.heap`).
The history is a ring per row over P = min(m, max_iter) + 1 physical slots: a new pair is
written into the row's spare slot and, when it is kept (y.s > 1e-10), becomes the newest (the
oldest one, if the ring is full, becomes the spare), so no pair is ever copied. ``G`` holds two
gradients per row, the accepted one and the one just observed; accepting a step flips which is
which.
"""

import torch
from torch import Tensor

from pyinvert.optim import lbfgs_ops  # noqa: F401  (the fake kernels)

# The packed state's columns (csrc/common/lbfgs_tell_math.h: TellReal, TellInt; the order
# there is the order here).
F, T, F0, GTD0, D_NORM = range(5)
PREV, LO, HI = 5, 8, 11  # (t, f, g.d) each
H_DIAG, G_MAX, LO_GMAX, PREV_GMAX, REALS = range(14, 19)
STATUS, ITERATIONS, EVALUATIONS, ZOOM, INSUF, LINE_STEPS = range(6)
UPDATES, COUNT, SPARE, USED, PREV_IS_G, G_SEL, INTS = range(6, 13)

_tell = torch.ops.pyinvert.lbfgs_tell.default


class RowState:
    """The state of a row-path run (module docstring), made at its first ``tell`` from the
    LBFGS's initial state. The LBFGS's per-row counters and values (status, iterations,
    evaluations, f, t, updates, count, H_diag) become views of it, kept current by the op."""

    def __init__(self, opt):
        x = opt._x
        B, D = x.shape
        self.x, self.d, self.lo_g, self.g_prev = x, opt.d, opt.lo_g, opt.g_prev
        self.G = x.new_zeros(2, B, D)  # [G_SEL]: the accepted gradient; the other: the new one
        self.trial = x.clone()
        self.empty = x.new_empty(0)
        scale = getattr(opt, "_ask_scale", None)
        self.ask_scale = self.empty if scale is None else scale
        self.z = self.empty if scale is None else torch.empty_like(x)
        P = min(opt.history_size, opt.max_iter) + 1
        # allocated, not touched: a slot's pages are mapped when its first pair is written
        self.S, self.Y = (x.new_empty(P, B, D) for _ in range(2))
        self.rho = x.new_zeros(P, B)
        self.ring = torch.full((B, opt.history_size), -1, dtype=torch.int64, device=x.device)
        self.real = x.new_zeros(B, REALS)
        self.real[:, F] = float("nan")
        self.real[:, H_DIAG] = 1.0
        self.ints = torch.zeros(B, INTS, dtype=torch.int64, device=x.device)
        self.ints[:, USED] = 1  # slot 0 is the first spare
        self.settings = (
            opt.c1,
            opt.c2,
            opt.lr,
            opt.tolerance_grad,
            opt.tolerance_change,
            opt.max_ls,
            opt.max_iter,
            opt.max_eval,
            opt.line_search is not None,
        )
        for name, col in (
            ("status", STATUS),
            ("iterations", ITERATIONS),
            ("evaluations", EVALUATIONS),
        ):
            setattr(opt, name, self.ints[:, col])
        opt.updates, opt.count = self.ints[:, UPDATES], self.ints[:, COUNT]
        opt.f, opt.t, opt.H_diag = self.real[:, F], self.real[:, T], self.real[:, H_DIAG]
        # the tensor path's other state is not kept on this path
        for name in ("g", "prev", "lo", "hi", "zoom", "insuf", "n_ls", "f0", "gtd0", "d_norm"):
            setattr(opt, name, None)


def tell(opt, f: Tensor, grad: Tensor, scale) -> None:
    """``opt.tell`` on the row path: f [B] and grad [B, D] of the run's dtype and device; the
    gradient is ``grad * scale`` (scale [B], or None for 1)."""
    if opt._rows is None:
        opt._rows = RowState(opt)
    st = opt._rows
    _tell(
        grad,
        st.empty if scale is None else scale,
        f,
        st.ask_scale,
        st.real,
        st.ints,
        st.ring,
        st.x,
        st.G,
        st.d,
        st.lo_g,
        st.g_prev,
        st.trial,
        st.z,
        st.S,
        st.Y,
        st.rho,
        *st.settings,
        opt._started,
    )
    opt._started = True
    opt._trial = st.trial
