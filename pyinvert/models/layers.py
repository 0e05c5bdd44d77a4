"""Which layers a network has, in forward order, and what each one outputs.

One forward pass of a zero image with forward hooks on every submodule records each module's
output shape and the geometry of its units: the effective stride (pixels of input between two
neighbouring units: the product of the strides on the way) and the theoretical receptive
field (the side of the input window a unit depends on, padding ignored, so it may exceed the
image). Convolutions and poolings contribute their kernel, stride and dilation; a module made
of several branches (a residual block) takes the largest stride and receptive field among the
outputs computed inside it.
"""

import math
from typing import List, Optional, Union

import torch
from torch import Tensor, nn

from pyinvert.models.zoo import MODELS, WEIGHT_FILES, build_model, find_weights, hub_checkpoint_path

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_IDENTITY_IN_EVAL = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.Identity,
)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _geometry_step(module, in_geo, in_shape, out_shape):
    """(stride, rf) of a leaf's output from its input's; None for non-spatial outputs."""
    if len(out_shape) != 4:
        return None
    if in_geo is None:
        in_geo = (1, 1)
    jump, rf = in_geo
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)[0]
        s = _pair(module.stride if module.stride is not None else module.kernel_size)[0]
        d = _pair(getattr(module, "dilation", 1))[0]
        return jump * s, rf + (k - 1) * d * jump
    if len(in_shape) == 4 and tuple(in_shape[-2:]) != tuple(out_shape[-2:]):
        # Adaptive pooling or an unknown resampling: the average window of each output unit.
        H, Ho = in_shape[-2], out_shape[-2]
        if Ho <= H:
            k, s = math.ceil(H / Ho), H // Ho
            return jump * s, rf + (k - 1) * jump
        return jump * H / Ho, rf
    return jump, rf


