"""The names of a CNN's layers as people write them: ``"cnn:MODEL:LAYER[,LAYER...]"``
specifications, and the list of valid layers an unknown-layer error shows."""

from typing import List, Optional, Sequence, Tuple

from torch import nn

from pyinvert.models import layer_names
from pyinvert.models.zoo import _CLASSES as _ZOO_CLASSES


def valid_layers_text(
    names: Sequence[str], limit: int = 600, model_name: Optional[str] = None
) -> str:
    """The valid names for an error message; a long list is shortened to its top-level blocks
    (names with at most one dot, e.g. ``features.6``, ``classifier.1``) plus a pointer."""
    text = ", ".join(names)
    if len(text) <= limit:
        return text
    short = [n for n in names if n.count(".") <= 1]
    where = (
        f"`pyinvert models {model_name}` lists them all"
        if model_name
        else "see pyinvert.models.layer_names"
    )
    if short and len(short) < len(names):
        text = ", ".join(short)
        if len(text) <= 2 * limit:
            return f"{text} (and {len(names) - len(short)} sublayers: {where})"
    return text[:limit].rsplit(", ", 1)[0] + f", ... ({len(names)} in all; {where})"


def suggested_layers(model: nn.Module) -> List[str]:
    """The layer names an error message lists: the zoo's curated list
    (:func:`pyinvert.models.layer_names`, in computation order, no plain containers or
    dropouts) for a zoo model, every submodule name otherwise."""
    if isinstance(model, tuple(_ZOO_CLASSES.values())):
        try:
            return layer_names(model)
        except Exception:  # noqa: BLE001 (an unusual input size: fall back to all names)
            pass
    return [n for n, _ in model.named_modules() if n]


def parse_spec(spec: str, fn: str = "invert") -> Tuple[str, List[str]]:
    """``"cnn:MODEL:LAYER[,LAYER...]"`` -> (model, [layers]) (``fn`` names the caller in
    errors)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0].lower() != "cnn" or not parts[1] or not parts[2]:
        raise ValueError(
            f"{fn}: expected a CNN representation as 'cnn:MODEL:LAYER[,LAYER...]', got {spec!r}"
        )
    layers = [s.strip() for s in parts[2].split(",") if s.strip()]
    if not layers:
        raise ValueError(f"{fn}: expected at least one layer in {spec!r}")
    return parts[1], layers
