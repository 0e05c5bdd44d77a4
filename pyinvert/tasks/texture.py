"""``pyinvert.texture``: texture synthesis by matching the Gram matrices of CNN layers (Gatys
et al. 2015), from white noise, with the per-row L-BFGS; and the network/layer choices it
shares with :func:`pyinvert.style_transfer`.

The defaults follow the paper: VGG-19 with average pooling at conv1_1, pool1 ... pool4
(:data:`pyinvert.models.gatys.TEXTURE_LAYERS`); offline, MobileNetV2 at the equivalents of
:data:`MOBILENET_TEXTURE_LAYERS` (post-ReLU6 maps, one per receptive-field stride 2 ... 16,
each the last at its stride, as the pools are).
"""

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from pyinvert import io as _io
from pyinvert.models import gatys
from pyinvert.models.zoo import MODELS, POOLING_MODELS, load_model
from pyinvert.objectives import Gram
from pyinvert.optim import engine as _engine
from pyinvert.optim.options import RunOptions
from pyinvert.optim.parameterizations import PixelCanvas
from pyinvert.optim.recipes import OPTIMIZERS, Recipe, Stage
from pyinvert.representations import CNN, Code
from pyinvert.representations.cnn import parse_spec
from pyinvert.tasks import common
from pyinvert.tasks.inputs import image_size_pair, prepare_images
from pyinvert.tasks.result import Result, per_image

#: MobileNetV2's equivalents of conv1_1, pool1, pool2, pool3, pool4 (strides 2, 2, 4, 8, 16;
#: 32, 96, 144, 192, 576 maps): the first post-ReLU6 map, then the last post-ReLU6 map
#: (a block's 1x1 expansion) at each stride. 200,328 Gram parameters (VGG-19: 176,640).
MOBILENET_TEXTURE_LAYERS = (
    "features.0",
    "features.2.conv.0",
    "features.4.conv.0",
    "features.7.conv.0",
    "features.14.conv.0",
)
#: ... of conv1_1, conv2_1, ..., conv5_1 (the first post-ReLU6 map at strides 2, 2, 4, 8, 16:
#: the stem and the depthwise convolutions of blocks 1, 2, 4, 7).
MOBILENET_STYLE_LAYERS = (
    "features.0",
    "features.1.conv.0",
    "features.2.conv.1",
    "features.4.conv.1",
    "features.7.conv.1",
)
#: ... of conv4_2 (the second post-ReLU6 map at stride 8: block 5's expansion).
MOBILENET_CONTENT_LAYERS = ("features.5.conv.0",)
#: Default L-BFGS iterations of a texture.
TEXTURE_STEPS = 300


def _defaults(model: nn.Module, kind: str, fn: str) -> tuple:
    if getattr(model, "layer_aliases", None) and "conv1_1" in model.layer_aliases:
        return {
            "texture": gatys.TEXTURE_LAYERS,
            "style": gatys.STYLE_LAYERS,
            "content": gatys.CONTENT_LAYERS,
        }[kind]
    if type(model).__name__ == "MobileNetV2":
        return {
            "texture": MOBILENET_TEXTURE_LAYERS,
            "style": MOBILENET_STYLE_LAYERS,
            "content": MOBILENET_CONTENT_LAYERS,
        }[kind]
    raise ValueError(
        f"{fn}: no default {kind} layers for {type(model).__name__}; pass "
        f"{kind}_layers= (or layers=) with module names"
    )


def network(representation, weights, fn: str):
    """(model, mean, std, model name, its layers or None) of a texture/style representation:
    None (MobileNetV2), a name of ``MODELS`` (VGG with average pooling, as the papers),
    "cnn:MODEL[:LAYER,...]", a :class:`pyinvert.CNN` or an ``nn.Module``."""
    explicit = None
    if representation is None:
        representation = "mobilenet_v2"
    if isinstance(representation, str):
        name = representation
        if name.startswith("cnn:"):
            if name.count(":") == 1:
                name = name[4:]
            else:
                name, explicit = parse_spec(name, fn)
        if name not in MODELS:
            raise ValueError(
                f"{fn}: unknown model {name!r}; expected one of "
                f"{', '.join(MODELS)}, a pyinvert.CNN or an nn.Module"
            )
        model = load_model(name, weights, pooling="avg" if name in POOLING_MODELS else "max")
        return model, None, None, name, explicit
    if isinstance(representation, CNN):
        return (
            representation.model,
            representation.mean,
            representation.std,
            representation.model_name,
            list(representation.layers),
        )
    if isinstance(representation, nn.Module):
        return representation.eval(), None, None, None, None
    raise TypeError(
        f"{fn}: expected representation to be None, a model name, a "
        f"pyinvert.CNN or an nn.Module, got {type(representation).__name__}"
    )


