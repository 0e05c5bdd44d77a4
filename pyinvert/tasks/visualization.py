"""Visualizations of a representation with the one engine (:mod:`pyinvert.optim.engine`):
activation maximization, caricatures, DeepDream, invariance maps, and the general
:func:`visualize` they are built on (which :func:`pyinvert.invert` shares).

Each returns a :class:`VisualizationResult` (or :class:`InvarianceResult`) whose ``save()``
writes PNGs and a JSON record atomically.

References:
    A. Mahendran and A. Vedaldi, "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016: eq. (3) (inversion), eq. (4) and Sec. 3.2 (activation
    maximization), eq. (5) (caricatures), Sec. 5.2 (the variety of pre-images).
    A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: Going Deeper into Neural Networks", 2015.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.optim import engine as _engine
from pyinvert import io as _io
from pyinvert.objectives import (Activation, Caricature, ClassLogProbability, DeepDream,
                                 ImagePrior, Objective)
from pyinvert.optim.recipes import Recipe, get_recipe
from pyinvert.representations import make_representation


@dataclass
class VisualizationResult:
    """What :func:`visualize`, :func:`actmax`, :func:`caricature` and :func:`dream` return.

    Attributes:
        images: the visualizations in [0, 1], [B, C, H, W] ([B, R, C, H, W] with restarts).
        measure: the objective's measure of the final images (activation, error ...), [B]
            (or [B, R]).
        loss_history: objective per iteration, [B, T] (or [B, R, T]); NaN after a stop.
        measure_history: the measure per iteration, same shape.
        failed: True where the loss became NaN/Inf and that row was stopped.
        stopped_at: the iteration of the stop, -1 for none.
        codes: Phi of the final images, or None.
        originals: the starting images in [0, 1] (caricature, dream), or None.
        probabilities: softmax probability of the maximized class (logit layers), or None.
        labels: a label per image (unit / class name), may be empty.
        settings: recipe, representation and options (JSON-friendly).
        seconds: wall time of the optimization.
        names: file names (without extension) used by :meth:`save`.
    """
    images: Tensor
    measure: Tensor
    loss_history: Tensor
    measure_history: Tensor
    failed: Tensor
    stopped_at: Tensor
    codes: Optional[Tensor]
    originals: Optional[Tensor]
    settings: dict
    probabilities: Optional[Tensor] = None
    labels: List[str] = field(default_factory=list)
    seconds: float = 0.0
    names: List[str] = field(default_factory=list)

    def summary(self) -> dict:
        out = {"names": self.names, "labels": self.labels, "measure": self.measure.tolist(),
               "failed": self.failed.tolist(), "stopped_at": self.stopped_at.tolist(),
               "seconds": self.seconds}
        if self.probabilities is not None:
            out["probability"] = self.probabilities.tolist()
        return out

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """Write ``<name>.png`` per image (``<name>-r<k>.png`` with restarts) and
        ``result.json`` (settings, measures, histories), each atomically."""
        directory = Path(directory)
        B = self.images.shape[0]
        names = list(names) if names is not None else (self.names or
                                                        [f"image{i:03d}" for i in range(B)])
        if len(names) != B:
            raise ValueError(f"VisualizationResult.save: expected {B} names, got {len(names)}")
        written = _io.save_image_rows(directory, self.images, names)
        payload = {"settings": self.settings, **self.summary(), "names": names,
                   "loss_history": self.loss_history.tolist(),
                   "measure_history": self.measure_history.tolist()}
        written.append(_io.write_json(directory / "result.json", _io.nan_to_none(payload)))
        return written


def _resolve(representation, backend, weights):
    return make_representation(representation, backend=backend, weights=weights)


def recipe_priors(rec: Recipe, B: int, channels: int, image_size, device, dtype,
                  backend: str = "fused") -> ImagePrior:
    """The recipe's TV_beta + N_alpha priors with its weights scaled for this image size."""
    H, W = image_size
    sc = _engine.recipe_scales(rec, channels, H, W)
    tv = _engine.per_row(rec.tv_weight, B, 1, "tv_weight", device, dtype) * sc["prior_scale"]
    nw = _engine.per_row(rec.norm_weight, B, 1, "norm_weight", device, dtype) * sc["prior_scale"]
    return ImagePrior(tv_weight=tv, beta=rec.beta, norm_weight=nw, alpha=rec.alpha,
                      isotropic=rec.isotropic_norm, backend=backend)


