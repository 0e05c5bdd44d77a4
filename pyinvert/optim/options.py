"""How to run a task, the same for every task: :class:`RunOptions`.

Every task (:func:`pyinvert.invert`, :func:`pyinvert.visualize`, :func:`pyinvert.actmax`,
:func:`pyinvert.caricature`, :func:`pyinvert.dream`, :func:`pyinvert.invariance_map`) takes
``options=RunOptions(...)`` and, as before, the same fields as keyword arguments; a keyword
left at its default takes the value from ``options``.
"""

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch


@dataclass(frozen=True)
class RunOptions:
    """The run settings shared by every task.

    Args:
        steps: iterations (the recipe's schedule stretched or shortened); None: the recipe's.
            Default: None.
        restarts: independent results per image. Default: 1.
        batch_size: rows per optimized chunk; None: all at once. Default: None.
        generator: torch.Generator seeding the initializations and jitter. Default: None.
        seeds: one int per image (overrides ``generator``). Default: None.
        device: where to optimize; None: the inputs' device (the CPU without inputs).
            Default: None.
        dtype: float32 or float64. Default: torch.float32.
        backend: "fused" (our kernels) or "reference" (pure PyTorch). Default: "fused".
        progress: a tqdm progress bar (True), none (False) or an object with ``update(n)``.
            Default: True.
        callback: ``callback(iteration, x, loss, measure, active)`` after every step;
            returning True stops that chunk. Default: None.

    Example:
        >>> opts = RunOptions(steps=20, progress=False)
        >>> RunOptions.resolve("invert", opts, restarts=2).restarts, opts.steps
        (2, 20)
    """

    steps: Optional[int] = None
    restarts: int = 1
    batch_size: Optional[int] = None
    generator: Optional[torch.Generator] = None
    seeds: Optional[Sequence[int]] = None
    device: object = None
    dtype: torch.dtype = torch.float32
    backend: str = "fused"
    progress: object = True
    callback: Optional[Callable] = None

    def check(self, fn: str) -> "RunOptions":
        """Raise the error a user's mistake deserves (naming ``fn``); returns self."""
        r = self.restarts
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"{fn}: expected restarts to be an int >= 1, got {r!r}")
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ValueError(f"{fn}: expected batch_size to be None or an int >= 1, got {b!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{fn}: expected dtype float32 or float64, got {self.dtype}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(
                f"{fn}: expected generator to be a torch.Generator, "
                f"got {type(self.generator).__name__}"
            )
        if self.backend not in ("fused", "reference"):
            raise ValueError(
                f"{fn}: expected backend in ('fused', 'reference'), got {self.backend!r}"
            )
        s = self.steps
        if s is not None and (isinstance(s, bool) or not isinstance(s, int)):
            raise TypeError(f"{fn}: expected steps to be an int or None, got {type(s).__name__}")
        if s is not None and s < 1:
            raise ValueError(f"{fn}: expected steps >= 1, got {s}")
        return self

    @classmethod
    def resolve(cls, fn: str, options: Optional["RunOptions"] = None, **keywords) -> "RunOptions":
        """``options`` with the task's keyword arguments applied: a keyword at its default
        keeps the option's value; one set to something else replaces it, unless ``options``
        sets that field to a third value (then it is ambiguous: ValueError)."""
        if options is None:
            options = cls()
        elif not isinstance(options, RunOptions):
            raise TypeError(
                f"{fn}: expected options to be a RunOptions, got {type(options).__name__}"
            )
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        changes = {}
        for key, value in keywords.items():
            if key not in defaults:
                raise TypeError(f"RunOptions.resolve: unknown field {key!r}")
            if _same(value, defaults[key]):
                continue
            mine = getattr(options, key)
            if not _same(mine, defaults[key]) and not _same(mine, value):
                raise ValueError(
                    f"{fn}: {key} is given twice, as {value!r} and in options as "
                    f"{mine!r}; give it once"
                )
            changes[key] = value
        return (dataclasses.replace(options, **changes) if changes else options).check(fn)

    def to_dict(self) -> dict:
        """The JSON-friendly fields (the generator and callback as whether they are set)."""
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "batch_size": self.batch_size,
            "seeded": self.generator is not None or self.seeds is not None,
            "device": None if self.device is None else str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "backend": self.backend,
        }


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, RuntimeError, ValueError):
        return False
