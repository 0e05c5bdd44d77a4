"""The options of a batch job, and every bound the job enforces.

Every count a job takes has an upper bound, so that a typo (``restarts: 1e300``) is an error
and not a job that spins, grows its memory and cannot be stopped:

==========================  ==========================================  ====================
what                        bound                                       when exceeded
==========================  ==========================================  ====================
``--steps``                 1 .. :data:`MAX_STEPS`                      usage error (exit 2)
``--batch-size``            1 .. :data:`MAX_BATCH_SIZE`                 usage error
``--restarts``, ``restarts``  1 .. :data:`MAX_RESTARTS`                   usage / manifest error
``--max-batch-pixels``      1 .. :data:`MAX_BATCH_PIXELS_LIMIT`         usage error
items in a manifest         :data:`MAX_ITEMS`                           manifest error
a manifest's size           :data:`MAX_MANIFEST_BYTES`                  manifest error
an image's pixels (H x W)   :data:`MAX_IMAGE_PIXELS`                    the item fails
H x W x restarts            :data:`MAX_BATCH_PIXELS_LIMIT`              the item fails
stages / iterations         :data:`MAX_STAGES` / :data:`MAX_STEPS` in   the item fails
(``overrides.stages``)      all
``jitter``, DSIFT sizes     see :mod:`pyinvert.batch.overrides`         the item fails
==========================  ==========================================  ====================
"""

from dataclasses import dataclass
from typing import Optional

import torch

#: Iterations of one inversion at most (``--steps``, and the sum of an override's stages).
MAX_STEPS = 100_000
#: Images optimized together at most (``--batch-size``).
MAX_BATCH_SIZE = 4096
#: Reconstructions of one image at most (``--restarts`` and the manifest's ``restarts``).
MAX_RESTARTS = 100
#: Default ceiling on the pixels (images x restarts x H x W) optimized in one call.
MAX_BATCH_PIXELS = 64 * 256 * 256
#: The largest ``--max-batch-pixels`` accepted (2**30 pixels: 4 GiB per float32 copy).
MAX_BATCH_PIXELS_LIMIT = 1 << 30
#: Pixels (H x W) of one image at most; a larger image fails its item (OpenCV's own decoder
#: limit is 2**30).
MAX_IMAGE_PIXELS = 1 << 26
#: Items of one manifest at most.
MAX_ITEMS = 1_000_000
#: Bytes of one manifest at most (256 MiB), checked before it is read.
MAX_MANIFEST_BYTES = 1 << 28
#: Stages of an ``overrides.stages`` schedule at most.
MAX_STAGES = 100


class UsageError(ValueError):
    """An invalid option of the job (exit status 2)."""


def _bounded_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"batch: expected {name} to be an int in [{low}, {high}], got {value!r}")


@dataclass
class BatchOptions:
    """Options of a batch job (see :func:`pyinvert.batch.run_batch` for each one)."""

    steps: Optional[int] = None
    batch_size: int = 32
    device: Optional[str] = None
    seed: int = 0
    recipe: str = "cvpr2015"
    restarts: int = 1
    backend: str = "fused"
    retry_failed: bool = False
    max_batch_pixels: int = MAX_BATCH_PIXELS
    verbose: bool = True
    dist_timeout: float = 86400.0

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first invalid option."""
        if self.steps is not None:
            _bounded_int("steps", self.steps, 1, MAX_STEPS)
        _bounded_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _bounded_int("restarts", self.restarts, 1, MAX_RESTARTS)
        _bounded_int("max_batch_pixels", self.max_batch_pixels, 1, MAX_BATCH_PIXELS_LIMIT)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"batch: expected seed to be an int, got {self.seed!r}")
        if self.recipe not in ("cvpr2015", "ijcv2016"):
            raise UsageError(
                f"batch: expected recipe in ('cvpr2015', 'ijcv2016'), got {self.recipe!r}"
            )
        if self.backend not in ("fused", "reference"):
            raise UsageError(
                f"batch: expected backend in ('fused', 'reference'), got {self.backend!r}"
            )
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise UsageError(
                    f"batch: expected device 'cpu' or 'cuda[:N]', got {self.device!r} ({error})"
                ) from None
            if dev.type not in ("cpu", "cuda"):
                raise UsageError(f"batch: expected device 'cpu' or 'cuda[:N]', got {self.device!r}")
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise UsageError(
                    f"batch: device {self.device!r} asked for, but CUDA is not available"
                )