def visualize(objective: Objective, *, representation, B: Optional[int] = None, init=None,
              image_size=None, recipe="ijcv2016", steps: Optional[int] = None,
              restarts: int = 1, priors: bool = True, init_noise: float = 0.0,
              batch_size: Optional[int] = None, generator: Optional[torch.Generator] = None,
              seeds: Optional[Sequence[int]] = None, device=None,
              dtype: torch.dtype = torch.float32, backend: str = "fused",
              weights="imagenet", progress: bool = True, callback: Optional[Callable] = None,
              names: Optional[Sequence[str]] = None, **overrides) -> VisualizationResult:
    """Minimize any objective of the representation's code and the image (the general engine).

    Args:
        objective: an :class:`pyinvert.objectives.Objective` for B rows (per-row tensors
            have B rows; they are repeated for the restarts).
        representation: a name ("cnn:MODEL:LAYER", "hog"...) or a representation module.
        B: the number of images; None: taken from ``init``. Default: None.
        init: None (the recipe's noise), or starting images [B, C, H, W] in [0, 1].
            Default: None.
        image_size: (H, W); needed without ``init``. Default: None.
        recipe: a recipe name or :class:`pyinvert.optim.recipes.Recipe`. Default: "ijcv2016".
        steps: iterations (the schedule stretched/shortened); None: the recipe's.
            Default: None.
        restarts: rows per image. Default: 1.
        priors: add the recipe's TV_beta + N_alpha priors to the objective. Default: True.
        init_noise: with ``init``, add this times the recipe's noise. Default: 0.0.
        batch_size: rows per chunk; None: all. Default: None.
        generator: seeds the initializations and jitter. Default: None.
        seeds: one int per image (overrides generator). Default: None.
        device: where to optimize; None: init's device or the CPU. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        backend: the priors' implementation, "fused" or "reference". Default: "fused".
        weights: weights of a "cnn:..." representation. Default: "imagenet".
        progress: a tqdm progress bar. Default: True.
        callback: ``callback(iteration, x, loss, measure, active)``. Default: None.
        names: a name per image for :meth:`VisualizationResult.save`. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult`.
    """
    fn = "visualize"
    rep = _resolve(representation, backend, weights)
    rec = get_recipe(recipe, representation=rep, **overrides)
    if steps is not None:
        rec = rec.scaled(steps)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"{fn}: expected restarts to be an int >= 1, got {restarts!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: expected dtype float32 or float64, got {dtype}")
    x0 = originals = None
    if init is not None:
        from pyinvert.tasks.inversion import as_image_batch
        batch = as_image_batch(init, fn)
        dev = torch.device(device) if device is not None else batch.device
        batch = batch.to(device=dev, dtype=dtype)
        x0 = rep.preprocess(batch)
        originals = rep.postprocess(x0)
        B = x0.shape[0] if B is None else B
        if x0.shape[0] != B:
            raise ValueError(f"{fn}: expected {B} starting images, got {x0.shape[0]}")
        H, W = x0.shape[-2:]
    else:
        if image_size is None:
            raise ValueError(f"{fn}: expected image_size=(H, W) without init, got None")
        if B is None:
            raise ValueError(f"{fn}: expected B (the number of images) without init")
        H, W = (int(v) for v in ((image_size, image_size) if isinstance(image_size, int)
                                 else image_size))
        dev = torch.device(device) if device is not None else torch.device("cpu")
    min_size = getattr(rep, "min_size", 1)
    if H < min_size or W < min_size:
        raise ValueError(f"{fn}: expected images of at least {min_size}x{min_size} pixels for "
                         f"{getattr(rep, 'name', 'the representation')}, got {H}x{W}")
    C = rep.channels
    obj = objective
    if priors:
        obj = obj + recipe_priors(rec, B, C, (H, W), dev, dtype, backend)
    row_seeds = _engine.row_seeds(B, restarts, seeds, generator, fn)
    out = _engine.run(obj, rep, rec, B=B, R=restarts, image_size=(H, W), channels=C,
                      seeds=row_seeds, device=dev, dtype=dtype, init=x0,
                      init_noise=init_noise, batch_size=batch_size, progress=progress,
                      callback=callback, desc=f"{fn} {getattr(rep, 'name', '')} ({rec.name})")
    R = restarts

    def shape_rows(t):
        return t.reshape(B, R, *t.shape[1:]) if (R > 1 and t is not None) else t

    images = torch.nan_to_num(rep.postprocess(torch.nan_to_num(out.x, nan=0.0))).detach()
    last = _io.last_finite(out.measure_history) if out.measure_history.shape[0] else \
        torch.zeros(0, dtype=torch.float64)
    settings = {"representation": rep.config() if hasattr(rep, "config") else str(rep),
                "recipe": rec.to_dict(), "restarts": R, "image_size": [H, W],
                "objective": objective.describe(), "priors": priors, "device": str(dev),
                "dtype": str(dtype).replace("torch.", ""), "backend": backend,
                "iterations": rec.iterations}
    return VisualizationResult(
        images=shape_rows(images), measure=shape_rows(last),
        loss_history=shape_rows(out.loss_history),
        measure_history=shape_rows(out.measure_history), failed=shape_rows(out.failed),
        stopped_at=shape_rows(out.stopped_at),
        codes=shape_rows(out.codes.detach()) if out.codes is not None else None,
        originals=originals, settings=settings, seconds=out.seconds,
        names=list(names) if names is not None else [])