def _trace(model: nn.Module, input_size: int, fn: str) -> list:
    """[(name, module, output_shape, calls, geometry)] in order of completion."""
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise TypeError(f"{fn}: expected input_size to be an int, got {type(input_size).__name__}")
    if input_size < 1:
        raise ValueError(f"{fn}: expected input_size >= 1, got {input_size}")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype)

    geo = {id(x): (1, 1)}  # id(tensor) -> (stride, rf) or None
    keep = [x]  # keeps the traced tensors alive, so ids are not reused
    records, order, stack = {}, [], []

    def pre_hook(module, args):
        stack.append(len(keep))

    def hook(module, args, output):
        start = stack.pop()
        name = names[module]
        inp = args[0] if args and isinstance(args[0], Tensor) else None
        if not isinstance(output, Tensor):
            return
        out_shape = tuple(output.shape)
        in_geo = geo.get(id(inp)) if inp is not None else None
        in_shape = tuple(inp.shape) if inp is not None else ()
        inside = [geo[id(t)] for t in keep[start:] if geo.get(id(t)) is not None]
        if len(out_shape) == 4 and inside and any(True for _ in module.children()):
            g = (max(s for s, _ in inside), max(r for _, r in inside))
        else:  # a leaf, or a module computing with functions only
            g = _geometry_step(module, in_geo, in_shape, out_shape)
        geo[id(output)] = g
        keep.append(output)
        if name not in records:
            order.append(name)
            records[name] = [module, out_shape, 0, g]
        records[name][1], records[name][3] = out_shape, g
        records[name][2] += 1

    names = {m: n for n, m in model.named_modules() if n}
    modes = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in names:
            handles.append(m.register_forward_pre_hook(pre_hook))
            handles.append(m.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            model(x)
    except RuntimeError as error:
        raise ValueError(
            f"{fn}: a {input_size}x{input_size} input does not go through "
            f"{type(model).__name__} (too small?): {error}"
        ) from error
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return [(n, *records[n]) for n in order]


def _selected(model: nn.Module, trace) -> list:
    top_sequentials = {n for n, m in model.named_children() if isinstance(m, _CONTAINERS)}
    rows = []
    for name, module, shape, calls, g in trace:
        if calls != 1 or isinstance(module, _IDENTITY_IN_EVAL):
            continue
        leaf = not any(True for _ in module.children())
        parent = name.rpartition(".")[0]
        block = parent in top_sequentials or not isinstance(module, _CONTAINERS)
        if leaf or block:
            rows.append((name, module, shape, g))
    return rows


def _as_model(name_or_model, fn):
    if isinstance(name_or_model, nn.Module):
        return name_or_model
    if isinstance(name_or_model, str):
        if name_or_model not in MODELS:
            raise ValueError(
                f"{fn}: unknown model {name_or_model!r}; expected one of {', '.join(MODELS)}"
            )
        with torch.device("meta"):  # shapes only: nothing allocated, nothing computed
            return build_model(name_or_model)
    raise TypeError(
        f"{fn}: expected a model name or an nn.Module, got {type(name_or_model).__name__}"
    )


def layer_names(model: Union[str, nn.Module], input_size: int = 224) -> List[str]:
    """The named submodules worth inverting, in the order their outputs are computed.

    Listed: every leaf module (``features.0``, ``layer1.0.conv1``, ``fc``) and every block,
    i.e. a child of a top-level container (``features.6``, ``layer2.1``) or a module of a
    custom class (a residual block); the block comes after its own layers. Not listed:
    plain containers (``features``, ``layer2``, ``features.1.conv``: the output of a
    Sequential is its last layer's), dropouts (the identity in eval mode), and modules applied
    more than once per forward (ResNet's ``layerN.M.relu``; its second output is
    ``layerN.M``'s). Any module name still works with forward hooks.

    Args:
        model: a network, or one of ``MODELS`` (then built on the meta device: no memory).
        input_size: side of the square probe image. Default: 224.

    Returns:
        Module names for ``dict(model.named_modules())``.

    Example:
        >>> layer_names("alexnet")[:4]
        ['features.0', 'features.1', 'features.2', 'features.3']
    """
    model = _as_model(model, "layer_names")
    return [row[0] for row in _selected(model, _trace(model, input_size, "layer_names"))]


def describe(name_or_model: Union[str, nn.Module], input_size: int = 224) -> List[dict]:
    """One row per layer of ``layer_names``: what it outputs for a square input image.

    Args:
        name_or_model: a network, or one of ``MODELS`` (then built on the meta device).
        input_size: side of the square probe image. Default: 224.

    Returns:
        Dicts with ``layer`` (module name), ``type`` (class name), ``output_shape`` (without
        the batch dimension: (C, H, W) or (F,)), ``stride`` (effective stride in input pixels,
        an int for the built-in layer types; None for a non-spatial output such as a linear
        layer's, whose units see the whole image) and ``receptive_field`` (theoretical side in
        pixels, padding ignored; None for non-spatial outputs). The stride is the product of
        the layer strides, not ``input_size / H``: e.g. AlexNet's ``features.0`` has stride 4
        and outputs 55x55 at 224.

    Example:
        >>> row = describe("vgg16")[0]
        >>> row["layer"], row["output_shape"], row["stride"], row["receptive_field"]
        ('features.0', (64, 224, 224), 1, 3)
    """
    model = _as_model(name_or_model, "describe")
    rows = []
    for name, module, shape, g in _selected(model, _trace(model, input_size, "describe")):
        stride, rf = (None, None) if g is None else g
        if isinstance(stride, float) and stride.is_integer():
            stride = int(stride)
        rows.append(
            {
                "layer": name,
                "type": type(module).__name__,
                "output_shape": tuple(shape[1:]),
                "stride": stride,
                "receptive_field": rf,
            }
        )
    return rows


def _fmt_shape(shape):
    return "x".join(str(s) for s in shape)


def format_table(rows: List[dict]) -> str:
    """``describe``'s rows as an aligned text table (layer, type, output, stride, RF).

    Example:
        >>> print(format_table(describe("alexnet")[:2]))
        layer       type    output    stride  RF
        features.0  Conv2d  64x55x55       4  11
        features.1  ReLU    64x55x55       4  11
    """
    table = [("layer", "type", "output", "stride", "RF")]
    for r in rows:
        table.append(
            (
                str(r["layer"]),
                str(r["type"]),
                _fmt_shape(r["output_shape"]),
                "-" if r.get("stride") is None else f"{r['stride']:g}",
                "-" if r.get("receptive_field") is None else f"{r['receptive_field']:g}",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = []
    for row in table:
        left = "  ".join(row[i].ljust(widths[i]) for i in range(3))
        right = "  ".join(row[i].rjust(widths[i]) for i in range(3, 5))
        lines.append(f"{left}  {right}".rstrip())
    return "\n".join(lines)


def _parameters(model):
    return sum(p.numel() for p in model.parameters())


def models_command(name: Optional[str] = None) -> str:
    """The text of ``pyinvert models [NAME]``.

    Args:
        name: None for the list of models (parameters, layers, ImageNet checkpoint and where
            it was found); a model name for its layer table at 224x224. Default: None.

    Returns:
        The text to print (no trailing newline).

    Raises:
        ValueError: unknown model name (the message lists the known ones).
    """
    if name is not None and name not in MODELS:
        raise ValueError(
            f"pyinvert models: unknown model {name!r}; expected one of {', '.join(MODELS)}"
        )
    if name is None:
        table = [("model", "parameters", "layers", "ImageNet weights")]
        for n in MODELS:
            model = _as_model(n, "models_command")
            found = find_weights(n)
            status = f"{found}" if found is not None else f"missing ({WEIGHT_FILES[n]})"
            table.append(
                (n, f"{_parameters(model) / 1e6:.1f}M", str(len(layer_names(model))), status)
            )
        widths = [max(len(r[i]) for r in table) for i in range(3)]
        lines = [
            "  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].rjust(widths[2]), r[3]])
            for r in table
        ]
        lines.append("")
        lines.append(
            "Layers of a model: pyinvert models NAME. Missing weights: put the file "
            f"in {hub_checkpoint_path(MODELS[0]).parent} (or $PYINVERT_WEIGHTS); "
            "load_model's error says where to get it."
        )
        return "\n".join(lines)
    model = _as_model(name, "models_command")
    found = find_weights(name)
    where = str(found) if found is not None else f"missing ({hub_checkpoint_path(name)})"
    head = (
        f"{name}: {type(model).__name__}, {_parameters(model) / 1e6:.1f}M parameters, "
        f"input 3x224x224 (ImageNet-normalized)\nImageNet weights: {where}\n"
        "stride: input pixels between neighbouring units; RF: theoretical receptive "
        "field (pixels); '-': not spatial\n"
    )
    return head + format_table(describe(model))
