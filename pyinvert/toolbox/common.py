"""What the toolbox's functions share: the figure grid, the gallery sources (folders, lists,
tensors) and the checks of their common arguments."""

import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.figures.drawing import _grid, _titled_tiles
from pyinvert.models.imagenet import prepare_image
from pyinvert.representations import as_representation

#: The image files a gallery folder holds (lower-case suffixes).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def titled_grid(
    images, titles: Sequence[str], columns: int, height: Optional[int] = None
) -> np.ndarray:
    """Tiles of one height (``height``, else the images' own, at least 96 px) with titles, in
    rows of ``columns``: an HWC uint8 RGB array."""
    h = height or max([96] + [int(im.shape[-2]) for im in images])
    return _grid(_titled_tiles(list(images), list(titles), h), max(1, columns))


class Source:
    """A gallery: images from a folder (every image file, sorted), a list of paths, or a
    tensor [N, C, H, W] in [0, 1]; each image fitted to ``size`` x ``size`` RGB (the ImageNet
    evaluation crop, :func:`pyinvert.models.imagenet.prepare_image`), loaded only when asked
    for (so a folder is never held in memory whole)."""

    def __init__(self, images, size: Optional[int], fn: str):
        self.fn, self.size = fn, size
        self.tensor: Optional[Tensor] = None
        self.paths: List[Path] = []
        if isinstance(images, Tensor):
            if images.dim() == 3:
                images = images[None]
            if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
                raise ValueError(
                    f"{fn}: expected images as a float Tensor (N, C, H, W) with "
                    f"C = 1 or 3, got {images.dtype} {list(images.shape)}"
                )
            self.tensor = images.detach()
        elif isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
            self.paths = sorted(
                p
                for p in Path(images).iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not self.paths:
                raise ValueError(
                    f"{fn}: expected image files ({', '.join(IMAGE_SUFFIXES)}) "
                    f"in {images}, found none"
                )
        elif isinstance(images, (str, os.PathLike)):
            self.paths = [Path(images)]
        elif (
            isinstance(images, (list, tuple))
            and images
            and all(isinstance(p, (str, os.PathLike)) for p in images)
        ):
            self.paths = [Path(p) for p in images]
        else:
            raise TypeError(
                f"{fn}: expected images as a folder, a list of paths or a Tensor "
                f"(N, C, H, W), got {type(images).__name__}"
            )

    def __len__(self) -> int:
        return self.tensor.shape[0] if self.tensor is not None else len(self.paths)

    @property
    def names(self) -> List[str]:
        if self.tensor is not None:
            return [f"image{i:03d}" for i in range(len(self))]
        return [p.name for p in self.paths]

    def _fit(self, image: Tensor) -> Tensor:
        return fit_image(image, self.size)

    def load(self, indices: Sequence[int]) -> Tensor:
        """The fitted images [len(indices), 3, size, size] (ValueError naming an unreadable
        file)."""
        if self.tensor is not None:
            out = [self._fit(self.tensor[i]) for i in indices]
        else:
            out = [self._fit(_io.load_image(self.paths[i])[:3]) for i in indices]
        sizes = {tuple(t.shape) for t in out}
        if len(sizes) > 1:
            raise ValueError(
                f"{self.fn}: expected images of one size, got {sorted(sizes)}; "
                f"give size= to fit them"
            )
        return torch.stack(out) if out else torch.zeros(0, 3, self.size or 1, self.size or 1)


def fit_image(image: Tensor, size: Optional[int]) -> Tensor:
    """An image [C, H, W] as the galleries fit theirs: RGB, then the ImageNet evaluation crop
    to ``size`` x ``size`` unless it already is that size (None: as it is). Queries go
    through the same rule, so that a query equal to a gallery image has the same code."""
    image = image.float()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image.contiguous()
    return prepare_image(image.cpu(), size).to(image.device)


def check_int(value, name: str, fn: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{fn}: expected {name} to be an int >= {low}, got {value!r}")
    return value


def check_choice(value, name: str, choices: Sequence[str], fn: str) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: expected {name} in {tuple(choices)}, got {value!r}")
    return value


def space_representation(space: str, representation, device, fn: str):
    """The representation codes are compared in: ``representation`` (built, on ``device``)
    for ``space="feature"``, None for ``space="pixel"`` (pixels are compared as they are)."""
    check_choice(space, "space", ("feature", "pixel"), fn)
    if space == "pixel":
        return None
    if representation is None:
        raise ValueError(f"{fn}: expected a representation for space='feature', got None")
    rep = as_representation(representation, fn=fn)
    return rep if device is None else rep.to(device)
