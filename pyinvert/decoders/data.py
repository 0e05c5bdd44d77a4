"""Training images for the decoders: random crops, flips and scales of photos, where sample j
of step t is a pure function of ``(seed, t, j)``.

So a run's batches do not depend on the number of DataLoader workers, a resumed run draws the
batches the killed one would have drawn (no sampler or worker state to save), and under
``torchrun`` rank r of R takes samples ``r * b ... (r + 1) * b - 1`` of each global batch
of ``R * b``: the same global batch as one process.
"""

from pathlib import Path
from typing import Iterator, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pyinvert import io
from pyinvert.training import data_hash
from pyinvert.data.photos import training_photos

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: A mixing constant for the per-sample seeds (the 64-bit golden ratio).
_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, step: int, j: int) -> int:
    """The generator seed of sample ``j`` of step ``step`` (distinct, reproducible)."""
    return (int(seed) * _MIX + int(step) * 1_000_003 + int(j)) % (2**63 - 1)


def image_files(folder) -> List[Path]:
    """The image files under ``folder`` (recursively), sorted; a ValueError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"decoders.train: expected data to be a folder of images, got {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"decoders.train: no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}"
        )
    return files


class CropDataset(Dataset):
    """Item ``i = step * global_batch + j``: a random crop of ``crop`` x ``crop`` pixels of a
    random photo at a random scale, flipped left-right with probability 1/2, all drawn from
    :func:`sample_seed` ``(seed, step, j)``.

    Args:
        photos: image files or tensors [3, H, W] in [0, 1].
        crop: the crop size in pixels.
        global_batch: samples per step over all processes.
        seed: the run's seed.
        scales: (lo, hi): the photo is resized by a factor drawn uniformly in [lo, hi] (then
            at least to the crop size). Default: (0.5, 1.0).
    """

    def __init__(
        self,
        photos: Sequence[Union[str, Path, Tensor]],
        crop: int,
        global_batch: int,
        seed: int,
        scales: Tuple[float, float] = (0.5, 1.0),
    ):
        if not photos:
            raise ValueError("decoders.train: expected at least one training image, got none")
        lo, hi = (float(v) for v in scales)
        if not 0 < lo <= hi:
            raise ValueError(f"decoders.train: expected scales 0 < lo <= hi, got {scales!r}")
        self.photos = list(photos)
        self.crop, self.global_batch, self.seed = int(crop), int(global_batch), int(seed)
        self.scales = (lo, hi)

    def __len__(self) -> int:  # the stream is endless; the sampler picks the indices
        return 2**62

    def _photo(self, k: int) -> Tensor:
        p = self.photos[k]
        return p if isinstance(p, Tensor) else io.load_image(p)[:3]

    def __getitem__(self, i: int) -> Tensor:
        step, j = divmod(int(i), self.global_batch)
        g = torch.Generator().manual_seed(sample_seed(self.seed, step, j))
        u = torch.rand(5, generator=g, dtype=torch.float64).tolist()
        image = self._photo(min(int(u[0] * len(self.photos)), len(self.photos) - 1))
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        H, W = image.shape[-2:]
        lo, hi = self.scales
        f = max(lo + (hi - lo) * u[1], self.crop / min(H, W))
        region = min(int(round(self.crop / f)), H, W)  # the crop's side in the photo
        y = int(u[2] * (H - region + 1)) if H > region else 0
        x = int(u[3] * (W - region + 1)) if W > region else 0
        patch = image[:, y : y + region, x : x + region].unsqueeze(0).float()
        if region != self.crop:
            patch = F.interpolate(
                patch,
                size=(self.crop, self.crop),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        patch = patch[0].clamp(0, 1)
        return patch.flip(-1) if u[4] < 0.5 else patch


class StepSampler(Sampler):
    """Batches of indices of steps ``start, start + 1, ... stop - 1``: this rank's
    ``batch_size`` samples of each global batch of ``world * batch_size``."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.stop = int(start), int(stop)
        self.batch_size, self.rank, self.world = int(batch_size), int(rank), int(world)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[List[int]]:
        G = self.batch_size * self.world
        for step in range(self.start, self.stop):
            first = step * G + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))


def resolve_photos(data) -> Tuple[list, str, str]:
    """(photos, description, data hash) of ``data``: a folder, a list of files or tensors,
    or "builtin" (:func:`pyinvert.data.photos.training_photos`)."""
    if isinstance(data, str) and data == "builtin":
        photos = list(training_photos().values())
        return photos, "builtin:training_photos", data_hash(photos)
    if isinstance(data, (str, Path)):
        files = image_files(data)
        return files, str(data), data_hash(files)
    if isinstance(data, (list, tuple)) and data:
        if all(isinstance(p, Tensor) for p in data):
            return list(data), f"{len(data)} tensors", data_hash(data)
        if all(isinstance(p, (str, Path)) for p in data):
            files = [Path(p) for p in data]
            return files, f"{len(files)} files", data_hash(files)
    raise TypeError(
        f"decoders.train: expected data to be a folder, 'builtin' or a non-empty list of files "
        f"or [3, H, W] tensors, got {type(data).__name__}"
    )


def loader(
    dataset: CropDataset,
    start: int,
    stop: int,
    batch_size: int,
    rank: int,
    world: int,
    workers: int,
) -> DataLoader:
    """The DataLoader of steps [start, stop) for this rank (``workers`` processes)."""
    return DataLoader(
        dataset,
        batch_sampler=StepSampler(start, stop, batch_size, rank, world),
        num_workers=int(workers),
        persistent_workers=False,
    )
