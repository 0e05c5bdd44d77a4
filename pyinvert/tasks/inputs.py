"""Input preparation shared by every task: images from files, arrays or tensors as one batch,
on the task's device and dtype, checked against the representation's smallest size, and in
the representation's optimized scale."""

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pyinvert import io as _io


def as_image_batch(images, fn: str = "invert") -> Tensor:
    """Images (Tensor [B, C, H, W] / [C, H, W] in [0, 1], a list of numpy HWC arrays, tensors or
    file paths) as one float Tensor [B, C, H, W]. Mixed gray/RGB lists become RGB."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(
                f"{fn}: expected images of shape (B, C, H, W), got {list(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"{fn}: expected floating point images in [0, 1], got {images.dtype}")
        if images.shape[1] not in (1, 3, 4):
            raise ValueError(
                f"{fn}: expected images with 1, 3 or 4 channels, got C={images.shape[1]}"
            )
        return check_finite(images, fn)
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    if not isinstance(images, (list, tuple)):
        raise TypeError(
            f"{fn}: expected images as a Tensor, a list of arrays or a list of "
            f"paths, got {type(images).__name__}"
        )
    if not images:
        raise ValueError(f"{fn}: expected at least one image, got an empty list")
    tensors = []
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            t = _io.load_image(im)
        elif isinstance(im, np.ndarray):
            t = _io.array_to_tensor(im, name=f"images[{i}]")
        elif isinstance(im, Tensor):
            t = im if im.dim() == 3 else None
            if t is None:
                raise ValueError(
                    f"{fn}: expected images[{i}] of shape (C, H, W), got {list(im.shape)}"
                )
        else:
            raise TypeError(
                f"{fn}: expected images[{i}] to be a path, numpy array or Tensor, "
                f"got {type(im).__name__}"
            )
        tensors.append(t.float()[:3])
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(
            f"{fn}: expected images of one size to batch them, got sizes "
            f"{sorted(sizes)}; invert each size separately"
        )
    channels = max(t.shape[0] for t in tensors)
    tensors = [t.expand(channels, -1, -1) if t.shape[0] == 1 else t for t in tensors]
    return check_finite(torch.stack(tensors), fn)


def check_finite(images: Tensor, fn: str) -> Tensor:
    """``images`` [B, ...], or a ValueError naming ``fn`` and the first image holding a NaN or
    an infinite value (for every representation, not only those whose ops check)."""
    if images.numel() == 0:
        return images
    bad = ~torch.isfinite(images.flatten(1)).all(1)
    if bool(bad.any()):
        raise ValueError(
            f"{fn}: expected finite pixel values, got NaN/Inf in image {int(bad.nonzero()[0, 0])}"
        )
    return images


def check_size(rep, H: int, W: int, fn: str) -> None:
    """ValueError naming ``fn`` when H x W is below the representation's ``min_size``."""
    if H < rep.min_size or W < rep.min_size:
        raise ValueError(
            f"{fn}: expected images of at least {rep.min_size}x{rep.min_size} "
            f"pixels for {rep.name}, got {H}x{W}"
        )


@dataclass
class Prepared:
    """Images ready for a task: ``batch`` [B, C, H, W] in [0, 1] on ``device``, ``x`` =
    preprocess(batch) (the optimized scale) and ``originals`` = postprocess(x) (the images as
    the representation sees them)."""

    batch: Tensor
    x: Tensor
    originals: Tensor
    device: torch.device

    @property
    def size(self):
        return tuple(self.x.shape[-2:])


def prepare_images(
    images, rep, fn: str, device=None, dtype=torch.float32, check: bool = True
) -> Prepared:
    """:func:`as_image_batch`, moved to ``device`` (None: where the images are) and ``dtype``,
    size-checked (``check``) and preprocessed by ``rep``."""
    batch = as_image_batch(images, fn)
    dev = torch.device(device) if device is not None else batch.device
    batch = batch.to(device=dev, dtype=dtype)
    if check:
        check_size(rep, *batch.shape[-2:], fn)
    x = rep.preprocess(batch)
    return Prepared(batch, x, rep.postprocess(x), dev)


def image_size_pair(image_size, fn: str, what: str = "image_size") -> tuple:
    """An int or (H, W) as (H, W) ints."""
    if image_size is None:
        raise ValueError(f"{fn}: expected {what}=(H, W), got None")
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    H, W = (int(v) for v in image_size)
    return H, W
