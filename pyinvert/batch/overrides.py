"""An item's recipe overrides: every field's type, finiteness and range, checked up front.

An item's ``overrides`` (a JSON object of :class:`pyinvert.optim.recipes.Recipe` fields) is
checked before anything of the job is optimized. An unknown field, a value of the wrong type,
a non-finite number or one out of its range fails that item (the others go on), with a reason
that names the field, the range and the value, e.g.
``overrides: field 'tv_weight': expected a finite number >= 0, got -1.0``.

The ranges (:data:`RANGES`) are those inside which the recipe means something: weights are
>= 0 (the data weight > 0: without a data term there is nothing to invert), exponents,
scales and bounds > 0, the momentum in [0, 1), learning rates > 0, counts between 1 and a
bound (:mod:`pyinvert.batch.options`).
"""

import dataclasses
import math
from typing import Dict, Optional, Tuple

from pyinvert.batch.options import MAX_STAGES, MAX_STEPS
from pyinvert.optim.recipes import Recipe, Stage

#: Largest jitter (pixels) and DSIFT bin size / step accepted in overrides.
MAX_JITTER = 256
MAX_DSIFT_SIZE = 256

_CHOICES = {
    "optimizer": ("momentum", "adagrad_momentum", "normalized"),
    "prior_normalization": ("sigma2", "pixels"),
    "init": ("randn_norm", "uniform_quantile"),
}
_BOOLS = ("reset_momentum", "isotropic_norm", "lr_pixels")
_INTS = {
    "jitter": (1, MAX_JITTER),
    "dsift_bin_size": (1, MAX_DSIFT_SIZE),
    "dsift_step": (1, MAX_DSIFT_SIZE),
}

#: field -> (low, low included, high, high included, null allowed) of the real-valued fields.
RANGES: Dict[str, Tuple[float, bool, Optional[float], bool, bool]] = {
    "momentum": (0.0, True, 1.0, False, False),
    "data_weight": (0.0, False, None, False, False),
    "tv_weight": (0.0, True, None, False, False),
    "norm_weight": (0.0, True, None, False, False),
    "beta": (0.0, False, None, False, False),
    "alpha": (0.0, False, None, False, False),
    "sigma": (0.0, False, None, False, False),
    "sigma_reference_numel": (0.0, False, None, False, True),
    "bound": (0.0, False, None, False, True),
}


class ItemError(Exception):
    """A problem of one item; ``final`` when a rerun with the same inputs would fail again."""

    def __init__(self, message: str, final: bool = True):
        super().__init__(message)
        self.final = final


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _range_text(low, low_in, high, high_in) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _in_range(v: float, low, low_in, high, high_in) -> bool:
    if v < low or (v == low and not low_in):
        return False
    return high is None or v < high or (v == high and high_in)


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _stages(where: str, value):
    if not isinstance(value, list) or not value:
        raise ItemError(
            f"{where}: expected a non-empty list of [lr, iterations] or "
            f"[lr, iterations, jitter], got {value!r}"
        )
    if len(value) > MAX_STAGES:
        raise ItemError(f"{where}: expected at most {MAX_STAGES} stages, got {len(value)}")
    stages = []
    for s in value:
        if isinstance(s, dict):
            s = [s.get("lr"), s.get("iterations"), s.get("jitter", False)]
        if (
            not isinstance(s, list)
            or len(s) not in (2, 3)
            or not _is_number(s[0])
            or s[0] <= 0
            or not _int_in(s[1], 1, MAX_STEPS)
            or (len(s) == 3 and not isinstance(s[2], bool))
        ):
            raise ItemError(
                f"{where}: expected [lr > 0, iterations in [1, {MAX_STEPS}]] or "
                f"[lr, iterations, jitter (true/false)], got {s!r}"
            )
        stages.append(Stage(float(s[0]), int(s[1]), *(s[2:])))
    total = sum(s.iterations for s in stages)
    if total > MAX_STEPS:
        raise ItemError(f"{where}: expected at most {MAX_STEPS} iterations in all, got {total}")
    return tuple(stages)


def check_overrides(overrides: dict) -> dict:
    """Check an item's recipe overrides and convert them to
    :func:`pyinvert.optim.recipes.get_recipe` keyword arguments.

    Args:
        overrides: the manifest's JSON object of recipe fields.

    Returns:
        The keyword arguments (``stages`` as a tuple of :class:`Stage`, numbers as floats).

    Raises:
        ItemError: an unknown field, or a value of the wrong type or out of its range (the
            message names the field, the expected range and the value).

    Example:
        >>> check_overrides({"tv_weight": 2, "stages": [[0.01, 10]]})["tv_weight"]
        2.0
        >>> try:
        ...     check_overrides({"tv_weight": -1})
        ... except ItemError as error:
        ...     print(error)
        overrides: field 'tv_weight': expected a finite number >= 0, got -1
    """
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "extra")]
    out = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ItemError(
                f"overrides: unknown recipe field {key!r}; expected some of {sorted(fields)}"
            )
        where = f"overrides: field {key!r}"
        if key == "stages":
            out[key] = _stages(where, value)
        elif key in _CHOICES:
            if value not in _CHOICES[key] or not isinstance(value, str):
                raise ItemError(f"{where}: expected one of {_CHOICES[key]}, got {value!r}")
            out[key] = value
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise ItemError(f"{where}: expected true or false, got {value!r}")
            out[key] = value
        elif key in _INTS:
            low, high = _INTS[key]
            if not _int_in(value, low, high):
                raise ItemError(f"{where}: expected an integer in [{low}, {high}], got {value!r}")
            out[key] = value
        elif key in RANGES:
            low, low_in, high, high_in, nullable = RANGES[key]
            if value is None and nullable:
                out[key] = None
                continue
            if not _is_number(value) or not _in_range(value, low, low_in, high, high_in):
                raise ItemError(
                    f"{where}: expected a finite number "
                    f"{_range_text(low, low_in, high, high_in)}"
                    + (" or null" if nullable else "")
                    + f", got {value!r}"
                )
            out[key] = float(value)
        else:  # a Recipe field this module does not know yet
            raise ItemError(f"{where}: not settable from a manifest")
    return out