def layer_list(model, given, kind: str, fn: str) -> List[str]:
    if given is None:
        return list(_defaults(model, kind, fn))
    if isinstance(given, str):
        given = [given]
    given = [gatys.resolve_layer(model, g) for g in given]
    if not given:
        raise ValueError(f"{fn}: expected at least one {kind} layer, got none")
    return given


def make_cnn(model, layers, mean, std, model_name) -> CNN:
    kw = {} if mean is None else {"mean": mean, "std": std}
    return CNN(model, list(dict.fromkeys(layers)), model_name=model_name, **kw)


class LayerMaps(nn.Module):
    """A CNN's per-layer maps as a :class:`pyinvert.Code`, for the engine: the style terms
    take the maps as they are (no flattening into one code and splitting back, which costs
    a copy of every map forward and backward)."""

    def __init__(self, rep: CNN):
        super().__init__()
        self.rep = rep

    def forward(self, x: Tensor) -> Code:
        return Code(self.rep.layer_outputs(x))


def final_maps(out, rep: CNN) -> Code:
    """The per-layer maps of the engine's final images."""
    with torch.no_grad():
        return Code(rep.layer_outputs(out.x)) if out.x.shape[0] else None


def layer_shapes(rep: CNN, size, device, dtype) -> Dict[str, tuple]:
    """{layer: one image's map shape} at ``size`` (H, W), in the code's order."""
    with torch.no_grad():
        out = rep.layer_outputs(torch.zeros(1, 3, *size, device=device, dtype=dtype))
    return {k: tuple(out[k].shape[1:]) for k in rep.layers}


def style_recipe(name: str, steps: int, optimizer: str, fn: str) -> Recipe:
    """The recipe of a texture or a style transfer: ``steps`` iterations of ``optimizer``
    ("lbfgs", the papers'; or a first-order rule at the IJCV 2016 learning rate) from uniform
    noise of 95th percentile 80 / sqrt(3) in the pixel scale 255 (image - mean), no priors,
    jitter or bound."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"{fn}: expected optimizer in {OPTIMIZERS}, got {optimizer!r}")
    lr = 0.05 * 80.0**2 / 6.0 if optimizer != "normalized" else 1.5
    return Recipe(
        name=name,
        stages=(Stage(lr, int(steps)),),
        optimizer=optimizer,
        momentum=0.9,
        reset_momentum=False,
        tv_weight=0.0,
        norm_weight=0.0,
        prior_normalization="pixels",
        sigma=80.0,
        sigma_reference_numel=None,
        lr_pixels=optimizer == "adagrad_momentum",
        init="uniform_quantile",
        bound=None,
        jitter=1,
    )


def initial_codes(rep, rec, seeds, size, device, dtype) -> Tensor:
    """The codes of the engine's starting noise for these seeds (the errors "before")."""
    sc = _engine.recipe_scales(rec, rep.channels, *size)
    x0 = PixelCanvas().init(rec, (rep.channels, *size), seeds, sc["sigma"], dtype, device, rep)
    with torch.no_grad():
        return rep(x0)


def per_layer(errors: Dict[str, Tensor]) -> Tensor:
    """{layer: [N]} as [N, L] float64 on the CPU."""
    return torch.stack([e.detach().double().cpu() for e in errors.values()], 1)


