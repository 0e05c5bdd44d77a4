"""``pyinvert.style_transfer``: the content of one image in the style of another (Gatys et al.
2016): :class:`pyinvert.objectives.ContentLoss` + ``style_weight`` x
:class:`pyinvert.objectives.StyleLoss`, with the per-row L-BFGS.

Several content x style pairs are rows of one batch, and the weights may differ per row (a
Tensor): a sweep of style weights on one pair is one batch.
"""

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.objectives import ContentLoss, StyleLoss
from pyinvert.optim import engine as _engine
from pyinvert.optim.options import RunOptions
from pyinvert.tasks import common
from pyinvert.tasks.inputs import prepare_images
from pyinvert.tasks.result import Result, per_image
from pyinvert.tasks.texture import (
    LayerMaps,
    final_maps,
    initial_codes,
    layer_list,
    layer_shapes,
    make_cnn,
    network,
    per_layer,
    style_recipe,
)

#: Default style weight (beta / alpha with content_weight 1), measured on MobileNetV2 at the
#: default layers (chelsea.png in the style of coffee.png, 96 px, 80 L-BFGS iterations from
#: the content): style weights 1e1, 1e2, 1e3, 1e4 give mean relative Gram errors 0.020,
#: 0.0058, 0.0038, 0.0038 (0.128 at the start) and content errors 0.039, 0.134, 0.255, 0.287:
#: 1e3 is well into the style with the content still readable. Larger weights saturate: once
#: the content term is a negligible part of the loss the result tends to the style-only run
#: (content_weight 0) from the same start, whose Gram error depends on the iterations only
#: (96 px: 0.0078 after 40 iterations, 0.0020 after 160; 1e3, 1e4 and 1e5 give 0.0078,
#: 0.0077, 0.0078 after 40 and 0.0022, 0.0020, 0.0020 after 160). The sweep's useful range is
#: about 1e1 ... 1e3 (bench/bench_texture.py's sweep reports the errors and this limit).
STYLE_WEIGHT = 1e3
#: Default L-BFGS iterations of a style transfer.
STYLE_STEPS = 300


def _weights(value, P: int, name: str, device, dtype, fn: str) -> Tensor:
    if isinstance(value, Tensor):
        if value.dim() > 1:
            raise ValueError(
                f"{fn}: expected {name} to be a float or of shape ({P},), got {list(value.shape)}"
            )
        v = value.detach().to(device=device, dtype=dtype).flatten()
        if v.numel() == 1:
            v = v.expand(P)
        if v.shape != (P,):
            raise ValueError(
                f"{fn}: expected {name} to be a float or of shape ({P},), got {list(value.shape)}"
            )
        return v.clone()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{fn}: expected {name} to be a float or a Tensor, got {type(value).__name__}"
        )
    return torch.full((P,), float(value), device=device, dtype=dtype)


def _count(value) -> int:
    return value.numel() if isinstance(value, Tensor) and value.dim() > 0 else 1


@dataclass
class StyleResult(Result):
    """What :func:`style_transfer` returns (P = pairs: rows of the batch).

    Attributes:
        images: results in [0, 1], [P, 3, H, W] ([P, R, 3, H, W] with restarts > 1).
        contents, styles: the content and style image of each pair as the network sees them,
            [P, 3, H, W] and [P, 3, h, w].
        style_layers, content_layers: module names.
        gram_error: per-layer relative Gram error to the style, [P, Ls] (or [P, R, Ls]).
        initial_gram_error: the same at the start (the content image, or the noise).
        content_error: |F - P|^2 / |P|^2 summed over the content layers, [P] (or [P, R]).
        style_weight, content_weight: the weights of each pair, [P].
        loss_history, error_history: per iteration (the error is the content error).
        failed, stopped_at, settings, seconds, names: as
            :class:`pyinvert.tasks.texture.TextureResult`.
    """

    images: Tensor
    contents: Tensor
    styles: Tensor
    style_layers: List[str]
    content_layers: List[str]
    gram_error: Tensor
    initial_gram_error: Tensor
    content_error: Tensor
    style_weight: Tensor
    content_weight: Tensor
    loss_history: Tensor
    error_history: Tensor
    failed: Tensor
    stopped_at: Tensor
    settings: dict
    seconds: float = 0.0
    names: List[str] = field(default_factory=list)

    HISTORIES = ("loss_history", "error_history")

    def summary(self) -> dict:
        def by_layer(t):
            t = t.reshape(-1, len(self.style_layers))
            return {k: t[:, i].tolist() for i, k in enumerate(self.style_layers)}

        steps = max(int(self.settings.get("iterations", 1)), 1)
        return {
            "names": self.names,
            "style_weight": self.style_weight.tolist(),
            "content_weight": self.content_weight.tolist(),
            "gram_error": by_layer(self.gram_error),
            "initial_gram_error": by_layer(self.initial_gram_error),
            "mean_gram_error": self.gram_error.mean(-1).tolist(),
            "content_error": self.content_error.tolist(),
            "final_loss": _io.last_finite(self.loss_history).tolist(),
            "failed": self.failed.tolist(),
            "seconds": self.seconds,
            "seconds_per_step": self.seconds / steps,
        }


