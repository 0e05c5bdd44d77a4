"""The network completed from a layer's code, and untrained copies of a network.

``complete(rep, layer, code, image_size)`` runs the rest of ``rep.model`` after ``layer`` on a
given code: a forward hook on the layer replaces its output by ``code``. The forward pass is fed
a zero image (the mean colour), not the image the code came from, so no information reaches
the classifier around the layer (e.g. through a skip connection that bypasses a layer inside a
residual block); for MobileNetV2's ``features.N`` blocks the completion is exact.
"""

import copy

import torch
from torch import Tensor, nn

from pyinvert.representations.cnn import CNN


def is_classifier(rep) -> bool:
    """A CNN representation whose model ends in class scores [B, K]."""
    return getattr(rep, "kind", None) == "cnn" and isinstance(
        getattr(rep, "model", None), nn.Module
    )


def complete(rep, layer: str, code: Tensor, image_size) -> Tensor:
    """Logits of ``rep.model`` with the output of ``layer`` replaced by ``code``.

    Args:
        rep: a :class:`pyinvert.CNN`.
        layer: one of ``rep.layers``.
        code: [B, ...], the layer's output shape.
        image_size: (H, W) of the images the code stands for.

    Returns:
        Tensor [B, K].
    """
    module = dict(rep.model.named_modules())[layer]
    B = code.shape[0]
    H, W = image_size

    def hook(mod, inputs, output):
        if output.dim() == 2 and code.dim() == 4 and tuple(code.shape[2:]) == (1, 1):
            return code.reshape(output.shape).to(output.dtype)  # a non-spatial layer
        if tuple(output.shape) != tuple(code.shape):
            raise ValueError(
                f"complete: expected a code of shape {list(output.shape)} for "
                f"layer {layer!r}, got {list(code.shape)}"
            )
        return code.to(output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        zeros = torch.zeros(B, 3, H, W, dtype=code.dtype, device=code.device)
        return rep.model(zeros)  # a zero image is the mean colour after normalization
    finally:
        handle.remove()


def logits(rep, x: Tensor) -> Tensor:
    """The network's logits on x (the representation's pixel scale)."""
    return rep.model(rep.normalize(x))


def untrained_copy(rep, seed: int = 0, calibration=None):
    """The same representation with a randomly initialized network (PyTorch's default
    initialization of every layer), seeded by ``seed`` without touching the global random
    state. BatchNorm statistics are reset, then, given ``calibration`` images [B, 3, H, W] in
    [0, 1], re-estimated on them (one forward in training mode, cumulative averages): without
    it the activations of a deep random network shrink or saturate layer after layer and the
    baseline would measure that rather than what random filters keep."""
    model = copy.deepcopy(rep.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    if calibration is not None:
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.momentum = None
        tmp = CNN(model, rep.layers, mean=rep.mean, std=rep.std)  # (sets eval mode)
        model.train()
        with torch.no_grad():
            model(tmp.normalize(tmp.preprocess(calibration)))
        for m, mo in zip(bns, saved):
            m.momentum = mo
    model.eval().requires_grad_(False)
    return CNN(
        model, rep.layers, mean=rep.mean, std=rep.std, model_name=f"{rep.model_name}-untrained"
    )
