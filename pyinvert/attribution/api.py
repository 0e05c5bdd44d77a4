"""``attribute``: every method on a batch of images, with one result object."""

import inspect
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from pyinvert.attribution import gradient
from pyinvert.attribution.core import as_batch, resolve_preprocess, resolve_targets
from pyinvert.attribution.figures import attribution_grid, overlay
from pyinvert.attribution.occlusion import occlusion
from pyinvert.io import atomic_write_bytes, save_image, write_json
from pyinvert.models import imagenet_classes, load_model

#: Methods with an input-space gradient signal, by name.
GRADIENT_METHODS = {
    "saliency": gradient.saliency,
    "deconvnet": gradient.deconvnet,
    "guided_backprop": gradient.guided_backprop,
    "gradcam": gradient.gradcam,
    "guided_gradcam": gradient.guided_gradcam,
    "integrated_gradients": gradient.integrated_gradients,
    "smoothgrad": gradient.smoothgrad,
}
#: Every method ``attribute`` runs, by name.
METHODS = dict(GRADIENT_METHODS, occlusion=occlusion)


def _options_of(fn):
    params = inspect.signature(fn).parameters
    return {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY} - {"output", "layer"}


@dataclass
class AttributionResult:
    """What :func:`attribute` returns.

    Attributes:
        images: (B, 3, H, W) the images in [0, 1].
        maps: method -> (B, T, H, W) maps at input resolution.
        gradients: method -> (B, T, C, H, W) raw input-space signal (gradient-type methods).
        targets: (B, T) int64 classes attributed.
        scores: (B, T) their scores (logit or probability) on the clean images.
        timings: method -> seconds.
        info: method -> diagnostics (e.g. ``integrated_gradients``' completeness residual).
        names: one name per image (file stems, or image0, image1, ...).
    """

    images: Tensor
    maps: Dict[str, Tensor]
    gradients: Dict[str, Tensor]
    targets: Tensor
    scores: Tensor
    timings: Dict[str, float] = field(default_factory=dict)
    info: Dict[str, dict] = field(default_factory=dict)
    names: List[str] = field(default_factory=list)

    def labels(self) -> List[List[str]]:
        """Per image and target, "class-name (index)" for ImageNet outputs, else the index."""
        classes = imagenet_classes()
        return [
            [f"{classes[c]} ({c})" if 0 <= c < len(classes) else str(c) for c in row]
            for row in self.targets.tolist()
        ]

    def summary(self) -> str:
        """A few lines: per image its targets and scores, then each method's time."""
        lines = []
        for b, name in enumerate(self.names):
            parts = [f"{lab}: {s:.3f}" for lab, s in zip(self.labels()[b], self.scores[b].tolist())]
            lines.append(f"{name}: " + ", ".join(parts))
        for m, sec in self.timings.items():
            extra = ""
            if m == "integrated_gradients":
                r = self.info[m]["completeness_residual"].abs().max().item()
                extra = f" (completeness residual max {r:.2e})"
            lines.append(f"  {m}: {sec:.3f} s{extra}")
        return "\n".join(lines)

    def save(self, directory) -> List[Path]:
        """Write, per image, ``<name>_grid.png`` (original | one overlay per method, a row per
        target), ``<name>_<method>_<target>.png`` (each overlay), ``<name>_<method>.npy``
        (the (T, H, W) maps) and ``summary.json``, each atomically. Returns the paths."""
        out = Path(directory)
        written = []
        labels = self.labels()
        for b, name in enumerate(self.names):
            rows = [f"{lab}  {s:.2f}" for lab, s in zip(labels[b], self.scores[b].tolist())]
            grid = attribution_grid(self.images[b], {m: v[b] for m, v in self.maps.items()}, rows)
            written.append(save_image(out / f"{name}_grid.png", grid))
            for m, v in self.maps.items():
                for k, c in enumerate(self.targets[b].tolist()):
                    shown = v[b, k].clamp(min=0) if m == "occlusion" else v[b, k]
                    written.append(
                        save_image(out / f"{name}_{m}_{c}.png", overlay(self.images[b], shown))
                    )
                buf = io.BytesIO()
                np.save(buf, v[b].detach().cpu().numpy())
                written.append(atomic_write_bytes(out / f"{name}_{m}.npy", buf.getvalue()))
        payload = {
            "images": [
                {
                    "name": n,
                    "targets": self.targets[b].tolist(),
                    "labels": labels[b],
                    "scores": self.scores[b].tolist(),
                }
                for b, n in enumerate(self.names)
            ],
            "timings_s": self.timings,
        }
        if "integrated_gradients" in self.info:
            payload["ig_completeness_residual"] = self.info["integrated_gradients"][
                "completeness_residual"
            ].tolist()
        written.append(write_json(out / "summary.json", payload))
        return written


