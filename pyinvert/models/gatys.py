"""The papers' layer names (``conv1_1``, ``relu1_1``, ``pool1``, ...) and the size of a Gram
(texture / style) description, for the texture synthesis and style transfer of Gatys et al.

A network may carry a ``layer_aliases`` mapping (VGG-16 and VGG-19 do: see
:mod:`pyinvert.models.vgg`); :func:`resolve_layer` turns an alias into the module name that
forward hooks need, and leaves module names as they are.

References:
    L. A. Gatys, A. S. Ecker, M. Bethge. Texture synthesis using convolutional neural networks.
    NIPS 2015 (Sec. 2: the Gram matrices G^l = F^l F^l^T of N_l feature maps; Sec. 4: the
    layers conv1_1, pool1, pool2, pool3, pool4 and their 176,640 parameters).
    L. A. Gatys, A. S. Ecker, M. Bethge. Image style transfer using convolutional neural
    networks. CVPR 2016 (Sec. 3: style layers conv1_1 ... conv5_1, content layer conv4_2).
"""

from typing import Dict, Sequence, Union

import torch
from torch import nn

from pyinvert.models.layers import _trace
from pyinvert.models.zoo import _CLASSES, _check_name, build_model

#: Gatys et al. 2015: the layers whose Gram matrices describe a texture (on VGG-19).
TEXTURE_LAYERS = ("conv1_1", "pool1", "pool2", "pool3", "pool4")
#: Gatys et al. 2016: the style layers ...
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: ... and the content layer of style transfer.
CONTENT_LAYERS = ("conv4_2",)


def layer_aliases(model: Union[str, nn.Module]) -> Dict[str, str]:
    """The alias -> module name table of a network (empty when it has none).

    Args:
        model: a network, or a name of ``MODELS``.

    Returns:
        A new dict, e.g. ``{"conv1_1": "features.0", "relu1_1": "features.1", ...}`` for VGG.

    Example:
        >>> layer_aliases("vgg16")["pool5"], layer_aliases("vgg19")["pool5"]
        ('features.30', 'features.36')
    """
    if isinstance(model, str):
        _check_name(model, "layer_aliases")
        return dict(getattr(_CLASSES[model], "layer_aliases", {}))
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"layer_aliases: expected a model name or an nn.Module, got {type(model).__name__}"
        )
    return dict(getattr(model, "layer_aliases", None) or {})


def resolve_layer(model: nn.Module, name: str) -> str:
    """The module name of a layer given by its module name or an alias of ``model``.

    A module name wins over an alias; a name that is neither comes back unchanged (the
    caller's own check reports it with the list of valid layers).

    Args:
        model: the network.
        name: e.g. ``"features.0"`` or ``"conv1_1"``.

    Returns:
        A key of ``dict(model.named_modules())`` (or ``name`` when it is unknown).

    Example:
        >>> from pyinvert.models import build_model
        >>> with torch.device("meta"):
        ...     net = build_model("vgg19")
        >>> resolve_layer(net, "relu4_2"), resolve_layer(net, "features.3")
        ('features.22', 'features.3')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"resolve_layer: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"resolve_layer: expected a layer name (str), got {type(name).__name__}")
    aliases = getattr(model, "layer_aliases", None) or {}
    if name in aliases:
        modules = dict(model.named_modules())
        if name not in modules:
            return aliases[name]
    return name


def _channels(model: nn.Module, names: Sequence[str]) -> Dict[str, tuple]:
    """{module name: output shape without the batch} from a small probe forward."""
    error = None
    for size in (64, 224):
        try:
            return {
                n: shape[1:] for n, _, shape, _, _ in _trace(model, size, "gram_parameter_count")
            }
        except ValueError as e:  # too small for this network: try a larger probe
            error = e
    raise error


def gram_parameter_count(model: Union[str, nn.Module], layers: Sequence[str]) -> int:
    """The number of distinct entries of the Gram matrices of ``layers``: N(N+1)/2 for a
    layer of N feature maps (the Gram matrix is symmetric), summed over the layers.

    Args:
        model: a network, or a name of ``MODELS`` (then built on the meta device: free).
        layers: module names or aliases (``"conv1_1"``, ``"pool4"``, ``"features.0"``).

    Returns:
        The count (Gatys et al. 2015, Sec. 4: 176,640 for VGG-19 at conv1_1, pool1 ... pool4).

    Raises:
        ValueError: no layer, an unknown or repeated layer, or a layer whose output is not a
            feature map (B, C, H, W).

    Example:
        >>> gram_parameter_count("vgg19", TEXTURE_LAYERS)
        176640
        >>> gram_parameter_count("vgg19", ["conv1_1"])  # 64 * 65 / 2
        2080
    """
    if isinstance(model, str):
        _check_name(model, "gram_parameter_count")
        with torch.device("meta"):
            model = build_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"gram_parameter_count: expected a model name or an nn.Module, got "
            f"{type(model).__name__}"
        )
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("gram_parameter_count: expected at least one layer, got none")
    modules = dict(model.named_modules())
    resolved = []
    for name in layers:
        module_name = resolve_layer(model, name)
        if module_name not in modules or module_name == "":
            raise ValueError(
                f"gram_parameter_count: unknown layer {name!r}; expected a "
                f"module name or one of the aliases "
                f"{', '.join(layer_aliases(model)) or '(none)'}"
            )
        resolved.append(module_name)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"gram_parameter_count: expected distinct layers, got {layers}")
    shapes = _channels(model, resolved)
    total = 0
    for name, module_name in zip(layers, resolved):
        shape = shapes.get(module_name)
        if shape is None or len(shape) != 3:
            raise ValueError(
                f"gram_parameter_count: layer {name!r} ({module_name}) outputs "
                f"{list(shape) if shape is not None else 'nothing'}, not a "
                f"feature map (C, H, W)"
            )
        total += shape[0] * (shape[0] + 1) // 2
    return total
