"""Codes of a gallery, computed in batches (bounded memory: one batch of images at a time) and
cached on disk, one file per image, keyed by the representation's config and the image's
hash: ``<cache>/<config hash>/<image hash>.pt``."""

import hashlib
import io as _bytes
import json
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.toolbox.common import Source, check_int


def image_hash(image: Tensor) -> str:
    """SHA-256 of an image's float32 values and shape (the key of its cached code)."""
    t = image.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def config_hash(rep, space: str, normalize: bool) -> str:
    """SHA-256 (16 hex digits) of the space, the normalization and the representation's
    ``config()`` (with its class name: two representations that print alike but differ in
    kind do not share codes)."""
    cfg = {"space": space, "normalize": normalize}
    if space == "feature":
        cfg.update(cls=f"{type(rep).__module__}.{type(rep).__name__}", config=rep.config())
    text = json.dumps(_io.to_json(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Encoder:
    """Images -> flat codes [N, D] (float32, CPU): ``rep(rep.preprocess(images))`` flattened in
    feature space, the pixels themselves in pixel space; L2-normalized per image when
    ``normalize`` (the distance is then the chordal cosine distance)."""

    def __init__(
        self, rep, space: str, normalize: bool, device=None, cache_dir: Optional[str] = None
    ):
        self.rep, self.space, self.normalize = rep, space, normalize
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cache = Path(cache_dir) / config_hash(rep, space, normalize) if cache_dir else None
        self.hits = self.misses = 0

    def _compute(self, images: Tensor) -> Tensor:
        if self.space == "pixel":
            codes = images.flatten(1).float()
        else:
            x = images.to(self.device)
            with torch.no_grad():
                codes = self.rep(self.rep.preprocess(x)).flatten(1).float()
        if self.normalize:
            codes = torch.nn.functional.normalize(codes, dim=1)
        return codes.cpu()

    def _read(self, key: str) -> Optional[Tensor]:
        path = self.cache / f"{key}.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return None

    def _write(self, key: str, code: Tensor) -> None:
        buf = _bytes.BytesIO()
        torch.save(code.clone(), buf)
        try:
            _io.atomic_write_bytes(self.cache / f"{key}.pt", buf.getvalue())
        except OSError:  # a read-only cache is only slower, not wrong
            pass

    def encode(self, images: Tensor) -> Tensor:
        """Codes of one batch [B, 3, H, W] (through the cache when there is one)."""
        if self.cache is None:
            return self._compute(images)
        keys = [image_hash(im) for im in images]
        found = [self._read(k) for k in keys]
        todo = [i for i, c in enumerate(found) if c is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self._compute(images[todo])
            for j, i in enumerate(todo):
                found[i] = fresh[j]
                self._write(keys[i], fresh[j])
        return torch.stack(found)

    def encode_source(self, source: Source, batch_size: int) -> Tensor:
        """Codes [N, D] of a whole gallery, ``batch_size`` images at a time."""
        check_int(batch_size, "batch_size", source.fn)
        parts = []
        for start in range(0, len(source), batch_size):
            parts.append(
                self.encode(source.load(range(start, min(start + batch_size, len(source)))))
            )
        return torch.cat(parts) if parts else torch.zeros(0, 0)
