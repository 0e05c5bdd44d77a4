"""Maximally activating patches (Zeiler & Fergus, ECCV 2014, fig. 2; Girshick et al., CVPR
2014, section 3.1): for each channel of a layer, the k (image, y, x) positions of largest
activation over a collection of images, with their receptive-field crops.

The images are streamed in batches (a folder is never held in memory): per batch each
channel's candidates are merged with its running top-k, so memory is O(batch + channels * k).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import torch
from torch import Tensor, nn

from pyinvert.attribution.core import _one_image, resolve_preprocess
from pyinvert.attribution.figures import tile_grid, to_rgb8
from pyinvert.attribution.gradient import resolve_layer
from pyinvert.io import save_image
from pyinvert.models import load_model, prepare_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def receptive_field(model: nn.Module, layer: nn.Module, size: int):
    """(jump, rf, start) of ``layer``'s output: the stride between units in input pixels,
    the receptive field's side and the centre of the first unit (padding included), traced
    through the leaf Conv2d / MaxPool2d / AvgPool2d modules of a forward pass. Tensors made by
    functional ops (residual sums) take the widest geometry seen so far."""
    geo, best, out = {}, [(1.0, 1.0, 0.0)], {}

    def leaf_hook(module, args, output):
        g = geo.get(id(args[0])) if args else None
        g = g if g is not None else best[0]
        jump, rf, start = g
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):

            def first(v):
                return v[0] if isinstance(v, tuple) else v

            k, s, p = first(module.kernel_size), first(module.stride), first(module.padding)
            d = first(getattr(module, "dilation", 1))
            g = (jump * s, rf + (k - 1) * d * jump, start + ((k - 1) * d / 2 - p) * jump)
        geo[id(output)] = g
        keep.append(output)
        if g[1] > best[0][1]:
            best[0] = g

    def layer_hook(module, args, output):
        out["g"] = geo.get(id(output), best[0])

    keep, handles = [], []
    for m in model.modules():
        if not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(leaf_hook))
    handles.append(layer.register_forward_hook(layer_hook))
    param = next(model.parameters(), None)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=param.device if param is not None else None))
    finally:
        for h in handles:
            h.remove()
    return tuple(int(v) if float(v).is_integer() else float(v) for v in out["g"])


@dataclass
class TopPatches:
    """What :func:`top_patches` returns.

    Attributes:
        channels: the channels, in order.
        hits: per channel, up to k dicts {"image", "y", "x", "value"} (best first); "image"
            is the file path or the index in the input.
        crops: per channel, the (k, 3, rf, rf) receptive-field crops (grey outside images).
        receptive_field: (jump, rf, start) in input pixels.
        figure: HWC uint8 grid, a row per channel.
    """

    channels: List[int]
    hits: List[List[dict]]
    crops: List[Tensor]
    receptive_field: tuple
    figure: np.ndarray = field(repr=False, default=None)

    def save(self, path) -> Path:
        return save_image(path, self.figure)


def _image_stream(images, size, fn):
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir():
        files = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{fn}: no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
        return [(str(p), p) for p in files]
    if isinstance(images, Tensor) and images.dim() == 4:
        return [(i, im) for i, im in enumerate(images)]
    if isinstance(images, (list, tuple)):
        return [
            (str(im) if isinstance(im, (str, os.PathLike)) else i, im)
            for i, im in enumerate(images)
        ]
    raise TypeError(
        f"{fn}: expected a folder, a list of images or a (B, 3, H, W) tensor, "
        f"got {type(images).__name__}"
    )


def _channels(channels, C, fn):
    if isinstance(channels, str):
        lo, _, hi = channels.partition(":")
        chans = list(range(int(lo or 0), int(hi) if hi else C)) if _ else [int(channels)]
    elif isinstance(channels, int):
        chans = [channels]
    else:
        chans = [int(c) for c in channels]
    bad = [c for c in chans if not 0 <= c < C]
    if bad or not chans:
        raise ValueError(f"{fn}: expected channels in [0, {C}), got {bad or chans}")
    return chans


def top_patches(
    images_or_folder,
    model,
    layer,
    channels,
    k: int = 9,
    *,
    size: int = 224,
    batch_size: int = 16,
    preprocess="auto",
    distinct_images: bool = True,
) -> TopPatches:
    """The k positions of largest activation of each channel of ``layer``, streamed.

    Args:
        images_or_folder: a folder of images, a list of paths / arrays / tensors, or a
            (B, 3, H, W) tensor in [0, 1].
        model: an ``nn.Module`` in eval mode (or a zoo name: ImageNet weights).
        layer: module name (e.g. "features.6") or module.
        channels: ints, a "lo:hi" range string, or one int.
        k: patches per channel. Default: 9.
        size: every image is resized and centre-cropped to size x size. Default: 224.
        batch_size: images per forward pass (bounds the memory). Default: 16.
        preprocess: as in :func:`attribute`. Default: "auto".
        distinct_images: at most one patch per image and channel (Zeiler & Fergus show
            distinct images). Default: True.

    Returns:
        A :class:`TopPatches` with the hits, crops and the grid figure.

    Example:
        >>> from pyinvert.models import load_model
        >>> r = top_patches(torch.rand(4, 3, 64, 64), load_model("resnet18"), "maxpool",
        ...                 "0:2", k=2, size=64)
        >>> [len(h) for h in r.hits], r.crops[0].shape[-1]
        ([2, 2], 11)
    """
    fn = "top_patches"
    if isinstance(model, str):
        model = load_model(model, "imagenet", download=False)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{fn}: expected k to be an int >= 1, got {k!r}")
    module = resolve_layer(model, layer, fn)
    pre = resolve_preprocess(model, preprocess, fn)
    stream = _image_stream(images_or_folder, size, fn)
    store = {}
    handle = module.register_forward_hook(lambda m, a, o: store.__setitem__("a", o))
    best_v = best_i = None  # (n_ch, k) values and flat (image, y, x) codes
    chans, hw = None, None
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        for lo in range(0, len(stream), batch_size):
            part = stream[lo : lo + batch_size]
            x = torch.stack([prepare_image(_one_image(im, None, fn), size) for _, im in part])
            with torch.inference_mode():
                model(pre(x.to(device)))
            a = store["a"]
            if a.dim() != 4:
                raise ValueError(
                    f"{fn}: expected a layer with (B, C, H, W) output, got {list(a.shape)}"
                )
            if chans is None:
                chans, hw = _channels(channels, a.shape[1], fn), a.shape[-2:]
            a = a[:, chans].float().cpu()  # (b, n_ch, h, w)
            flat = a.flatten(2)
            if distinct_images:
                v, pos = flat.max(2)  # (b, n_ch)
                codes = torch.arange(lo, lo + len(part))[:, None] * flat.shape[2] + pos
                v, codes = v.t(), codes.t()
            else:
                v = flat.permute(1, 0, 2).flatten(1)
                codes = torch.arange(lo * flat.shape[2], (lo + len(part)) * flat.shape[2]).expand(
                    len(chans), -1
                )
            if best_v is not None:
                v, codes = torch.cat([best_v, v], 1), torch.cat([best_i, codes], 1)
            top = v.topk(min(k, v.shape[1]), dim=1)
            best_v, best_i = top.values, codes.gather(1, top.indices)
    finally:
        handle.remove()
    jump, rf, start = receptive_field(model, module, size)
    side = int(round(rf))
    hits, crops, tiles = [], [], []
    cache = {}
    for c_i in range(len(chans)):
        row, row_crops = [], []
        for v, code in zip(best_v[c_i].tolist(), best_i[c_i].tolist()):
            img, rest = divmod(int(code), hw[0] * hw[1])
            y, x = divmod(rest, hw[1])
            name, im = stream[img]
            if img not in cache:
                cache = {img: prepare_image(_one_image(im, None, fn), size)}
            cy, cx = start + y * jump, start + x * jump
            y0, x0 = int(round(cy - (rf - 1) / 2)), int(round(cx - (rf - 1) / 2))
            padded = torch.nn.functional.pad(cache[img], (side, side, side, side), value=0.5)
            crop = padded[:, y0 + side : y0 + 2 * side, x0 + side : x0 + 2 * side]
            row.append({"image": name, "y": y, "x": x, "value": v})
            row_crops.append(crop)
        hits.append(row)
        crops.append(torch.stack(row_crops))
        tiles.append([to_rgb8(t) for t in row_crops])
    cell = max(48, min(96, side))
    figure = tile_grid(tiles, [f"ch {c}" for c in chans], cell=cell)
    return TopPatches(chans, hits, crops, (jump, rf, start), figure)
