"""What :class:`pyinvert.optim.lbfgs_state.LBFGS` reports and takes: the per-row stopping
reasons and outcome (:class:`LBFGSInfo`), the option checks, and :func:`evaluate`, the closure
protocol (values, or values and gradients)."""

from dataclasses import dataclass
from typing import List

import torch
from torch import Tensor

#: Per-row stopping reasons, indexed by ``LBFGSInfo.status``.
REASONS = (
    "running",
    "gradient",
    "step",
    "value",
    "direction",
    "max_iter",
    "max_eval",
    "line_search",
    "nonfinite",
)
RUNNING, GRADIENT, STEP, VALUE, DIRECTION, MAX_ITER, MAX_EVAL, LINE_SEARCH, NONFINITE = range(
    len(REASONS)
)
_CONVERGED = (GRADIENT, STEP, VALUE, DIRECTION)


@dataclass(frozen=True)
class LBFGSInfo:
    """Per-row outcome of :func:`lbfgs` (every field has shape [B]).

    Attributes:
        iterations: accepted steps (int64).
        evaluations: closure values used by the row, the initial one included (int64).
        converged: stopped by a tolerance (gradient, step, value or directional derivative).
        value: the objective at the returned point.
        status: index into ``REASONS``: "gradient" (max |g| <= tolerance_grad), "step"
            (max |t d| <= tolerance_change), "value" (|f_k - f_k-1| < tolerance_change),
            "direction" (g.d > -tolerance_change), "max_iter", "max_eval", "line_search" (no
            decrease found), "nonfinite" (a NaN or Inf value or gradient: the row is frozen
            at its last finite point), "running".
    """

    iterations: Tensor
    evaluations: Tensor
    converged: Tensor
    value: Tensor
    status: Tensor

    @property
    def reasons(self) -> List[str]:
        """``status`` as words, one per row."""
        return [REASONS[int(s)] for s in self.status]


def _check_options(fn, ints, floats, c1, c2, lr, line_search):
    for name, v in ints.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{fn}: expected {name} to be an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{fn}: expected {name} >= 1, got {v}")
    for name, v in floats.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{fn}: expected {name} to be a float, got {type(v).__name__}")
        if not v >= 0:
            raise ValueError(f"{fn}: expected {name} >= 0, got {v}")
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"{fn}: expected 0 < c1 < c2 < 1 (Wolfe conditions), got c1={c1}, c2={c2}")
    if lr <= 0:
        raise ValueError(f"{fn}: expected lr > 0, got {lr}")
    if line_search not in ("strong_wolfe", None):
        raise ValueError(
            f"{fn}: unknown line_search {line_search!r}; expected 'strong_wolfe' or None"
        )


def evaluate(closure, x: Tensor, fn: str):
    """(values [B], gradients like x, whether the gradients are a new tensor of ours) of the
    closure at x."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = closure(x)
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(
                f"{fn}: expected the closure to return values or (values, "
                f"gradients), got a tuple of {len(out)}"
            )
        return out[0], out[1], False
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{fn}: expected the closure to return a Tensor of per-row values, "
            f"got {type(out).__name__}"
        )
    if out.shape != x.shape[:1]:
        raise ValueError(
            f"{fn}: expected the closure to return per-row values of shape "
            f"[{x.shape[0]}], got {list(out.shape)}"
        )
    if not out.requires_grad:
        raise ValueError(
            f"{fn}: the closure's values do not depend on x (no gradient); "
            f"return (values, gradients) to give the gradients yourself"
        )
    (grad,) = torch.autograd.grad(out.sum(), x, allow_unused=True)
    return out, torch.zeros_like(x) if grad is None else grad, True
