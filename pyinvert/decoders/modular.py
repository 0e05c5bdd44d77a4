"""Modular per-block inverters of a CNN, trained stacked or jointly (the comparison of
Dosovitskiy & Brox, CVPR 2016, Sec. 4: a stack of per-layer inverters trained one at a time
against training the whole stack end to end).

For layers ``l_1, ..., l_K`` of a network (input side first), module k maps the output of
``l_k`` to the output of ``l_{k-1}`` (module 1: to the image). Each module is a
:class:`~pyinvert.decoders.architecture.Decoder` whose stride is the ratio of the two layers'
strides. ``mode="stacked"``: module k is trained alone to predict ``l_{k-1}``'s true output
from ``l_k``'s (normalized squared error; module 1 the pixels), then the modules are
composed; ``mode="joint"``: the composed stack is trained on the pixel error end to end.
:func:`compare_modes` trains both on the same batches and reports their pixel errors on
evaluation images.
"""

from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

from pyinvert.decoders import data as _data
from pyinvert.decoders.architecture import Decoder
from pyinvert.representations.cnn import CNN

MODES = ("stacked", "joint")


class ModularDecoder(nn.Module):
    """A chain of per-block inverters from ``layers[-1]``'s output to the image.

    Args:
        cnn: a :class:`pyinvert.CNN` (its network is used; its own layers are ignored).
        layers: module names, input side first (e.g. ``["features.1", "features.2",
            "features.3"]`` of MobileNetV2).
        width: each module's width. Default: 16.

    Example:
        >>> from pyinvert.representations import as_representation
        >>> cnn = as_representation("cnn:mobilenet_v2:features.2", weights=None)
        >>> dec = ModularDecoder(cnn, ["features.1", "features.2"], width=4)
        >>> feats = dec.features(torch.rand(1, 3, 33, 35))
        >>> dec(feats["features.2"], (33, 35)).shape
        torch.Size([1, 3, 33, 35])
    """

    def __init__(self, cnn: CNN, layers: Sequence[str], width: int = 16):
        super().__init__()
        if not isinstance(cnn, CNN):
            raise TypeError(f"ModularDecoder: expected a pyinvert.CNN, got {type(cnn).__name__}")
        layers = list(layers)
        if not layers:
            raise ValueError("ModularDecoder: expected at least one layer, got none")
        self.cnn = CNN(cnn.model, layers, cnn.mean, cnn.std, cnn.model_name).requires_grad_(False)
        self.layers = layers
        strides = self.cnn.layer_strides
        shapes = self.cnn._probe_info()["shapes"]
        for name in layers:
            if len(shapes[name]) != 3:
                raise ValueError(f"ModularDecoder: layer {name!r} has no spatial map")
        prev_s, prev_c = 1, 3
        blocks = []
        for name in layers:
            s, c = strides[name], shapes[name][0]
            if s % prev_s:
                raise ValueError(
                    f"ModularDecoder: expected each layer's stride to be a multiple of the one "
                    f"before, got {prev_s} then {s} at {name!r}"
                )
            blocks.append(Decoder(c, prev_c, s // prev_s, width))
            prev_s, prev_c = s, c
        self.blocks = nn.ModuleList(blocks)  # blocks[k] inverts layers[k]

    def features(self, images: Tensor) -> Dict[str, Tensor]:
        """{layer: output} of the images in [0, 1] (and "image": the images)."""
        with torch.no_grad():
            out = self.cnn.layer_outputs(self.cnn.preprocess(images))
        return {"image": images, **out}

    def sizes(self, image_size) -> List[tuple]:
        """The (h, w) of each layer's map (image first) for images of ``image_size``."""
        H, W = image_size
        p = next(self.cnn.model.parameters())
        x = torch.zeros(1, 3, H, W, device=p.device, dtype=p.dtype)
        f = self.features(x)
        return [(H, W)] + [tuple(f[n].shape[-2:]) for n in self.layers]

    def forward(self, code: Tensor, image_size, start: int = None) -> Tensor:
        """The image decoded from the output of ``layers[start]`` (default: the last)."""
        k = len(self.layers) - 1 if start is None else start
        sizes = self.sizes(image_size)
        y = code
        for j in range(k, -1, -1):
            y = self.blocks[j](y, sizes[j])
        return y


def _norm_error(y: Tensor, t: Tensor) -> Tensor:
    return (y - t).square().mean() / t.square().mean().clamp_min(1e-12)


def train_modular(
    dec: ModularDecoder,
    photos,
    *,
    mode: str,
    steps: int,
    batch_size: int = 4,
    crop: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> List[float]:
    """Train ``dec`` in place, ``mode`` "stacked" (``steps`` per module, each alone) or
    "joint" (``steps`` for the whole stack); returns the losses. The batches are
    :class:`pyinvert.decoders.data.CropDataset`'s, the same for both modes."""
    if mode not in MODES:
        raise ValueError(f"train_modular: expected mode in {MODES}, got {mode!r}")
    dataset = _data.CropDataset(photos, crop, batch_size, seed)
    keys = ["image", *dec.layers]
    with torch.no_grad():  # the code scales from the first batch
        first = dec.features(torch.stack([dataset[j] for j in range(batch_size)]))
        for k, block in enumerate(dec.blocks):
            block.calibrate(first[keys[k + 1]])
    groups = [[k] for k in range(len(dec.blocks))] if mode == "stacked" else [None]
    losses = []
    for group in groups:
        k = group[0] if group else None
        params = dec.blocks[k].parameters() if group else dec.blocks.parameters()
        opt = torch.optim.Adam(params, lr=lr)
        for step in range(steps):
            batch = torch.stack([dataset[step * batch_size + j] for j in range(batch_size)])
            f = dec.features(batch)
            size = (crop, crop)
            if mode == "joint":
                loss = (dec(f[keys[-1]], size) - f["image"]).square().mean()
            else:
                target = f[keys[k]]
                y = dec.blocks[k](f[keys[k + 1]], tuple(target.shape[-2:]))
                loss = (y - target).square().mean() if k == 0 else _norm_error(y, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return losses


def compare_modes(
    cnn: CNN,
    layers: Sequence[str],
    photos,
    eval_images: Tensor,
    *,
    steps: int = 100,
    width: int = 16,
    batch_size: int = 4,
    crop: int = 32,
    seed: int = 0,
) -> Dict[str, float]:
    """Train a stacked and a joint :class:`ModularDecoder` with the same initial weights and
    batches; {"stacked": pixel MSE, "joint": pixel MSE} of their reconstructions of
    ``eval_images`` ([N, 3, H, W] in [0, 1]) from the last layer.

    Example:
        >>> from pyinvert.representations import as_representation
        >>> cnn = as_representation("cnn:mobilenet_v2:features.1", weights=None)
        >>> photos = [torch.rand(3, 40, 40)]
        >>> sorted(compare_modes(cnn, ["features.0", "features.1"], photos,
        ...                      torch.rand(1, 3, 32, 32), steps=1, width=4))
        ['joint', 'stacked']
    """
    out = {}
    for mode in MODES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dec = ModularDecoder(cnn, layers, width)
        train_modular(
            dec, photos, mode=mode, steps=steps, batch_size=batch_size, crop=crop, seed=seed
        )
        with torch.no_grad():
            f = dec.features(eval_images)
            y = dec(f[layers[-1]], tuple(eval_images.shape[-2:])).clamp(0, 1)
            out[mode] = float((y - eval_images).square().mean())
    return out