def _unit_list(units, fn):
    if isinstance(units, Tensor):
        units = units.tolist()
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    if not isinstance(units, (list, tuple)) or not units or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in units):
        raise ValueError(f"{fn}: expected units as an int or a non-empty list of ints, "
                         f"got {units!r}")
    return list(units)


def actmax(representation, units, *, neuron=None, image_size=224, recipe="actmax",
           objective: str = "auto", steps: Optional[int] = None,
           data_weight: Optional[float] = None,
           restarts: int = 1, generator: Optional[torch.Generator] = None,
           seeds: Optional[Sequence[int]] = None, device=None,
           dtype: torch.dtype = torch.float32, batch_size: Optional[int] = None,
           weights="imagenet", backend: str = "fused", progress: bool = True,
           callback: Optional[Callable] = None, labels: Optional[Sequence[str]] = None,
           **overrides) -> VisualizationResult:
    r"""Activation maximization (IJCV 2016 eq. (4)): from noise, find images maximizing
    ``data_weight * a(x)`` plus the recipe's priors, one image per unit, all in one batch.

    ``a`` is a channel's mean over the grid, one neuron of it (``neuron=(y, x)`` or
    "center"), or for a layer of logits [N, K] (a classifier) by default the class's
    log-probability ``log softmax(Phi(x))_k`` (:class:`pyinvert.objectives.ClassLogProbability`).
    The paper maximizes the raw class score (``objective="activation"``); on an ImageNet
    classifier with close classes that score grows together with its neighbours' (tabby /
    tiger cat / Egyptian cat), leaving p(class) low (measured on MobileNetV2 at 224 px, 300
    steps: p(tabby) = 0.29 at data weight 1, 0.76 at 10, 0.55 at 30), while the
    log-probability also pushes the neighbours down (p(tabby) = 1.00 at weight 1); see
    :mod:`pyinvert.optim.recipes` (``_actmax``).

    Args:
        representation: a CNN (:class:`pyinvert.representations.cnn.CNN` or "cnn:MODEL:LAYER") of one layer.
        units: channel / class indices, an int or a list (one image each).
        neuron: None (the whole channel), (y, x) in the layer's grid, or "center".
            Default: None.
        image_size: H = W (or (H, W)) of the images. Default: 224.
        recipe: the recipe (name or Recipe). Default: "actmax".
        objective: "activation" (the unit's activation or class score, IJCV eq. (4)),
            "log_probability" (a class's log-softmax; logit layers only) or "auto"
            ("log_probability" for a layer of logits [N, K], else "activation").
            Default: "auto".
        steps: iterations; None: the recipe's. Default: None.
        data_weight: the objective's weight; None: the recipe's. Default: None.
        restarts: images per unit. Default: 1.
        generator: seeds the noise and the jitter. Default: None.
        seeds: one int per unit. Default: None.
        device: where to optimize. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        batch_size: rows per chunk. Default: None.
        weights: weights of a "cnn:..." name. Default: "imagenet".
        backend: the priors' implementation. Default: "fused".
        progress: a progress bar. Default: True.
        callback: per-step callback. Default: None.
        labels: a label per unit (e.g. class names) for figures. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult`; ``probabilities`` holds the softmax probability of
        each maximized class when the layer's code is [N, K] (logits).

    Example:
        >>> from torch import nn
        >>> from pyinvert.representations.cnn import CNN
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(8, 4))
        >>> res = actmax(CNN(net, "4"), [0, 3], image_size=16, steps=5, progress=False,
        ...              generator=torch.Generator().manual_seed(0))
        >>> res.images.shape, res.probabilities.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2]))

    References:
        Mahendran & Vedaldi, IJCV 2016, eq. (4) and Sec. 3.2; nnpreimage exp_maximization.m.
    """
    fn = "actmax"
    units = _unit_list(units, fn)
    rep = _resolve(representation, backend, weights)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    rec = get_recipe(recipe, representation=rep, **overrides)
    B = len(units)
    y = x = None
    if objective not in ("auto", "activation", "log_probability"):
        raise ValueError(f"{fn}: expected objective in ('auto', 'activation', "
                         f"'log_probability'), got {objective!r}")
    with torch.no_grad():
        p = next(rep.parameters(), None)
        probe = rep(torch.zeros(1, rep.channels, *image_size,
                                dtype=p.dtype if p is not None else torch.float32,
                                device=p.device if p is not None else "cpu"))
    K = probe.shape[1] if probe.dim() >= 2 else 0
    bad = [u for u in units if not 0 <= u < K]
    if bad:
        raise ValueError(f"{fn}: expected units in [0, {K}) for a code of shape "
                         f"{list(probe.shape[1:])}, got {bad}")
    if objective == "auto":
        objective = "log_probability" if probe.dim() == 2 and neuron is None else "activation"
    if objective == "log_probability" and (probe.dim() != 2 or neuron is not None):
        raise ValueError(f"{fn}: objective 'log_probability' needs a layer of logits (N, K), "
                         f"got a code of shape {list(probe.shape)}")
    if neuron is not None:
        if probe.dim() != 4:
            raise ValueError(f"{fn}: a neuron needs a spatial layer (N, C, h, w), "
                             f"got a code of shape {list(probe.shape)}")
        h, w = probe.shape[-2:]
        if isinstance(neuron, str):
            if neuron != "center":
                raise ValueError(f"{fn}: expected neuron to be (y, x) or 'center', "
                                 f"got {neuron!r}")
            y, x = (h - 1) // 2, (w - 1) // 2
        else:
            y, x = (int(v) for v in neuron)
            if not (0 <= y < h and 0 <= x < w):
                raise ValueError(f"{fn}: expected the neuron inside the {h}x{w} grid, "
                                 f"got ({y}, {x})")
    weight = rec.data_weight if data_weight is None else data_weight
    term = ClassLogProbability(torch.tensor(units)) if objective == "log_probability" else \
        Activation(torch.tensor(units), y=y, x=x)
    res = visualize(weight * term, representation=rep, B=B, image_size=image_size, recipe=rec,
                    steps=steps, restarts=restarts, generator=generator, seeds=seeds,
                    device=device, dtype=dtype, batch_size=batch_size, backend=backend,
                    progress=progress, callback=callback,
                    names=[f"unit{u:04d}" for u in units])
    if res.codes is not None and res.codes.dim() == (3 if restarts > 1 else 2):
        prob = res.codes.double().softmax(-1)
        idx = torch.tensor(units, device=prob.device)
        if restarts > 1:
            res.probabilities = prob.gather(-1, idx.view(-1, 1, 1).expand(-1, restarts, 1))[..., 0]
        else:
            res.probabilities = prob.gather(-1, idx.view(-1, 1))[:, 0]
        res.probabilities = res.probabilities.cpu()
    res.labels = list(labels) if labels is not None else [str(u) for u in units]
    res.settings.update({"units": units, "neuron": None if y is None else [y, x],
                         "data_weight": weight if not isinstance(weight, Tensor)
                         else weight.tolist(), "objective": objective})
    return res


