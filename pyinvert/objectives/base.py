"""The objective algebra: :class:`Objective` (a per-row loss and measure), ``+`` (:class:`Sum`),
``*`` (:class:`Scaled`), and the per-row plumbing (:meth:`Objective.map_rows`) the engine uses
to repeat rows for restarts, cut chunks and move to a device. The terms themselves live beside
it: :mod:`~pyinvert.objectives.inversion`, :mod:`~pyinvert.objectives.units`,
:mod:`~pyinvert.objectives.priors`.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch  # noqa: F401 (doctest namespace)
from torch import Tensor

Weight = Union[float, Tensor]


def check_weight(w, fn: str):
    if isinstance(w, Tensor):
        if w.dim() > 1:
            raise ValueError(
                f"{fn}: expected a float or a per-row weight of shape (N,), got {list(w.shape)}"
            )
        return w.detach()
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"{fn}: expected a float or a Tensor weight, got {type(w).__name__}")
    return float(w)


def map_weight(w, fn):
    return fn(w) if isinstance(w, Tensor) and w.dim() == 1 else w


def _to(w, device, dtype):
    if isinstance(w, Tensor):
        return w.to(device=device, dtype=dtype if w.is_floating_point() else w.dtype)
    return w


class Objective:
    """Base class: ``evaluate(code, x) -> (loss [N], measure [N] or None)``.

    Subclasses implement :meth:`evaluate` and :meth:`map_rows` (and :meth:`to` when they hold
    tensors shared by all rows). ``needs_code`` is False for terms of the image alone.
    """

    needs_code = True

    def evaluate(self, code: Optional[Tensor], x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        raise NotImplementedError

    def __call__(self, code: Optional[Tensor], x: Tensor) -> Tensor:
        return self.evaluate(code, x)[0]

    def map_rows(self, fn: Callable[[Tensor], Tensor]) -> "Objective":
        """A copy with ``fn`` applied to every per-row tensor (first dimension = rows)."""
        return self

    def to(self, device=None, dtype=None) -> "Objective":
        """A copy with every tensor moved (floating tensors also cast to ``dtype``)."""
        return self.map_rows(lambda t: _to(t, device, dtype))

    def select(self, rows) -> "Objective":
        """The objective of some rows (a slice or an index tensor)."""
        return self.map_rows(lambda t: t[rows])

    def repeat_rows(self, repeats: int) -> "Objective":
        """Each row repeated ``repeats`` times in place (row = image * repeats + r)."""
        if repeats == 1:
            return self
        return self.map_rows(lambda t: t.repeat_interleave(repeats, 0))

    # ---- algebra ---------------------------------------------------------------------------

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum([self, other])

    def __mul__(self, weight):
        if not isinstance(weight, (int, float, Tensor)) or isinstance(weight, bool):
            return NotImplemented
        return Scaled(self, weight)

    __rmul__ = __mul__

    def __neg__(self):
        return Scaled(self, -1.0)

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum([self, Scaled(other, -1.0)])

    def describe(self) -> str:
        return type(self).__name__

    def fuse(self, other: "Objective") -> Optional["Objective"]:
        """One term doing the work of ``self + other`` (e.g. two image priors in one fused
        call), or None. :class:`Sum` merges a term into the first earlier one that fuses."""
        return None


class Scaled(Objective):
    """``weight * term`` with a float or per-row Tensor[N] weight (the measure is the term's).

    Args:
        term: the objective scaled.
        weight: a float or Tensor[N].
    """

    def __init__(self, term: Objective, weight: Weight):
        self.term = term
        self.weight = check_weight(weight, "Scaled")
        self.needs_code = term.needs_code

    def evaluate(self, code, x):
        loss, measure = self.term.evaluate(code, x)
        return self.weight * loss, measure

    def map_rows(self, fn):
        return Scaled(self.term.map_rows(fn), map_weight(self.weight, fn))

    def describe(self):
        w = self.weight if not isinstance(self.weight, Tensor) else "w[N]"
        return f"{w} * {self.term.describe()}"


class Sum(Objective):
    """The sum of terms (image priors that can share one fused call are merged).

    Args:
        terms: the objectives added, in order.
    """

    def __init__(self, terms: Sequence[Objective]):
        flat: List[Objective] = []
        for t in terms:
            if not isinstance(t, Objective):
                raise TypeError(f"Sum: expected Objective terms, got {type(t).__name__}")
            flat.extend(t.terms if isinstance(t, Sum) else [t])
        self.terms = _fuse(flat)
        self.needs_code = any(t.needs_code for t in self.terms)

    def evaluate(self, code, x):
        loss, measure = None, None
        for t in self.terms:
            term_loss, m = t.evaluate(code, x)
            loss = term_loss if loss is None else loss + term_loss
            if measure is None:
                measure = m
        return loss, measure

    def map_rows(self, fn):
        s = Sum.__new__(Sum)
        s.terms = [t.map_rows(fn) for t in self.terms]
        s.needs_code = self.needs_code
        return s

    def describe(self):
        return " + ".join(t.describe() for t in self.terms)


def _fuse(terms: List[Objective]) -> List[Objective]:
    """Merge each term into the first earlier one that fuses with it (:meth:`Objective.fuse`),
    placed where that one was."""
    out: List[Objective] = []
    for t in terms:
        for i, o in enumerate(out):
            merged = o.fuse(t)
            if merged is not None:
                out[i] = merged
                break
        else:
            out.append(t)
    return out
