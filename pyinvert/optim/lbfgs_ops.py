"""The fake (meta) kernels of the per-row L-BFGS's compiled ops (csrc/pyinvert.cpp has their
schemas; csrc/common/rowwise_math.h and csrc/cpu/lbfgs_tell.cpp their math).

* ``lbfgs_tell`` (CPU and CUDA): one evaluation taken by every row, in place on the row path's
  packed state and buffers (:mod:`pyinvert.optim.lbfgs_rows`).
* Its vector passes, also ops of their own (CPU and CUDA) so that each is tested bit for bit
  against the tensor operations it fuses (tests/test_lbfgs_ops.py; nothing else calls them):

  * ``lbfgs_observe``: the incoming gradient times the row's scale into ``g``, with max |g| and
    g.d (one pass);
  * ``lbfgs_accept``: an accepted step: x += t d, s = t d and y = g - g_old into the row's spare
    history slot, with y.s and y.y (one pass);
  * ``lbfgs_advance``: per row, the two-loop direction (N&W Alg. 7.4) into ``d`` with g.d and
    max |d|, and the next trial x + t d (or x) with its scaled copy ``z``.

Each rounds every operation as the tensor path's elementwise ops and ``rowwise_dot`` do, in
their order.
"""

import torch

from pyinvert import _ext  # noqa: F401  (registers torch.ops.pyinvert)

#: lbfgs_advance's row modes (AdvanceMode in csrc/common/rowwise_math.h)
MODE_SKIP, MODE_DIRECTION, MODE_STEP, MODE_STAY = range(4)


@torch.library.register_fake("pyinvert::lbfgs_observe")
def _(grad, scale, d, g):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


@torch.library.register_fake("pyinvert::lbfgs_accept")
def _(g, g_old, d, t, rows, spare, x, S, Y):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


@torch.library.register_fake("pyinvert::lbfgs_advance")
def _(g, S, Y, rho, h, slots, modes, t, x, scale, d, trial, z):
    return g.new_empty(g.shape[:1]), g.new_empty(g.shape[:1])


@torch.library.register_fake("pyinvert::lbfgs_tell")
def _(
    grad,
    grad_scale,
    f,
    ask_scale,
    real,
    ints,
    ring,
    x,
    G,
    d,
    lo_g,
    g_prev,
    trial,
    z,
    S,
    Y,
    rho,
    c1,
    c2,
    lr,
    tolerance_grad,
    tolerance_change,
    max_ls,
    max_iter,
    max_eval,
    line_search,
    started,
):
    return None
