"""Checkpoints for the training loops (learned priors, decoders): one file per run, written
atomically, with the metadata that says what was trained on what, and every random state
needed to resume a killed run exactly where it stopped.

A checkpoint is a dict saved with ``torch.save``::

    {"format": 1, "step": int, "metadata": {...}, "state": {...}, "rng": {...}}

``metadata`` is what must match to resume or to use the weights (representation config,
recipe, data hash, model shape); ``state`` holds the model's and optimizer's state dicts and
anything else the loop needs; ``rng`` the torch, numpy and Python generator states.
"""

import hashlib
import io as _bytes_io
import random
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np
import torch

from pyinvert import io

FORMAT = 1


def rng_state(generator: Optional[torch.Generator] = None) -> dict:
    """The global torch, numpy and Python random states (and ``generator``'s, when given)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping, generator: Optional[torch.Generator] = None) -> None:
    """Restore what :func:`rng_state` returned (``generator`` from its saved state)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if generator is not None:
        if "generator" not in state:
            raise ValueError("load_checkpoint: the checkpoint holds no generator state to restore")
        generator.set_state(state["generator"])


def data_hash(items: Iterable) -> str:
    """A short SHA-256 of training data: file paths are hashed by their bytes, tensors by
    their values, shape and dtype (the order counts)."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Tensor):
            t = item.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(Path(item).read_bytes())
    return h.hexdigest()[:16]


def save_checkpoint(path, *, step: int, metadata: Mapping, state: Mapping, rng=None) -> Path:
    """Write a checkpoint atomically (a killed write leaves the previous file whole).

    Args:
        path: the file.
        step: the number of steps done.
        metadata: what must match to resume (JSON-like values).
        state: state dicts and loop state.
        rng: :func:`rng_state`'s result. Default: the current global states.
    """
    buffer = _bytes_io.BytesIO()
    payload = {
        "format": FORMAT,
        "step": int(step),
        "metadata": dict(metadata),
        "state": dict(state),
        "rng": rng_state() if rng is None else rng,
    }
    torch.save(payload, buffer)
    return io.atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, *, expect: Optional[Mapping] = None, caller: str = "load_checkpoint"):
    """Read a checkpoint and check its metadata.

    Args:
        path: the file.
        expect: metadata entries that must be equal (e.g. the representation config); a
            missing or different entry raises ValueError naming it, with both values.
        caller: the public function named in errors.

    Returns:
        The checkpoint dict (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{caller}: {path} is not a readable checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{caller}: expected a pyinvert checkpoint (format {FORMAT}) at {path}, got "
            f"{type(payload).__name__} with format {getattr(payload, 'get', lambda k: None)('format')!r}"
        )
    found = payload["metadata"]
    for key, want in (expect or {}).items():
        if key not in found:
            raise ValueError(f"{caller}: checkpoint {path} has no {key!r} (expected {want!r})")
        if found[key] != want:
            raise ValueError(
                f"{caller}: checkpoint {path} was made with {key}={found[key]!r}, expected "
                f"{key}={want!r}"
            )
    return payload
