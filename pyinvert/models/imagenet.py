"""ImageNet conventions of torchvision's checkpoints: input normalization, the standard
resize + center crop, and the 1000 class names in the networks' output order.
"""

import functools
import os
from pathlib import Path
from typing import List, Tuple, Union

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from pyinvert.io import array_to_tensor, load_image

#: Per-channel (R, G, B) mean of ImageNet in [0, 1], as torchvision's checkpoints expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: Per-channel (R, G, B) standard deviation of ImageNet in [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)

_CLASSES_FILE = Path(__file__).resolve().parent / "imagenet_classes.txt"


def _check_images(x, fn):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected images to be a Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(
            f"{fn}: expected images of shape (B, 3, H, W) or (3, H, W), got {list(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{fn}: expected floating-point images, got {x.dtype}")


def _stats(x):
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape)
    return mean, std


def normalize(images: Tensor) -> Tensor:
    """Map RGB images in [0, 1] to the networks' input: ``(x - IMAGENET_MEAN) / IMAGENET_STD``
    per channel. Differentiable.

    Args:
        images: RGB images in [0, 1].

    Returns:
        The normalized images (same shape, dtype and device).

    Shape:
        - Input: (B, 3, H, W) or (3, H, W).
        - Output: same as the input.

    Example:
        >>> normalize(torch.full((1, 3, 2, 2), 0.5))[0, :, 0, 0]
        tensor([0.0655, 0.1964, 0.4178])
    """
    _check_images(images, "normalize")
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize(x: Tensor) -> Tensor:
    """Inverse of ``normalize``: ``x * IMAGENET_STD + IMAGENET_MEAN`` (not clamped).

    Args:
        x: network inputs.

    Returns:
        RGB images, in [0, 1] when ``x`` came from ``normalize`` of such images.

    Shape:
        - Input: (B, 3, H, W) or (3, H, W).
        - Output: same as the input.

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
        True
    """
    _check_images(x, "denormalize")
    mean, std = _stats(x)
    return x * std + mean


def _to_chw(image, fn) -> Tensor:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, np.ndarray):
        return array_to_tensor(image, name="image")
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"{fn}: expected image of shape (C, H, W) with C = 1 or 3, "
                f"(B, C, H, W) or (H, W), got {list(image.shape)}"
            )
        return image
    raise TypeError(
        f"{fn}: expected image to be a path, a numpy array or a Tensor, got {type(image).__name__}"
    )


def _resize_crop(chw: Tensor, size: int, short: int) -> Tensor:
    C, H, W = chw.shape
    if H < 1 or W < 1:
        raise ValueError(f"prepare_image: expected a non-empty image, got {C}x{H}x{W}")
    if H <= W:
        h, w = short, max(size, int(round(W * short / H)))
    else:
        h, w = max(size, int(round(H * short / W))), short
    a = chw.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()
    shrink = h < H or w < W
    a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if a.ndim == 2:
        a = a[:, :, None]
    top, left = (h - size) // 2, (w - size) // 2
    a = a[top : top + size, left : left + size]
    out = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    return out.expand(3, -1, -1).clone() if out.shape[0] == 1 else out