def caricature(images, representation, *, recipe="caricature", steps: Optional[int] = None,
               data_weight: Optional[float] = None, generator: Optional[torch.Generator] = None,
               device=None, dtype: torch.dtype = torch.float32,
               batch_size: Optional[int] = None, weights="imagenet", backend: str = "fused",
               progress: bool = True, callback: Optional[Callable] = None,
               names: Optional[Sequence[str]] = None, **overrides) -> VisualizationResult:
    r"""Caricatures (IJCV 2016 eq. (5)): from each image, amplify what the layer already sees,
    maximizing :math:`\langle \max(\Phi_0,0)/\|\max(\Phi_0,0)\|^2, \Phi(x)\rangle` plus the
    recipe's priors.

    Args:
        images: images in [0, 1], [B, C, H, W] (or paths / arrays, one size).
        representation: a CNN or "cnn:MODEL:LAYER".
        recipe: the recipe. Default: "caricature".
        steps: iterations; None: the recipe's. Default: None.
        data_weight: the objective's weight; None: the recipe's. Default: None.
        generator: seeds the jitter. Default: None.
        device: where to optimize. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        batch_size: rows per chunk. Default: None.
        weights: weights of a "cnn:..." name. Default: "imagenet".
        backend: the priors' implementation. Default: "fused".
        progress: a progress bar. Default: True.
        callback: per-step callback. Default: None.
        names: a name per image. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult` (``originals`` are the inputs; ``measure`` is the
        normalized inner product, 1 at the start for a non-negative code).

    References:
        Mahendran & Vedaldi, IJCV 2016, eq. (5); nnpreimage exp_enhance.m (which computes
        Phi0 on the un-normalized image, an oversight we do not copy).
    """
    from pyinvert.tasks.inversion import as_image_batch
    rep = _resolve(representation, backend, weights)
    batch = as_image_batch(images, "caricature")
    dev = torch.device(device) if device is not None else batch.device
    batch = batch.to(device=dev, dtype=dtype)
    with torch.no_grad():
        ref = rep(rep.preprocess(batch))
    rec = get_recipe(recipe, representation=rep, **overrides)
    weight = rec.data_weight if data_weight is None else data_weight
    res = visualize(weight * Caricature(ref), representation=rep, init=batch, recipe=rec,
                    steps=steps, generator=generator, device=dev, dtype=dtype,
                    batch_size=batch_size, backend=backend, progress=progress,
                    callback=callback, names=names)
    res.settings["data_weight"] = weight
    return res


