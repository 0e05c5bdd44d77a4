"""Batched L-BFGS with per-row state: every row of x is its own problem.

Each row keeps its own curvature history (m pairs (s, y) in its own ring), its own two-loop
recursion and its own strong-Wolfe line search (bracketing, Nocedal & Wright Alg. 3.5, then
zoom, Alg. 3.6, with cubic interpolation, eq. 3.59). Rows in different phases (one
extrapolating, one zooming, one starting its next iteration) share each closure call: all rows
are evaluated at their own trial points. A row that has converged, stopped or met a NaN/Inf is
frozen at its last accepted point. ``torch.optim.LBFGS`` instead treats the whole tensor as
one problem: one history and one line search for all rows.

Bit for bit: a row's result does not depend on its batch mates (given a closure whose per-row
values do not). The arithmetic on rows is elementwise (add, mul, div, where, never a fused
multiply-add, whose vectorized and scalar paths round differently), the per-row dot products
and the two-loop recursion are the compiled ops ``torch.ops.pyinvert.rowwise_dot`` and
``rowwise_two_loop`` (:mod:`pyinvert.optim.rowwise`: 256 partial sums in double over the row
in a fixed order, combined by a fixed tree: an order that depends on the row length only, the
same for B = 1 or B = 100, on any number of threads; the CUDA kernels use the CPU's order,
but their equality with the CPU is not tested yet), and the maxima are exact. On the CPU each
``tell`` is one compiled call that takes the evaluation for every row
(:mod:`pyinvert.optim.lbfgs_rows`: the same operations, hence the same bits, as the tensor
path, which other devices use and the tests take as the oracle; on CUDA with
``_path="rows"``).

Stateful interface (for an engine that evaluates the objective itself)::

    opt = LBFGS(x0, max_iter=200)
    while not opt.done:
        x = opt.ask()              # [B, ...] trial points (frozen rows: their final point)
        f, g = evaluate(x)         # per-row values [B] and gradients [B, ...]
        opt.tell(f, g)
    opt.x, opt.info()

``opt.step(closure)`` is one ask / evaluate / tell; :func:`lbfgs` loops it.

References:
    J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., Springer 2006: Alg. 7.4 and
    7.5 (L-BFGS two-loop recursion and iteration), Alg. 3.5 and 3.6 (strong-Wolfe line
    search), eq. 3.59 (cubic interpolation), eq. 7.20 (initial Hessian scaling).
    D. C. Liu, J. Nocedal. On the limited memory BFGS method for large scale optimization.
    Mathematical Programming 45, 1989.
"""

from typing import Callable, Optional, Tuple, Union

from torch import Tensor

from pyinvert.optim.lbfgs_state import LBFGS
from pyinvert.optim.lbfgs_status import REASONS, LBFGSInfo
from pyinvert.optim.rowwise import rowsum as _rowsum  # noqa: F401 (tests reach it here)

__all__ = ["lbfgs", "LBFGS", "LBFGSInfo", "REASONS"]


def lbfgs(
    closure: Callable[[Tensor], Union[Tensor, Tuple[Tensor, Tensor]]],
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
) -> Tuple[Tensor, LBFGSInfo]:
    """Minimize B independent problems packed in one tensor with L-BFGS, row by row.

    Each row has its own history, two-loop recursion and strong-Wolfe line search (module
    docstring); all rows share each closure call. A row's result is bit for bit the same
    alone and in a batch, given a closure whose rows do not interact.

    Args:
        closure: ``f(x)`` for x like x0 (requires grad): per-row values [B] (differentiated
            with one backward of their sum), or a pair (values [B], gradients like x).
        x0: starting points, one problem per row.
        max_iter: iterations (accepted steps) per row. Default: 100.
        max_eval: closure values per row, checked after each iteration (a line search may go
            over by up to max_ls - 1). Default: None (max_iter * 5 // 4, as torch).
        history_size: curvature pairs kept per row (m). Default: 100.
        tolerance_grad: a row stops when max |g| <= tolerance_grad. Default: 1e-07.
        tolerance_change: a row stops when max |t d| or the change of its value is below
            this, or when g.d > -tolerance_change. Default: 1e-09.
        line_search: "strong_wolfe", or None for fixed steps of ``lr``. Default:
            'strong_wolfe'.
        lr: the initial step of each line search (the first iteration's is
            ``min(1, 1 / |g|_1) lr``, as torch). Default: 1.0.
        c1: Armijo constant. Default: 0.0001.
        c2: curvature constant. Default: 0.9.
        max_ls: closure values per line search. Default: 25.

    Returns:
        ``(x, info)``: the points (like x0, detached) and an :class:`LBFGSInfo` with per-row
        ``iterations``, ``evaluations``, ``converged``, ``value`` and ``status``.

    Raises:
        TypeError: x0 not a floating-point Tensor, an option of the wrong type, or a closure
            returning no Tensor.
        ValueError: an option out of range, an unknown line_search, or closure values not of
            shape [B].

    Shape:
        - x0: (B, ...); closure values: (B,).

    Example:
        >>> import torch
        >>> target = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
        >>> x, info = lbfgs(lambda x: ((x - target) ** 2).sum(1), torch.zeros_like(target))
        >>> torch.allclose(x, target), info.converged.tolist(), info.reasons
        (True, [True, True], ['gradient', 'gradient'])

    References:
        J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., 2006, Alg. 7.4, 7.5, 3.5,
        3.6. D. C. Liu, J. Nocedal. Mathematical Programming 45, 1989.
    """
    opt = LBFGS(
        x0,
        max_iter=max_iter,
        max_eval=max_eval,
        history_size=history_size,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        line_search=line_search,
        lr=lr,
        c1=c1,
        c2=c2,
        max_ls=max_ls,
        _fn="lbfgs",
    )
    while not opt.done:
        opt.step(closure)
    return opt.x.clone(), opt.info()
