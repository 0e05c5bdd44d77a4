"""The state machine behind :func:`pyinvert.optim.lbfgs.lbfgs` (read that module's docstring
first): per-row histories, two-loop recursions and strong-Wolfe line searches, driven by
``ask`` / ``tell``. The stopping reasons, the per-row outcome, the option checks and the
closure protocol are in :mod:`pyinvert.optim.lbfgs_status`.
"""

import math
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from pyinvert.optim import lbfgs_rows
from pyinvert.optim.lbfgs_status import (  # noqa: F401  (REASONS and the codes re-exported)
    _CONVERGED,
    DIRECTION,
    GRADIENT,
    LINE_SEARCH,
    MAX_EVAL,
    MAX_ITER,
    NONFINITE,
    REASONS,
    RUNNING,
    STEP,
    VALUE,
    LBFGSInfo,
    _check_options,
    evaluate,
)
from pyinvert.optim.rowwise import amax as _amax
from pyinvert.optim.rowwise import rowsum as _rowsum
from pyinvert.optim.rowwise import two_loop_reference as _two_loop_reference
from pyinvert.optim.rowwise import cubic_minimizer as _cubic
from pyinvert.optim.rowwise import dot as _dot
from pyinvert.optim.rowwise import where_rows as _w


class LBFGS:
    """The state of a batched L-BFGS run, driven by ``ask`` / ``tell`` (module docstring).

    Args:
        x0: starting points, one problem per row (floating point, any device).
        max_iter, max_eval, history_size, tolerance_grad, tolerance_change, line_search, lr,
            c1, c2, max_ls: as :func:`lbfgs` (the same defaults).

    Attributes:
        x: the accepted points (like x0); ``done``: every row has stopped; ``info()``: the
            per-row :class:`LBFGSInfo` so far (copies). On the row path (the CPU's default)
            ``x``, ``ask()`` and the per-row tensors (status, iterations, evaluations, f, t)
            are buffers that each ``tell`` updates in place: clone what is to be kept.

    Shape:
        - x0: (B, ...); ``ask()`` returns (B, ...); ``tell`` takes values (B,) and gradients
          (B, ...).
    """

    def __init__(
        self,
        x0: Tensor,
        *,
        max_iter: int = 100,
        max_eval: Optional[int] = None,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        line_search: Optional[str] = "strong_wolfe",
        lr: float = 1.0,
        c1: float = 1e-4,
        c2: float = 0.9,
        max_ls: int = 25,
        _fn: str = "LBFGS",
        _path: str = "auto",
    ):
        self._fn = _fn
        if not isinstance(x0, Tensor):
            raise TypeError(f"{_fn}: expected x0 to be a Tensor, got {type(x0).__name__}")
        if not x0.is_floating_point():
            raise TypeError(f"{_fn}: expected a floating-point x0, got {x0.dtype}")
        if x0.dim() < 1:
            raise ValueError(f"{_fn}: expected x0 of shape (B, ...), got a 0-d tensor")
        ints = dict(max_iter=max_iter, history_size=history_size, max_ls=max_ls)
        if max_eval is not None:
            ints["max_eval"] = max_eval
        _check_options(
            _fn,
            ints,
            dict(
                tolerance_grad=tolerance_grad,
                lr=lr,
                c1=c1,
                c2=c2,
                tolerance_change=tolerance_change,
            ),
            c1,
            c2,
            lr,
            line_search,
        )
        self.max_iter, self.history_size, self.max_ls = max_iter, history_size, max_ls
        self.max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.line_search, self.lr, self.c1, self.c2 = line_search, lr, c1, c2
        self.shape = x0.shape
        B = x0.shape[0]
        self._D = math.prod(x0.shape[1:])
        self._x = x0.detach().reshape(B, self._D).clone(memory_format=torch.contiguous_format)
        dev, dt = x0.device, x0.dtype
        vec = lambda v=0.0: torch.full((B,), v, dtype=dt, device=dev)  # noqa: E731
        ints = lambda: torch.zeros(B, dtype=torch.int64, device=dev)  # noqa: E731
        self.status = ints()
        self.iterations, self.evaluations = ints(), ints()
        self.f = vec(float("nan"))
        self.g = torch.zeros_like(self._x)
        self.d = torch.zeros_like(self._x)
        self.t, self.f0, self.gtd0, self.d_norm = vec(), vec(), vec(), vec()
        # Line-search points (t, f, g.d): the previous trial and the bracket's low/high ends.
        self.prev, self.lo, self.hi = (self._x.new_zeros(B, 3) for _ in range(3))
        self.g_prev, self.lo_g = torch.zeros_like(self._x), torch.zeros_like(self._x)
        self.zoom = torch.zeros(B, dtype=torch.bool, device=dev)
        self.insuf = torch.zeros_like(self.zoom)
        self.n_ls = ints()
        # History: slot k of row b is S[k, b]; row b's newest pair is in slot head[b].
        self.S = self._x.new_zeros((0,) + self._x.shape)
        self.Y = torch.zeros_like(self.S)
        self.rho = self._x.new_zeros(0, B)
        self.updates, self.count = ints(), ints()
        self.H_diag = vec(1.0)
        self._started = False
        self._trial = self._x
        self._step = self._step_t = None
        # one compiled call per tell (pyinvert.optim.lbfgs_rows): the default on the CPU;
        # _path="rows" on CUDA too (its kernel has not yet run on a GPU, so the tensor path stays
        # CUDA's default); _path="tensor" keeps the tensor path (other devices; the oracle)
        self._rows = None
        self._ask_scale = self._grad_scale = None
        if _path not in ("auto", "rows", "tensor"):
            raise ValueError(f"{_fn}: expected _path 'auto', 'rows' or 'tensor', got {_path!r}")
        floating = dt in (torch.float32, torch.float64)
        if _path == "rows" and not (floating and dev.type in ("cpu", "cuda")):
            raise ValueError(
                f"{_fn}: the row path takes float32/float64 on the CPU or CUDA, got {dt} on "
                f"{dev.type}"
            )
        self._use_rows = _path == "rows" or (_path == "auto" and dev.type == "cpu" and floating)

    # ---- the interface -------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True when every row has stopped."""
        if self._rows is not None:  # (a list: no tensor operations between two evaluations)
            return RUNNING not in self.status.tolist()
        return not bool((self.status == RUNNING).any())

    @property
    def x(self) -> Tensor:
        """The accepted points, shaped like x0."""
        return self._x.view(self.shape)

    def ask(self) -> Tensor:
        """The points to evaluate next, shaped like x0: each running row at its own trial
        point, each stopped row at its final point."""
        return self._trial.view(self.shape)

    def scale_asks(self, scale: Tensor) -> None:
        """Have :meth:`ask_scaled` return ``ask() * scale`` (scale: [B], one factor per row;
        the row path writes it with each trial, without another pass), before the first
        :meth:`tell`."""
        if self._started:
            raise RuntimeError(f"{self._fn}: scale_asks must be called before the first tell")
        self._ask_scale = self._per_row(scale)

    def scale_gradients(self, scale: Tensor) -> None:
        """Have :meth:`tell` take ``grad * scale`` as the gradients (scale: [B], one factor per
        row; the row path applies it while it copies the gradient in)."""
        self._grad_scale = self._per_row(scale)

    def _per_row(self, scale: Tensor) -> Tensor:
        B = self._x.shape[0]
        return scale.detach().to(self._x.dtype).reshape(B).clone()  # (ours: not the caller's)

    def ask_scaled(self) -> Tensor:
        """:meth:`ask` times the rows' factors of :meth:`scale_asks`."""
        rows = self._rows
        if rows is not None and rows.z.numel():
            return rows.z.view(self.shape)
        return self.ask() * self._ask_scale.view((-1,) + (1,) * (len(self.shape) - 1))

    def tell(self, values: Tensor, grad: Tensor, *, _fresh: bool = False) -> None:
        """Take the values [B] and gradients [B, ...] at the points of the last ``ask``.
        (``_fresh``: the caller will not modify ``grad``, so it is kept without a copy.)"""
        B = self._x.shape[0]
        if not isinstance(values, Tensor) or values.shape != (B,):
            got = list(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"{self._fn}: expected per-row values of shape [{B}], got {got}")
        if not isinstance(grad, Tensor) or grad.shape != self.shape:
            got = list(grad.shape) if isinstance(grad, Tensor) else type(grad).__name__
            raise ValueError(
                f"{self._fn}: expected gradients of shape {list(self.shape)}, got {got}"
            )
        dt = self._x.dtype
        f = values.detach() if values.dtype == dt else values.detach().to(dt)
        g = (grad.detach() if grad.dtype == dt else grad.detach().to(dt)).reshape(B, self._D)
        scale = self._grad_scale
        if self._use_rows:  # (the gradient is copied into the row path's own buffer)
            return lbfgs_rows.tell(self, f, g, scale)
        if scale is not None:
            g = g * scale[:, None]
        elif not _fresh and g.data_ptr() == grad.data_ptr():
            g = g.clone()  # kept as the state: the caller's tensor may change
        run = self.status == RUNNING
        self.evaluations += run
        finite = torch.isfinite(f) & torch.isfinite(_amax(g))
        self.status = torch.where(run & ~finite, NONFINITE, self.status)
        ok = run & finite
        if not self._started:
            self._started = True
            self.f, self.g = _w(ok, f, self.f), _w(ok, g, self.g)
            small = ok & (_amax(self.g) <= self.tolerance_grad)
            self.status = torch.where(small, GRADIENT, self.status)
            self._begin(ok & ~small)
        else:
            if self.line_search is None:
                accept, t, fa, ga = ok, self.t, f, g
            else:
                accept, t, fa, ga = self._wolfe(ok, f, g)
            self._finish(accept, t, fa, ga)
        run = self.status == RUNNING
        # the step t d and its t are kept: an accepted trial reuses them (_finish)
        self._step, self._step_t = self.t[:, None] * self.d, self.t
        self._trial = _w(run, self._x + self._step, self._x)

    def step(self, closure: Callable[[Tensor], Union[Tensor, Tuple[Tensor, Tensor]]]) -> bool:
        """One closure call for all rows (``ask``, evaluate, ``tell``); returns ``done``."""
        f, g, fresh = evaluate(closure, self.ask(), self._fn)
        self.tell(f, g, _fresh=fresh)
        return self.done

    def info(self) -> LBFGSInfo:
        """The per-row counters, values and stopping reasons so far."""
        conv = torch.zeros_like(self.status, dtype=torch.bool)
        for s in _CONVERGED:
            conv |= self.status == s
        return LBFGSInfo(
            self.iterations.clone(),
            self.evaluations.clone(),
            conv,
            self.f.clone(),
            self.status.clone(),
        )

    # ---- directions ------------------------------------------------------------------------

    def _two_loop(self, rows: Tensor) -> Tensor:
        """-H g for every row of ``rows``, with each row's own history (N&W Alg. 7.4; the other
        rows' values are discarded): the fused op ``torch.ops.pyinvert.rowwise_two_loop`` on
        the CPU and CUDA, which gives the bits of :func:`pyinvert.optim.rowwise.two_loop_reference`."""
        if self._x.device.type not in ("cpu", "cuda"):
            return _two_loop_reference(
                self.g,
                self.S,
                self.Y,
                self.rho,
                self.H_diag,
                self.count,
                self.updates,
                self.history_size,
                rows,
            )
        kmax = int(self.count[rows].max()) if bool(rows.any()) else 0
        j = torch.arange(kmax, device=self._x.device)
        valid = rows[:, None] & (self.count[:, None] > j)
        slots = torch.where(valid, (self.updates[:, None] - 1 - j) % self.history_size, -1)
        return torch.ops.pyinvert.rowwise_two_loop(
            self.g, self.S, self.Y, self.rho, self.H_diag, slots
        )

    def _begin(self, rows: Tensor) -> None:
        """New direction and line-search start for ``rows`` (at their accepted points)."""
        if not bool(rows.any()):
            return
        first = rows & (self.iterations == 0)
        any_first = bool(first.any())
        d = self._two_loop(rows) if bool((rows & ~first).any()) else -self.g
        self.d = _w(rows, _w(first, -self.g, d) if any_first else d, self.d)
        gtd = _dot(self.g, self.d)
        flat = rows & (gtd > -self.tolerance_change)
        self.status = torch.where(flat, DIRECTION, self.status)
        rows = rows & ~flat
        t = torch.full_like(self.t, self.lr)
        if any_first:
            t = _w(first, torch.clamp(1.0 / _rowsum(self.g.abs()), max=1.0) * self.lr, t)
        self.t = _w(rows, t, self.t)
        self.f0, self.gtd0 = _w(rows, self.f, self.f0), _w(rows, gtd, self.gtd0)
        self.prev = _w(rows, torch.stack([torch.zeros_like(gtd), self.f, gtd], 1), self.prev)
        self.g_prev = _w(rows, self.g, self.g_prev)
        self.d_norm = _w(rows, _amax(self.d), self.d_norm)
        self.zoom = self.zoom & ~rows
        self.insuf = self.insuf & ~rows
        self.n_ls = torch.where(rows, 0, self.n_ls)

    # ---- the line search (N&W Alg. 3.5 and 3.6) ---------------------------------------------

    def _wolfe(self, ok: Tensor, f: Tensor, g: Tensor):
        """One evaluation of each running row's line search; the trial points (t, f, g.d) of
        ``prev``, ``lo`` and ``hi`` are [B, 3] rows."""
        t = self.t
        gtd = _dot(g, self.d)
        new = torch.stack([t, f, gtd], 1)
        self.n_ls = self.n_ls + ok
        out = ok & (self.n_ls >= self.max_ls)
        armijo_fail = f > self.f0 + self.c1 * t * self.gtd0
        curv = gtd.abs() <= -self.c2 * self.gtd0
        f_prev, lo_f = self.prev[:, 1], self.lo[:, 1]
        # Bracketing: a step too long (A), or where the slope turned (C), brackets a minimizer
        # with the previous trial; one meeting both conditions (W) is taken; else extrapolate.
        br, zm = ok & ~self.zoom, ok & self.zoom
        A = br & (armijo_fail | ((self.n_ls > 2) & (f >= f_prev)))
        W = br & ~A & curv
        C = br & ~A & ~W & (gtd >= 0)
        E = br & ~(A | W | C)
        enter = A | C
        new_lo = enter & (f < f_prev)
        # Zoom: the new point replaces the high end (H; the ends swap if it is lower than the
        # low end), or becomes the low end (L; taken if it meets the curvature condition).
        H = zm & (armijo_fail | (f >= lo_f))
        swap = H & (f < lo_f)
        L = zm & ~H
        Z = L & curv
        flip = L & ~curv & (gtd * (self.hi[:, 0] - self.lo[:, 0]) >= 0)
        self.hi = _w(
            (enter & ~new_lo) | (H & ~swap),
            new,
            _w(swap | flip, self.lo, _w(new_lo, self.prev, self.hi)),
        )
        to_new, to_prev = new_lo | swap | L, enter & ~new_lo
        self.lo = _w(to_new, new, _w(to_prev, self.prev, self.lo))
        self.lo_g = _w(to_new, g, _w(to_prev, self.g_prev, self.lo_g))
        self.zoom = self.zoom | enter
        lo_t, hi_t = self.lo[:, 0], self.hi[:, 0]
        take_new = W | Z | (E & out)
        zooming = enter | (zm & ~Z)
        take_lo = zooming & (out | ((hi_t - lo_t).abs() * self.d_norm < self.tolerance_change))
        zooming = zooming & ~take_lo
        # Extrapolation: a cubic step in [t + 0.01 (t - t_prev), 10 t]. (Each trial is only
        # computed when a row takes it: the other rows' values would be discarded.)
        ext = E & ~out
        if bool(ext.any()):
            t_prev = self.prev[:, 0]
            t_ext = _cubic(
                t_prev, f_prev, self.prev[:, 2], t, f, gtd, t + 0.01 * (t - t_prev), t * 10
            )
            self.prev, self.g_prev = _w(ext, new, self.prev), _w(ext, g, self.g_prev)
            self.t = _w(ext, t_ext, self.t)
        # Zoom trial: a cubic step inside the bracket, kept 10% away from its ends when the
        # last steps made too little progress.
        if bool(zooming.any()):
            lo_b, hi_b = torch.minimum(lo_t, hi_t), torch.maximum(lo_t, hi_t)
            t_z = _cubic(*self.lo.unbind(1), *self.hi.unbind(1), lo_b, hi_b)
            eps = 0.1 * (hi_b - lo_b)
            near = torch.minimum(hi_b - t_z, t_z - lo_b) < eps
            move = near & (self.insuf | (t_z >= hi_b) | (t_z <= lo_b))
            t_z = torch.where(
                move,
                torch.where((t_z - hi_b).abs() < (t_z - lo_b).abs(), hi_b - eps, lo_b + eps),
                t_z,
            )
            self.insuf = torch.where(zooming, near & ~move, self.insuf)
            self.t = _w(zooming, t_z, self.t)
        return (
            take_new | take_lo,
            _w(take_new, t, lo_t),
            _w(take_new, f, self.lo[:, 1]),
            _w(take_new, g, self.lo_g),
        )

    # ---- the end of an iteration ----------------------------------------------------------

    def _finish(self, acc: Tensor, t: Tensor, f: Tensor, g: Tensor) -> None:
        stuck = acc & (t == 0)
        self.status = torch.where(stuck, LINE_SEARCH, self.status)
        acc = acc & ~stuck
        if not bool(acc.any()):
            return
        if self._step is not None and bool((t == self._step_t).all()):
            s, x_new = self._step, self._trial  # the same operations on the same values
        else:
            s = t[:, None] * self.d
            x_new = self._x + s
        y = g - self.g
        ys, yy = _dot(y, s), _dot(y, y)
        f_old = self.f
        self._x = _w(acc, x_new, self._x)
        self.f, self.g = _w(acc, f, self.f), _w(acc, g, self.g)
        self.iterations = self.iterations + acc
        tests = (
            (GRADIENT, _amax(g) <= self.tolerance_grad),
            # max |t d| = |t| max |d| exactly (rounding is monotonic)
            (STEP, t.abs() * self.d_norm <= self.tolerance_change),
            (VALUE, (f - f_old).abs() < self.tolerance_change),
            (MAX_ITER, self.iterations >= self.max_iter),
            (MAX_EVAL, self.evaluations >= self.max_eval),
        )
        for code, hit in tests:
            self.status = torch.where(acc & hit & (self.status == RUNNING), code, self.status)
        cont = acc & (self.status == RUNNING)
        # History update, skipped unless the curvature y.s is positive (as torch: > 1e-10).
        upd = cont & (ys > 1e-10)
        if bool(upd.any()):
            m = self.history_size
            need = min(m, int(self.updates[upd].max()) + 1)
            if self.S.shape[0] < need:
                grow = min(m, max(need, 2 * self.S.shape[0])) - self.S.shape[0]
                self.S = torch.cat([self.S, self.S.new_zeros((grow,) + self.S.shape[1:])])
                self.Y = torch.cat([self.Y, self.Y.new_zeros((grow,) + self.Y.shape[1:])])
                self.rho = torch.cat([self.rho, self.rho.new_zeros(grow, self.rho.shape[1])])
            u = self.updates
            if bool(upd.all()) and int(u.min()) == int(u.max()):  # one slot for all rows
                slot = int(u[0]) % m
                self.S[slot].copy_(s)
                self.Y[slot].copy_(y)
                self.rho[slot] = 1.0 / ys
            else:
                rows = upd.nonzero().squeeze(1)
                slots = self.updates[rows] % m
                self.S[slots, rows] = s[rows]
                self.Y[slots, rows] = y[rows]
                self.rho[slots, rows] = 1.0 / ys[rows]
            self.updates = self.updates + upd
            self.count = torch.clamp(self.count + upd, max=m)
            self.H_diag = _w(upd, ys / yy, self.H_diag)
        self._begin(cont)