def dream(images, representation, *, octaves: int = 4, octave_scale: float = 1.4,
          steps: int = 10, lr: Optional[float] = None, jitter: Optional[int] = None,
          recipe="dream", generator: Optional[torch.Generator] = None, device=None,
          dtype: torch.dtype = torch.float32, weights="imagenet", backend: str = "fused",
          progress: bool = True, names: Optional[Sequence[str]] = None,
          **overrides) -> VisualizationResult:
    r"""DeepDream: amplify a layer (``maximize 1/2 |Phi(x)|^2``) over a pyramid of scales.

    The image is processed from the smallest octave (``octave_scale ** (octaves - 1)`` times
    smaller) up to its size; at each octave the detail added so far (the dreamed image minus
    the resized original) is upsampled and added to the original at that scale, then
    ``steps`` normalized-gradient steps with random jitter are taken.

    Args:
        images: images in [0, 1], [B, C, H, W] (or paths / arrays, one size).
        representation: a CNN or "cnn:MODEL:LAYER".
        octaves: number of scales. Default: 4.
        octave_scale: ratio between successive scales. Default: 1.4.
        steps: steps per octave. Default: 10.
        lr: the step length in pixel units (0-255); None: the recipe's (1.5). Default: None.
        jitter: jitter amount J (random shifts in [0, J)); None: the recipe's (32).
            Default: None.
        recipe: the recipe. Default: "dream".
        generator: seeds the jitter. Default: None.
        device: where to optimize. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        weights: weights of a "cnn:..." name. Default: "imagenet".
        backend: the priors' implementation. Default: "fused".
        progress: a progress bar. Default: True.
        names: a name per image. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult` of the last octave (``originals`` are the inputs,
        ``measure`` the final mean squared activation).

    References:
        Mordvintsev, Olah & Tyka, "Inceptionism: Going Deeper into Neural Networks", 2015.
    """
    from pyinvert.tasks.inversion import as_image_batch
    fn = "dream"
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"{fn}: expected octaves to be an int >= 1, got {octaves!r}")
    if not octave_scale > 1.0 and octaves > 1:
        raise ValueError(f"{fn}: expected octave_scale > 1, got {octave_scale!r}")
    rep = _resolve(representation, backend, weights)
    batch = as_image_batch(images, fn)
    dev = torch.device(device) if device is not None else batch.device
    batch = batch.to(device=dev, dtype=dtype)
    H, W = batch.shape[-2:]
    rec = get_recipe(recipe, representation=rep, **overrides)
    stage = rec.stages[0]
    rec = get_recipe(rec, stages=((stage.lr if lr is None else float(lr), int(steps), True),),
                     **({"jitter": int(jitter)} if jitter is not None else {}))
    gen = generator if generator is not None else torch.Generator().manual_seed(
        int(torch.randint(2 ** 62, (1,)).item()))
    base = rep.preprocess(batch)
    min_size = getattr(rep, "min_size", 1)
    sizes = []
    for k in range(octaves - 1, -1, -1):
        s = (max(int(round(H / octave_scale ** k)), min_size),
             max(int(round(W / octave_scale ** k)), min_size))
        sizes.append(s)
    detail = None
    res = None
    total = 0.0
    for s in sizes:
        b = F.interpolate(base, size=s, mode="bilinear", align_corners=False) \
            if s != tuple(base.shape[-2:]) else base
        d = torch.zeros_like(b) if detail is None else \
            F.interpolate(detail, size=s, mode="bilinear", align_corners=False)
        # As images in [0, 1] (visualize preprocesses them again): the usual clip to the
        # valid range between octaves.
        start = rep.postprocess(b + d)
        res = visualize(DeepDream(), representation=rep, init=start, recipe=rec,
                        priors=False, generator=torch.Generator().manual_seed(
                            int(torch.randint(2 ** 62, (1,), generator=gen).item())),
                        device=dev, dtype=dtype, backend=backend, progress=progress,
                        names=names)
        total += res.seconds
        x = rep.preprocess(res.images.reshape(-1, *res.images.shape[-3:]).to(dev, dtype))
        detail = x - b
    res.originals = rep.postprocess(base)
    res.seconds = total
    res.settings.update({"octaves": octaves, "octave_scale": octave_scale,
                         "sizes": [list(s) for s in sizes], "steps_per_octave": steps})
    return res