@dataclass
class TextureResult(Result):
    """What :func:`texture` returns.

    Attributes:
        images: textures in [0, 1], [B, 3, H, W] ([B, R, 3, H, W] with restarts > 1).
        sources: the sources as the network sees them, [B, 3, h, w].
        layers: the Gram layers (module names), L of them.
        gram_error: per-layer relative Gram error |G - G0|^2 / |G0|^2 of the textures,
            [B, L] (or [B, R, L]).
        initial_gram_error: the same for the starting noise.
        loss_history: the objective per iteration, [B, T] (or [B, R, T]); NaN after a stop.
        error_history: the mean relative Gram error per iteration, same shape.
        failed: True where a value became NaN/Inf; stopped_at: its iteration, -1 for none.
        settings: representation, recipe, layers, weights, sizes (JSON-friendly).
        seconds: wall time of the optimization.
    """

    images: Tensor
    sources: Tensor
    layers: List[str]
    gram_error: Tensor
    initial_gram_error: Tensor
    loss_history: Tensor
    error_history: Tensor
    failed: Tensor
    stopped_at: Tensor
    settings: dict
    seconds: float = 0.0
    names: List[str] = field(default_factory=list)

    HISTORIES = ("loss_history", "error_history")

    def reduction(self) -> Tensor:
        """initial / final Gram error per layer (how much each fell)."""
        return self.initial_gram_error / self.gram_error.clamp_min(1e-300)

    def summary(self) -> dict:
        def by_layer(t):
            t = t.reshape(-1, len(self.layers))
            return {k: t[:, i].tolist() for i, k in enumerate(self.layers)}

        steps = max(int(self.settings.get("iterations", 1)), 1)
        return {
            "names": self.names,
            "gram_error": by_layer(self.gram_error),
            "initial_gram_error": by_layer(self.initial_gram_error),
            "reduction": by_layer(self.reduction()),
            "final_loss": _io.last_finite(self.loss_history).tolist(),
            "failed": self.failed.tolist(),
            "seconds": self.seconds,
            "seconds_per_step": self.seconds / steps,
        }