def style_transfer(
    content,
    style,
    representation=None,
    *,
    content_layers: Optional[Sequence[str]] = None,
    style_layers: Optional[Sequence[str]] = None,
    content_weight=1.0,
    style_weight=STYLE_WEIGHT,
    layer_weights=None,
    init: str = "content",
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
) -> StyleResult:
    r"""Images with the content of ``content`` and the style of ``style`` (Gatys 2016):

    .. math:: \min_x \; \alpha \, L_{content}(x, p) + \beta \, L_{style}(x, a)

    with :class:`pyinvert.objectives.ContentLoss` (alpha = ``content_weight``) and
    :class:`pyinvert.objectives.StyleLoss` (beta = ``style_weight``, layer weights 1/L).

    The pairs: P = the largest of the number of content images, style images and weights;
    each of them is 1 (shared by all pairs) or P. A Tensor of style weights on one pair is a
    sweep, run as one batch.

    Args:
        content: content image(s) (Tensor [Bc, C, H, W] in [0, 1], arrays or paths).
        style: style image(s) (any size, one size among them).
        representation: as :func:`pyinvert.texture`. Default: None (MobileNetV2).
        content_layers: None: conv4_2 (VGG) or
            :data:`pyinvert.tasks.texture.MOBILENET_CONTENT_LAYERS`. Default: None.
        style_layers: None: conv1_1 ... conv5_1 (VGG) or
            :data:`pyinvert.tasks.texture.MOBILENET_STYLE_LAYERS`. Default: None.
        content_weight: alpha, a float or Tensor[P]. Default: 1.0.
        style_weight: beta, a float or Tensor[P]; larger weights move the result toward
            the style (lower Gram error, higher content error) up to about 1e3 on
            MobileNetV2, then saturate at the style-only result of the iteration budget
            (:data:`STYLE_WEIGHT`). Default: STYLE_WEIGHT (1000.0).
        layer_weights: the style layers' w_l. Default: None (1 / L each).
        init: "content" (start from the content image) or "noise" (white noise, the
            paper). Default: 'content'.
        steps: L-BFGS iterations; None: :data:`STYLE_STEPS`. Default: None.
        restarts: results per pair (with init="content" they are equal). Default: 1.
        optimizer: "lbfgs" or a first-order rule. Default: 'lbfgs'.
        weights: the network's weights for a model name. Default: 'imagenet'.
        batch_size: rows per chunk; None: all at once. Default: None.
        generator: seeds the starting noise (a seeded CPU run is reproducible).
            Default: None.
        seeds: one int per row of the pairs/sources (overrides ``generator``). Default: None.
        device: where to optimize; None: the images'. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        progress: a tqdm progress bar. Default: True.
        callback: ``callback(iteration, x, loss, measure, active)``; True stops. Default: None.
        names: one name per pair. Default: None.
        options: a :class:`pyinvert.RunOptions`. Default: None.

    Returns:
        A :class:`StyleResult`.

    Raises:
        ValueError: unknown init, counts that do not broadcast, a weight of the wrong shape.

    Shape:
        - content: :math:`(B_c, C, H, W)`; style: :math:`(B_s, C, h, w)`;
          result.images: :math:`(P, 3, H, W)`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> res = style_transfer(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 20, 20), net,
        ...                      content_layers=["1"], style_layers=["1"], steps=5,
        ...                      style_weight=torch.tensor([1.0, 100.0]), progress=False)
        >>> res.images.shape, res.style_weight.tolist()
        (torch.Size([2, 3, 16, 16]), [1.0, 100.0])

    References:
        L. A. Gatys, A. S. Ecker, M. Bethge. Image style transfer using convolutional neural
        networks. CVPR 2016, eq. (1)-(7).
    """
    fn = "style_transfer"
    if init not in ("content", "noise"):
        raise ValueError(f"{fn}: expected init in ('content', 'noise'), got {init!r}")
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
    model, mean, std, model_name, _ = network(representation, weights, fn)
    c_layers = layer_list(model, content_layers, "content", fn)
    s_layers = layer_list(model, style_layers, "style", fn)
    rep = make_cnn(model, [*s_layers, *c_layers], mean, std, model_name)
    cp = prepare_images(content, rep, fn, opts.device, opts.dtype)
    dev = cp.device
    sp = prepare_images(style, rep, fn, dev, opts.dtype)
    counts = [cp.x.shape[0], sp.x.shape[0], _count(style_weight), _count(content_weight)]
    P = max(counts)
    if any(n not in (1, P) for n in counts):
        raise ValueError(
            f"{fn}: expected the numbers of content images, style images, "
            f"style weights and content weights to be 1 or one common P, got "
            f"{counts}"
        )
    sw = _weights(style_weight, P, "style_weight", dev, opts.dtype, fn)
    cw = _weights(content_weight, P, "content_weight", dev, opts.dtype, fn)

    def rows(t):
        return t.expand(P, *t.shape[1:]) if t.shape[0] == 1 else t

    rep = rep.to(device=dev, dtype=opts.dtype)
    H, W = cp.size
    shapes = layer_shapes(rep, (H, W), dev, opts.dtype)
    with torch.no_grad():
        c_maps = rep.layer_outputs(cp.x)
        s_maps = rep.layer_outputs(sp.x)
    style_term = StyleLoss.from_maps(
        {k: s_maps[k] for k in s_layers}, layer_weights, shapes=shapes
    ).map_rows(rows)
    content_term = ContentLoss({k: c_maps[k] for k in c_layers}, shapes=shapes).map_rows(rows)
    objective = cw * content_term + sw * style_term
    rec = style_recipe("gatys2016", opts.steps or STYLE_STEPS, optimizer, fn)
    R = opts.restarts
    row_seeds = _engine.row_seeds(P, R, opts.seeds, opts.generator, fn)
    start = rows(cp.x) if init == "content" else None
    s_rows, c_rows = style_term.repeat_rows(R), content_term.repeat_rows(R)
    with torch.no_grad():
        code0 = (
            rep(start.repeat_interleave(R, 0))
            if start is not None
            else initial_codes(rep, rec, row_seeds, (H, W), dev, opts.dtype)
        )
    before = per_layer(s_rows.layer_errors(code0))
    out = _engine.run(
        objective,
        LayerMaps(rep),
        rec,
        B=P,
        R=R,
        image_size=(H, W),
        channels=3,
        seeds=row_seeds,
        device=dev,
        dtype=opts.dtype,
        init=start,
        batch_size=opts.batch_size,
        progress=opts.progress,
        callback=opts.callback,
        desc=f"{fn} {rep.name}",
        final_codes=False,
    )
    if P * R:
        maps = final_maps(out, rep)
        gram = per_layer(s_rows.layer_errors(maps))
        cerr = sum(c_rows.layer_errors(maps).values()).detach().double().cpu()
    else:
        gram, cerr = before, torch.zeros(0, dtype=torch.float64)
    nan = out.failed
    gram = torch.where(nan[:, None], torch.full_like(gram, math.nan), gram)
    cerr = torch.where(nan, torch.full_like(cerr, math.nan), cerr)
    settings = {
        "representation": rep.config(),
        "recipe": rec.to_dict(),
        "restarts": R,
        "pairs": P,
        "style_layers": s_layers,
        "content_layers": c_layers,
        "layer_weights": style_term.weights,
        "init": init,
        "size": [H, W],
        "style_size": list(sp.size),
        "device": str(dev),
        "dtype": str(opts.dtype).replace("torch.", ""),
        "iterations": rec.iterations,
    }
    return StyleResult(
        images=per_image(common.images_of(out, rep), P, R),
        contents=rows(cp.originals),
        styles=rows(sp.originals),
        style_layers=s_layers,
        content_layers=c_layers,
        gram_error=per_image(gram, P, R),
        initial_gram_error=per_image(before, P, R),
        content_error=per_image(cerr, P, R),
        style_weight=sw.double().cpu(),
        content_weight=cw.double().cpu(),
        loss_history=per_image(out.loss_history, P, R),
        error_history=per_image(out.measure_history, P, R),
        failed=per_image(out.failed, P, R),
        stopped_at=per_image(out.stopped_at, P, R),
        settings=settings,
        seconds=out.seconds,
        names=list(names) if names is not None else [],
    )