def prepare_image(image, size: int = 224) -> Tensor:
    """torchvision's ImageNet evaluation crop: resize so that the shorter side is
    ``round(256 * size / 224)`` (256 for size 224), then take the central ``size`` x ``size``.

    Resizing uses OpenCV's area interpolation when shrinking (an anti-aliased box filter,
    close to torchvision/PIL's antialiased bilinear) and bilinear when enlarging. Gray images
    are repeated to 3 channels. The result is in [0, 1], not normalized: pass it to
    ``normalize`` for a network. Not differentiable (a preprocessing step).

    Args:
        image: a file path, an HWC / HW numpy array (uint8, uint16 or float in [0, 1]), or a
            tensor (C, H, W) / (H, W) / (B, C, H, W) in [0, 1] with C = 1 or 3.
        size: side of the square output. Default: 224.

    Returns:
        float32 RGB crop(s) in [0, 1] (tensors keep their device and floating dtype).

    Shape:
        - Output: (3, size, size), or (B, 3, size, size) for a batch input.

    Example:
        >>> from pyinvert.data import sample_path
        >>> prepare_image(sample_path("camera")).shape
        torch.Size([3, 224, 224])
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"prepare_image: expected size to be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"prepare_image: expected size >= 1, got {size}")
    short = int(round(256 * size / 224))
    if isinstance(image, Tensor) and image.dim() == 4:
        if image.shape[1] not in (1, 3):
            raise ValueError(
                f"prepare_image: expected image of shape (B, C, H, W) with "
                f"C = 1 or 3, got {list(image.shape)}"
            )
        crops = [_resize_crop(im, size, short) for im in image]
        out = torch.stack(crops) if crops else image.new_zeros(0, 3, size, size).float().cpu()
    else:
        out = _resize_crop(_to_chw(image, "prepare_image"), size, short)
    if isinstance(image, Tensor):
        dtype = image.dtype if image.is_floating_point() else torch.float32
        out = out.to(device=image.device, dtype=dtype)
    return out


@functools.lru_cache(maxsize=1)
def _classes() -> Tuple[str, ...]:
    names = tuple(_CLASSES_FILE.read_text(encoding="utf-8").splitlines())
    if len(names) != 1000:
        raise RuntimeError(
            f"imagenet_classes: {_CLASSES_FILE} holds {len(names)} names, "
            f"expected 1000 (damaged installation)"
        )
    return names


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet class names, in the order of the networks' outputs (torchvision's
    names: 281 "tabby", 967 "espresso", ...).

    Example:
        >>> names = imagenet_classes()
        >>> len(names), names[281], names[968]
        (1000, 'tabby', 'cup')
    """
    return list(_classes())


def decode(indices) -> Union[str, list]:
    """Class names of class indices.

    Args:
        indices: an int, or a sequence / tensor of ints (any nesting, e.g. the (B, k)
            indices of ``classify``).

    Returns:
        A name for an int, else nested lists of names with the input's structure.

    Example:
        >>> decode(torch.tensor([[281, 285]]))
        [['tabby', 'Egyptian cat']]
    """
    names = _classes()
    if isinstance(indices, Tensor):
        if indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"decode: expected integer class indices, got {indices.dtype}")
        indices = indices.tolist()
    if isinstance(indices, (list, tuple)):
        return [decode(i) for i in indices]
    if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
        if not 0 <= indices < len(names):
            raise ValueError(
                f"decode: expected class indices in [0, {len(names) - 1}], got {indices}"
            )
        return names[int(indices)]
    raise TypeError(
        f"decode: expected an int, a sequence of ints or an integer Tensor, "
        f"got {type(indices).__name__}"
    )


def classify(model: nn.Module, images: Tensor, topk: int = 5) -> Tuple[Tensor, Tensor]:
    """Top-k softmax probabilities and class indices of a classifier, without gradients.

    Args:
        model: a network returning logits (B, num_classes), e.g. from ``load_model``.
        images: the network's input, i.e. already ``normalize``-d images.
        topk: how many classes per image, best first. Default: 5.

    Returns:
        (probabilities, indices), both (B, topk); ``decode(indices)`` names them.

    Shape:
        - Input: (B, 3, H, W) or (3, H, W) (treated as B = 1).
        - Output: (B, topk) and (B, topk).

    Example:
        >>> from pyinvert.models import load_model
        >>> p, i = classify(load_model("resnet18"), torch.zeros(2, 3, 64, 64), topk=3)
        >>> p.shape, i.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    _check_images(images, "classify")
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise TypeError(f"classify: expected topk to be an int, got {type(topk).__name__}")
    if images.dim() == 3:
        images = images[None]
    with torch.no_grad():
        logits = model(images)
        if logits.dim() != 2:
            raise ValueError(
                f"classify: expected the model to return logits of shape "
                f"(B, num_classes), got {list(logits.shape)}"
            )
        if not 1 <= topk <= logits.shape[1]:
            raise ValueError(f"classify: expected topk in [1, {logits.shape[1]}], got {topk}")
        probabilities = torch.softmax(logits.float(), dim=1)
        return probabilities.topk(topk, dim=1)