@dataclass
class InvarianceResult:
    """What :func:`invariance_map` returns.

    Attributes:
        spread: per-pixel standard deviation across the R reconstructions (mean over colour
            channels), in [0, 1] image units, [B, H, W].
        mean_spread: its mean per image, [B].
        inversion: the :class:`pyinvert.tasks.inversion.InversionResult` with restarts.
    """
    spread: Tensor
    mean_spread: Tensor
    inversion: object

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """Each reconstruction, ``<name>-spread.png`` (the heat map) and ``invariance.json``."""
        from pyinvert import figures
        directory = Path(directory)
        names = list(names) if names is not None else (self.inversion.names or
                                                        [f"image{i:03d}" for i in
                                                         range(self.spread.shape[0])])
        written = self.inversion.save(directory, names)
        top = float(self.spread.max()) if self.spread.numel() else 1.0
        for i, n in enumerate(names):
            written.append(_io.save_image(directory / f"{n}-spread.png",
                                          figures.heat_map(self.spread[i], vmax=top)))
        written.append(_io.write_json(directory / "invariance.json", _io.nan_to_none(
            {"names": names, "mean_spread": self.mean_spread.tolist(), "max_spread": top,
             "restarts": self.inversion.restarts})))
        return written


def invariance_map(images, representation, *, restarts: int = 4, **kwargs) -> InvarianceResult:
    """Invert each image ``restarts`` times from different random starts (IJCV 2016 Sec. 5.2:
    the variety of pre-images) and measure, per pixel, how much the reconstructions differ:
    what the representation is invariant to varies most.

    Args:
        images: images as for :func:`pyinvert.invert`.
        representation: the representation.
        restarts: R >= 2 reconstructions per image. Default: 4.
        **kwargs: any :func:`pyinvert.invert` option (recipe, steps, generator, ...).

    Returns:
        An :class:`InvarianceResult`.
    """
    from pyinvert.tasks.inversion import invert
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 2:
        raise ValueError(f"invariance_map: expected restarts to be an int >= 2, got {restarts!r}")
    res = invert(images, representation=representation, restarts=restarts, **kwargs)
    spread = res.images.std(dim=1, unbiased=False).mean(1).cpu()
    return InvarianceResult(spread=spread, mean_spread=spread.flatten(1).mean(1), inversion=res)
