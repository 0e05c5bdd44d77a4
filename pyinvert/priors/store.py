"""Saving and loading learned priors: :func:`save`, :func:`load` (``"foe"``, ``"ica"`` or a
path).

A prior file is a :func:`pyinvert.training.save_checkpoint` file whose ``state["model"]`` is
the model's state dict and whose metadata holds the model's shape (:meth:`config`) and how it
was trained; a training checkpoint of :func:`pyinvert.priors.train` loads the same way.
The shipped files (``pyinvert/priors/weights/``) and how they were made are listed in
:data:`SHIPPED`.
"""

from pathlib import Path
from typing import Mapping, Optional

from pyinvert.priors.models import KINDS, LearnedModel, make_model
from pyinvert.training import checkpoint as ckpt

#: The folder of the shipped priors.
WEIGHTS = Path(__file__).resolve().parent / "weights"
#: Shipped priors by name: their file in :data:`WEIGHTS`.
SHIPPED = {"foe": "foe.pt", "ica": "ica.pt"}
_SHAPE_KEYS = ("kind", "size", "n", "channels", "expert", "basis_rows")


def save(path, model: LearnedModel, metadata: Optional[Mapping] = None) -> Path:
    """Write ``model`` (its state dict and shape, plus ``metadata``) atomically to ``path``."""
    if not isinstance(model, LearnedModel):
        raise TypeError(
            f"save: expected an ICA, FoE or SeparableFoE model, got {type(model).__name__}"
        )
    meta = {**dict(metadata or {}), **model.config()}
    state = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return ckpt.save_checkpoint(path, step=0, metadata=meta, state=state, rng={})


def load(name_or_path="foe", *, expect: Optional[Mapping] = None) -> LearnedModel:
    """A learned prior: a shipped one by name (``"foe"``, ``"ica"``) or a file.

    The file's metadata must describe a model (kind, size, n, channels, expert) matching its
    state dict; ``expect`` adds entries that must be equal (e.g. ``{"kind": "foe"}``).

    Args:
        name_or_path: "foe", "ica" or the path of a file written by :func:`save` or a
            :func:`pyinvert.priors.train` checkpoint. Default: "foe".
        expect: metadata that must match. Default: None.

    Returns:
        The model, in eval mode, its parameters not requiring grad.

    Raises:
        FileNotFoundError: no such file (or a shipped prior missing from the installation).
        ValueError: not a prior file, or metadata that do not match.

    Example:
        >>> model = load("foe")
        >>> model.kind, model.size, model.n
        ('foe', 5, 24)
    """
    fn = "load"
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        path = WEIGHTS / SHIPPED[name_or_path]
        expect = {"kind": name_or_path, **(expect or {})}
    elif isinstance(name_or_path, (str, Path)):
        path = Path(name_or_path)
    else:
        raise TypeError(
            f"{fn}: expected a shipped prior name {tuple(SHIPPED)} or a path, got "
            f"{type(name_or_path).__name__}"
        )
    payload = ckpt.load_checkpoint(path, expect=expect, caller=fn)
    meta = payload["metadata"]
    missing = [k for k in _SHAPE_KEYS if k not in meta]
    if missing or meta.get("kind") not in KINDS:
        raise ValueError(
            f"{fn}: {path} is not a learned prior (metadata without {missing or ['a known kind']})"
        )
    state = payload["state"].get("model") if isinstance(payload["state"], dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{fn}: {path} holds no model state")
    model = make_model(meta)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{fn}: {path}: the weights do not match its metadata ({error})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.metadata = dict(meta)
    return model


def as_model(prior, fn: str) -> LearnedModel:
    """A model from a model, a shipped name or a path."""
    if isinstance(prior, LearnedModel):
        return prior
    if isinstance(prior, (str, Path)):
        return load(prior)
    raise TypeError(
        f"{fn}: expected a learned prior (a model, 'foe', 'ica' or a path), got "
        f"{type(prior).__name__}"
    )