def _names(images, B):
    if isinstance(images, (str, Path)):
        return [Path(images).stem]
    if isinstance(images, (list, tuple)) and all(isinstance(i, (str, Path)) for i in images):
        stems = [Path(i).stem for i in images]
        if len(set(stems)) == len(stems):
            return stems
    return [f"image{i}" for i in range(B)]


def attribute(
    images,
    model,
    methods="saliency",
    targets=None,
    layer=None,
    *,
    preprocess="auto",
    size: Optional[int] = None,
    output: str = "logit",
    generator: Optional[torch.Generator] = None,
    **options,
) -> AttributionResult:
    """Attribution maps of ``model``'s scores for ``images`` by one or several methods.

    Args:
        images: a file path, HWC array or (C, H, W) tensor, a list of them, or a (B, 3, H, W)
            tensor, in [0, 1].
        model: an ``nn.Module`` in eval mode returning (B, K) logits, or a zoo name
            (``"mobilenet_v2"``: its ImageNet weights, found offline).
        methods: names from ``METHODS`` (saliency, deconvnet, guided_backprop, gradcam,
            guided_gradcam, integrated_gradients, smoothgrad, occlusion), or one name.
            Default: "saliency".
        targets: None (each image's top-1), an int, one int per image, or one list of ints
            per image (several targets in one forward pass).
        layer: Grad-CAM's layer, a module name or module; None: the zoo default
            (``DEFAULT_LAYERS``). Default: None.
        preprocess: "auto" (ImageNet normalization for zoo models, identity otherwise),
            None (identity) or a callable applied inside the differentiated function.
            Default: "auto".
        size: resize + center-crop every image to ``size`` (``prepare_image``); None keeps
            them (they must then share one size). Default: None.
        output: "logit" or "probability": the score attributed. Default: "logit".
        generator: random source of SmoothGrad's noise. Default: None.
        **options: method options: ``steps``, ``baseline``, ``ig_method``, ``batch_size``
            (integrated_gradients); ``base``, ``samples``, ``noise`` (smoothgrad);
            ``window``, ``stride``, ``baseline``, ``batch_size``, ``incremental``
            (occlusion); ``relu`` (gradcam). Each goes to the methods that take it.

    Returns:
        An :class:`AttributionResult`.

    Raises:
        ValueError: unknown method or option, a model in training mode, bad targets.

    Shape:
        - maps[m]: (B, T, H, W); gradients[m]: (B, T, C, H, W); targets, scores: (B, T).

    Example:
        >>> from pyinvert.models import load_model
        >>> net = load_model("resnet18")
        >>> r = attribute(torch.rand(2, 3, 32, 32), net, ["saliency", "gradcam"],
        ...               targets=[[1, 2], [3, 4]])
        >>> r.maps["gradcam"].shape, r.gradients["saliency"].shape
        (torch.Size([2, 2, 32, 32]), torch.Size([2, 2, 3, 32, 32]))

    References:
        Each method's function in :mod:`pyinvert.attribution.gradient` and
        :mod:`pyinvert.attribution.occlusion` cites its paper and equation.
    """
    if isinstance(model, str):
        model = load_model(model, "imagenet", download=False)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"attribute: expected model to be an nn.Module or a zoo name, "
            f"got {type(model).__name__}"
        )
    if model.training:
        raise ValueError(
            "attribute: expected the model in eval mode (call model.eval()): "
            "batch statistics would mix the images"
        )
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"attribute: expected methods from {sorted(METHODS)}, got {methods}")
    accepted = {m: _options_of(METHODS[m]) for m in methods}
    if "smoothgrad" in methods:
        base = options.get("base", "saliency")
        if base in GRADIENT_METHODS and base != "smoothgrad":
            accepted["smoothgrad"] |= _options_of(GRADIENT_METHODS[base])
    stray = sorted(set(options) - set().union(*accepted.values()))
    if stray:
        raise ValueError(
            f"attribute: options {stray} are taken by none of {methods} "
            f"(they take {sorted(set().union(*accepted.values()))})"
        )
    pre = resolve_preprocess(model, preprocess, "attribute")
    x = as_batch(images, size, "attribute")
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    if targets is None:
        with torch.no_grad():
            targets = resolve_targets(None, x.shape[0], model(pre(x)), "attribute")
    maps, grads, info, timings = {}, {}, {}, {}
    t = scores = None
    for m in methods:
        kw = {k: v for k, v in options.items() if k in accepted[m]}
        if m == "smoothgrad":
            kw["generator"] = generator
        start = time.perf_counter()
        r = METHODS[m](model, pre, x, targets, output=output, layer=layer, **kw)
        timings[m] = time.perf_counter() - start
        maps[m] = r["maps"].detach()
        if r["gradients"] is not None:
            grads[m] = r["gradients"].detach()
        info[m] = r["info"]
        t, scores = r["targets"], r["scores"]
        targets = t
    return AttributionResult(
        images=x.detach(),
        maps=maps,
        gradients=grads,
        targets=t,
        scores=scores,
        timings=timings,
        info=info,
        names=_names(images, x.shape[0]),
    )