def texture(
    sources,
    representation=None,
    *,
    layers: Optional[Sequence[str]] = None,
    layer_weights=None,
    size=None,
    steps: Optional[int] = None,
    restarts: int = 1,
    optimizer: str = "lbfgs",
    weights="imagenet",
    batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[Sequence[int]] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    callback: Optional[Callable] = None,
    names: Optional[Sequence[str]] = None,
    options: Optional[RunOptions] = None,
) -> TextureResult:
    r"""New textures from white noise whose Gram matrices match their sources' (Gatys 2015).

    The loss is :class:`pyinvert.objectives.Gram`: ``sum_l w_l / (4 N_l^2) |G_l - G0_l|^2``
    with ``G = F F^T / M`` (so a texture can be larger or smaller than its source). Every
    source (times ``restarts``) is one row of one batch; each row has its own L-BFGS.

    The documented tolerance (tests/test_texture.py, the five bundled photos at 64 px,
    MobileNetV2, 60 iterations): every layer's relative Gram error ``|G - G0|^2 / |G0|^2``
    falls at least 5x from the starting noise, to at most 0.2 (measured: 8x to 1150x, the
    smallest on the gray photo's first layer; final errors 0.05 to 0.15 at the worst layer),
    and no half-size window of a texture correlates above 0.5 with its source at any shift
    (measured: at most 0.28; a crop scores 1).

    Args:
        sources: images (Tensor [B, C, H, W] in [0, 1], arrays or file paths; one size).
        representation: None (MobileNetV2, offline), a model name ("vgg19": average pooling,
            as the paper), "cnn:MODEL:LAYER,...", a :class:`pyinvert.CNN` (its layers are the
            default) or an ``nn.Module``. Default: None.
        layers: module names or aliases; None: the paper's (VGG) or
            :data:`MOBILENET_TEXTURE_LAYERS`. Default: None.
        layer_weights: w_l (a float, one per layer or a dict). Default: None (1 each).
        size: (H, W) or an int for the textures; None: the sources' size. Default: None.
        steps: L-BFGS iterations; None: :data:`TEXTURE_STEPS`. Default: None.
        restarts: textures per source. Default: 1.
        optimizer: "lbfgs" (the paper) or a first-order rule of
            :data:`pyinvert.optim.recipes.OPTIMIZERS`. Default: 'lbfgs'.
        weights: the network's weights for a model name ("imagenet", None, a path).
            Default: 'imagenet'.
        batch_size: rows per chunk; None: all at once. Default: None.
        generator: seeds the starting noise (a seeded CPU run is reproducible).
            Default: None.
        seeds: one int per row of the pairs/sources (overrides ``generator``). Default: None.
        device: where to optimize; None: the images'. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        progress: a tqdm progress bar. Default: True.
        callback: ``callback(iteration, x, loss, measure, active)``; True stops. Default: None.
        names: the sources' names (for :meth:`TextureResult.save`). Default: None.
        options: a :class:`pyinvert.RunOptions`. Default: None.

    Returns:
        A :class:`TextureResult`.

    Shape:
        - sources: :math:`(B, C, h, w)`; result.images: :math:`(B, 3, H, W)` or
          :math:`(B, R, 3, H, W)`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> res = texture(torch.rand(1, 3, 16, 16), net, layers=["1"], steps=5,
        ...               progress=False, generator=torch.Generator().manual_seed(0))
        >>> res.images.shape, bool((res.gram_error < res.initial_gram_error).all())
        (torch.Size([1, 3, 16, 16]), True)

    References:
        L. A. Gatys, A. S. Ecker, M. Bethge. Texture synthesis using convolutional neural
        networks. NIPS 2015, eq. (4)-(5) and Sec. 4.
    """
    fn = "texture"
    opts = RunOptions.resolve(
        fn,
        options,
        steps=steps,
        restarts=restarts,
        batch_size=batch_size,
        generator=generator,
        seeds=seeds,
        device=device,
        dtype=dtype,
        progress=progress,
        callback=callback,
    )
    model, mean, std, model_name, explicit = network(representation, weights, fn)
    lays = layer_list(model, layers if layers is not None else explicit, "texture", fn)
    rep = make_cnn(model, lays, mean, std, model_name)
    prep = prepare_images(sources, rep, fn, opts.device, opts.dtype)
    dev, B, R = prep.device, prep.x.shape[0], opts.restarts
    H, W = prep.size if size is None else image_size_pair(size, fn, "size")
    if H < rep.min_size or W < rep.min_size:
        raise ValueError(
            f"{fn}: expected size of at least {rep.min_size}x{rep.min_size} "
            f"for {rep.name}, got {H}x{W}"
        )
    rep = rep.to(device=dev, dtype=opts.dtype)
    with torch.no_grad():
        source_maps = rep.layer_outputs(prep.x)
    shapes = layer_shapes(rep, (H, W), dev, opts.dtype)
    term = Gram.from_maps(source_maps, layer_weights, layers=rep.layers, shapes=shapes)
    rec = style_recipe("gatys2015", opts.steps or TEXTURE_STEPS, optimizer, fn)
    row_seeds = _engine.row_seeds(B, R, opts.seeds, opts.generator, fn)
    rows = term.repeat_rows(R)
    before = per_layer(
        rows.layer_errors(initial_codes(rep, rec, row_seeds, (H, W), dev, opts.dtype))
    )
    out = _engine.run(
        term,
        LayerMaps(rep),
        rec,
        B=B,
        R=R,
        image_size=(H, W),
        channels=3,
        seeds=row_seeds,
        device=dev,
        dtype=opts.dtype,
        batch_size=opts.batch_size,
        progress=opts.progress,
        callback=opts.callback,
        desc=f"{fn} {rep.name}",
        final_codes=False,
    )
    after = per_layer(rows.layer_errors(final_maps(out, rep))) if B * R else before
    after = torch.where(out.failed[:, None], torch.full_like(after, math.nan), after)
    settings = {
        "representation": rep.config(),
        "recipe": rec.to_dict(),
        "restarts": R,
        "layers": list(rep.layers),
        "layer_weights": term.weights,
        "source_size": list(prep.size),
        "size": [H, W],
        "device": str(dev),
        "dtype": str(opts.dtype).replace("torch.", ""),
        "iterations": rec.iterations,
        "gram_parameters": sum(s[0] * (s[0] + 1) // 2 for s in shapes.values()),
    }
    return TextureResult(
        images=per_image(common.images_of(out, rep), B, R),
        sources=prep.originals,
        layers=list(rep.layers),
        gram_error=per_image(after, B, R),
        initial_gram_error=per_image(before, B, R),
        loss_history=per_image(out.loss_history, B, R),
        error_history=per_image(out.measure_history, B, R),
        failed=per_image(out.failed, B, R),
        stopped_at=per_image(out.stopped_at, B, R),
        settings=settings,
        seconds=out.seconds,
        names=list(names) if names is not None else [],
    )
