"""Representations to invert: modules mapping the optimized tensor to a code.

The protocol (what :func:`pyinvert.invert` needs), so that CNN layers plug in the same way:

CNN layers: :class:`pyinvert.representations.cnn.CNN` (also exported here), "cnn:MODEL:LAYER" names.

* ``forward(x) -> code``: the representation Phi on the optimized tensor x, [B, ...].
* ``preprocess(images) -> x``: pixels in [0, 1], [B, C, H, W], to the optimized tensor's scale
  (e.g. ``255 gray - 128`` for HOG, as in the authors' code).
* ``postprocess(x) -> images``: back to pixels in [0, 1] (clamped), [B, C', H, W].
* ``channels``: the number of channels of x.
* ``min_size``: the smallest H and W accepted.
* ``name`` and ``config()`` (JSON-friendly) for the records.

A representation has no state changed by ``forward`` and no device fixed at construction.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from pyinvert import features as _features
from pyinvert import reference as _reference

#: Names accepted by :func:`make_representation`.
REPRESENTATIONS = ("hog", "hogb", "dsift")

# ITU-R BT.601 luma, as MATLAB's rgb2gray (used by the authors).
_GRAY = (0.2989, 0.5870, 0.1140)


def to_gray(images: Tensor) -> Tensor:
    """[B, C, H, W] in [0, 1] with C in (1, 3, 4) to [B, 1, H, W] (alpha ignored)."""
    C = images.shape[1]
    if C == 1:
        return images
    if C in (3, 4):
        w = images.new_tensor(_GRAY).view(1, 3, 1, 1)
        return (images[:, :3] * w).sum(1, keepdim=True)
    raise ValueError(f"to_gray: expected images with 1, 3 or 4 channels, got C={C}")


class Representation(nn.Module):
    """Base class: gray images in the authors' pixel scale ``255 gray - 128``."""

    name = "representation"
    channels = 1
    offset = 128.0
    scale = 255.0

    @property
    def min_size(self) -> int:
        return 1

    def preprocess(self, images: Tensor) -> Tensor:
        return to_gray(images) * self.scale - self.offset

    def postprocess(self, x: Tensor) -> Tensor:
        return ((x + self.offset) / self.scale).clamp(0, 1)

    def config(self) -> dict:
        return {"name": self.name}


class HOGRepresentation(Representation):
    """VLFeat's UoCTTI HOG (31 dimensions per cell) of the gray image; HOGb with bilinear
    orientation assignment.

    Args:
        cell_size: HOG cell size. Default: 8.
        bilinear_orientations: HOGb. Default: False.
        backend: "fused" (pyinvert.hog) or "reference" (pyinvert.reference.hog). Default: "fused".

    Example:
        >>> rep = HOGRepresentation()
        >>> rep(rep.preprocess(torch.rand(2, 3, 32, 32))).shape
        torch.Size([2, 31, 4, 4])
    """

    def __init__(self, cell_size: int = 8, bilinear_orientations: bool = False,
                 backend: str = "fused"):
        super().__init__()
        _check_backend(backend)
        self.cell_size = cell_size
        self.bilinear_orientations = bilinear_orientations
        self.backend = backend
        self.name = "hogb" if bilinear_orientations else "hog"

    @property
    def min_size(self) -> int:
        # At least half a cell (pyinvert.hog's own rule); 3 pixels for a gradient.
        return max(self.cell_size - self.cell_size // 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        fn = _features.hog if self.backend == "fused" else _reference.hog
        return fn(x, cell_size=self.cell_size, bilinear_orientations=self.bilinear_orientations)

    def config(self) -> dict:
        return {"name": self.name, "cell_size": self.cell_size,
                "bilinear_orientations": self.bilinear_orientations, "backend": self.backend}


class DSIFTRepresentation(Representation):
    """Dense SIFT (VLFeat's vl_dsift) descriptors of the gray image.

    Args:
        bin_size: spatial bin size. Default: 8.
        step: sampling step. Default: 4.
        backend: "fused" or "reference". Default: "fused".
    """

    name = "dsift"

    def __init__(self, bin_size: int = 8, step: int = 4, backend: str = "fused"):
        super().__init__()
        _check_backend(backend)
        self.bin_size = bin_size
        self.step = step
        self.backend = backend

    @property
    def min_size(self) -> int:
        return 3 * self.bin_size + 1  # one descriptor (4 x 4 bins) fits

    def forward(self, x: Tensor) -> Tensor:
        fn = _features.dsift if self.backend == "fused" else _reference.dsift
        desc, _ = fn(x, step=self.step, bin_size=self.bin_size)
        return desc

    def config(self) -> dict:
        return {"name": self.name, "bin_size": self.bin_size, "step": self.step,
                "backend": self.backend}


def _check_backend(backend):
    if backend not in ("fused", "reference"):
        raise ValueError(f"invert: expected backend in ('fused', 'reference'), got {backend!r}")


def make_representation(name, *, backend: str = "fused", recipe=None,
                        weights="imagenet") -> Representation:
    """A representation by name ("hog", "hogb", "dsift", "cnn:MODEL:LAYER[,LAYER...]"), or the
    module itself.

    Args:
        name: a name or a :class:`Representation`-like module (returned as it is).
        backend: "fused" or "reference". Default: "fused".
        recipe: a :class:`pyinvert.optim.recipes.Recipe` giving the DSIFT bin size and step; None
            uses the DSIFT defaults. Default: None.
        weights: a CNN's weights: "imagenet", None (random initialization) or a path (see
            :func:`pyinvert.models.load_model`). Default: "imagenet".

    Returns:
        The representation module.
    """
    if isinstance(name, nn.Module):
        return name
    if not isinstance(name, str):
        raise TypeError(f"invert: expected representation to be a str or an nn.Module, "
                        f"got {type(name).__name__}")
    key = name.lower()
    if key.startswith("cnn:"):
        from pyinvert.representations.cnn import cnn_from_spec
        return cnn_from_spec(name, weights=weights)
    if key == "hog":
        return HOGRepresentation(backend=backend)
    if key == "hogb":
        return HOGRepresentation(bilinear_orientations=True, backend=backend)
    if key == "dsift":
        if recipe is None:
            return DSIFTRepresentation(backend=backend)
        return DSIFTRepresentation(bin_size=recipe.dsift_bin_size, step=recipe.dsift_step,
                                   backend=backend)
    raise ValueError(f"invert: expected representation in {REPRESENTATIONS} or "
                     f"'cnn:MODEL:LAYER[,LAYER...]', got {name!r}")

