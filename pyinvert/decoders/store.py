"""Decoder files: writing a trained decoder, finding one by name, loading it, and decoding.

A decoder file is a :func:`pyinvert.training.save_checkpoint` file whose metadata has
``kind: "pyinvert-decoder"`` (representation config, architecture, recipe, data hash, step,
seconds, command) and whose state holds the decoder's ``state_dict`` (a training checkpoint
also holds the optimizer's; it loads the same way).

:func:`load` finds a name as the model weights are found (:mod:`pyinvert.models.zoo`):

1. ``$PYINVERT_WEIGHTS/decoder-<name>.pt``, when the environment variable names a folder;
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/decoder-<name>.pt``;
3. the files shipped in ``pyinvert/decoders/weights/`` (:data:`SHIPPED`).
"""

import os
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import Tensor

from pyinvert.decoders.architecture import Decoder, code_map
from pyinvert.models.zoo import WEIGHTS_ENV
from pyinvert.training import load_checkpoint, save_checkpoint

KIND = "pyinvert-decoder"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: The shipped decoders: name -> (file in weights/, the representation name it inverts).
#: "hog" (width 4, 20-30 ms per 224-px image on one core) is the default of
#: ``invert(method="decoder")``; "hog-large" (width 8) is slower and closer to the photos.
SHIPPED: Dict[str, tuple] = {
    "hog": ("decoder-hog.pt", "hog"),
    "hog-large": ("decoder-hog-large.pt", "hog"),
    "dsift": ("decoder-dsift.pt", "dsift"),
}


def save_decoder(path, decoder: Decoder, metadata: dict, step: int, optimizer=None) -> Path:
    """Write ``decoder`` (and ``optimizer``'s state, for a resumable checkpoint) atomically."""
    state = {"decoder": decoder.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    meta = {**metadata, "kind": KIND, "architecture": dict(decoder.config)}
    return save_checkpoint(path, step=step, metadata=meta, state=state)


def _candidates(name: str):
    file = f"decoder-{name}.pt"
    out = []
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        out.append((f"${WEIGHTS_ENV}", Path(folder).expanduser() / file))
    out.append(("torch hub cache", Path(torch.hub.get_dir()) / "checkpoints" / file))
    if name in SHIPPED:
        out.append(("shipped", WEIGHTS_DIR / SHIPPED[name][0]))
    return out


def find_decoder(name_or_path) -> Path:
    """The file of a decoder name (see the module docstring) or an existing path."""
    fn = "decoders.load"
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{fn}: expected a decoder name or path, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path).lower()
    looked = _candidates(name) if "/" not in name and not name.endswith(".pt") else []
    for _, p in looked:
        if p.is_file():
            return p
    where = "; ".join(f"{d}: {p}" for d, p in looked) or "(not a name)"
    raise FileNotFoundError(
        f"{fn}: no decoder file {str(name_or_path)!r} (shipped names: {sorted(SHIPPED)}; "
        f"looked in {where}); train one with `pyinvert train-decoder`"
    )


def load(name_or_path, *, device=None, expect: Optional[dict] = None) -> Decoder:
    """A trained decoder, in eval mode, with its file's ``metadata`` as an attribute.

    Args:
        name_or_path: a shipped or installed name ("hog") or a decoder / checkpoint file.
        device: where to put it. Default: None (CPU).
        expect: metadata entries that must match (e.g. ``{"representation": ...}``).

    Returns:
        The :class:`Decoder` (``decoder.metadata``: the file's metadata; ``decoder.step``).

    Example:
        >>> dec = load("hog")
        >>> dec.metadata["representation"]["name"]
        'hog'
    """
    path = find_decoder(name_or_path)
    ck = load_checkpoint(path, expect=expect, caller="decoders.load")
    meta = ck["metadata"]
    if meta.get("kind") != KIND or "decoder" not in ck["state"]:
        raise ValueError(
            f"decoders.load: expected a decoder file (metadata kind {KIND!r}) at {path}, got "
            f"kind {meta.get('kind')!r}"
        )
    decoder = Decoder(**meta["architecture"])
    decoder.load_state_dict(ck["state"]["decoder"])
    decoder.metadata = dict(meta)
    decoder.step = ck["step"]
    decoder.source = str(path)
    if device is not None:
        decoder.to(device)
    return decoder.eval()


def same_representation(a: dict, b: dict) -> bool:
    """Two representation configs equal up to the backend (fused and reference kernels
    compute the same code)."""
    strip = lambda c: {k: v for k, v in c.items() if k != "backend"}  # noqa: E731
    return strip(a) == strip(b)


def check_representation(decoder: Decoder, rep, fn: str) -> None:
    """A ValueError naming ``fn`` when ``decoder`` was trained on another representation."""
    meta = getattr(decoder, "metadata", None)
    if meta is None or "representation" not in meta:
        return
    if not same_representation(meta["representation"], rep.config()):
        raise ValueError(
            f"{fn}: the decoder was trained on representation {meta['representation']!r}, "
            f"expected one for {rep.config()!r}"
        )


@torch.no_grad()
def decode(decoder: Decoder, rep, code: Tensor, image_size) -> Tensor:
    """Images [B, C_img, H, W] in [0, 1] (clamped) decoded from ``rep``'s codes ``code``
    ([B, ...], in :meth:`forward`'s layout) for images of ``image_size`` (H, W)."""
    p = next(decoder.parameters())
    m = code_map(rep, code, image_size).to(device=p.device, dtype=p.dtype)
    # channels-last: oneDNN's 3 x 3 convolutions with few channels run 2-2.5x faster so
    # (the values agree to float32 rounding)
    decoder.to(memory_format=torch.channels_last)
    m = m.contiguous(memory_format=torch.channels_last)
    return decoder(m, image_size).clamp(0, 1).contiguous()
