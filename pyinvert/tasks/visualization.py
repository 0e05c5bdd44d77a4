"""The general visualization task, :func:`visualize` (any objective of the code and the image
on the one engine), and activation maximization, :func:`actmax`, built on it. Caricatures,
DeepDream and invariance maps have their own modules (:mod:`pyinvert.tasks.caricature`,
:mod:`~pyinvert.tasks.dream`, :mod:`~pyinvert.tasks.invariance`).

References:
    A. Mahendran and A. Vedaldi, "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016: eq. (3) (inversion), eq. (4) and Sec. 3.2 (activation
    maximization), eq. (5) (caricatures), Sec. 5.2 (the variety of pre-images).
"""

import importlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.objectives import Activation, ClassLogProbability, Objective
from pyinvert.optim.options import RunOptions
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import as_representation
from pyinvert.tasks import common
from pyinvert.tasks.common import recipe_priors  # noqa: F401 (re-exported)
from pyinvert.tasks.inputs import check_size, image_size_pair, prepare_images
from pyinvert.tasks.result import Result, per_image


@dataclass
class VisualizationResult(Result):
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

    HISTORIES = ("loss_history", "measure_history")

    def summary(self) -> dict:
        out = {
            "names": self.names,
            "labels": self.labels,
            "measure": self.measure.tolist(),
            "failed": self.failed.tolist(),
            "stopped_at": self.stopped_at.tolist(),
            "seconds": self.seconds,
        }
        if self.probabilities is not None:
            out["probability"] = self.probabilities.tolist()
        return out


def visualize(
    objective: Objective,
    *,
    representation,
    B: Optional[int] = None,
    init=None,
    image_size=None,
    recipe="ijcv2016",
    steps: Optional[int] = None,
    restarts: int = 1,
    priors: bool = True,
    init_noise: float = 0.0,
    batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[Sequence[int]] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    backend: str = "fused",
    weights="imagenet",
    progress: bool = True,
    callback: Optional[Callable] = None,
    names: Optional[Sequence[str]] = None,
    options: Optional[RunOptions] = None,
    parameterization=None,
    _fn: str = "visualize",
    **overrides,
) -> VisualizationResult:
    """Minimize any objective of the representation's code and the image (the general engine).

    Args:
        objective: an :class:`pyinvert.objectives.Objective` for B rows (per-row tensors
            have B rows; they are repeated for the restarts).
        representation: anything :func:`pyinvert.representations.as_representation` takes
            (a name, a CNN, a HOG / DenseSIFT module, any ``nn.Module`` or callable).
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
        options: a :class:`pyinvert.optim.options.RunOptions`; a keyword left at its default
            takes its value from here. Default: None.
        parameterization: what is optimized (:mod:`pyinvert.optim.parameterizations`); None:
            the pixels. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult`.
    """
    fn = _fn
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
        backend=backend,
        progress=progress,
        callback=callback,
    )
    rep, rec = common.resolve(fn, representation, recipe, opts, weights, overrides)
    dtype, R = opts.dtype, opts.restarts
    x0 = originals = None
    if init is not None:
        prep = prepare_images(init, rep, fn, opts.device, dtype, check=False)
        x0, originals, dev = prep.x, prep.originals, prep.device
        B = x0.shape[0] if B is None else B
        if x0.shape[0] != B:
            raise ValueError(f"{fn}: expected {B} starting images, got {x0.shape[0]}")
        H, W = prep.size
    else:
        if image_size is None:
            raise ValueError(f"{fn}: expected image_size=(H, W) without init, got None")
        if B is None:
            raise ValueError(f"{fn}: expected B (the number of images) without init")
        H, W = image_size_pair(image_size, fn)
        dev = torch.device(opts.device) if opts.device is not None else torch.device("cpu")
    check_size(rep, H, W, fn)
    obj = objective
    if priors:
        obj = obj + recipe_priors(rec, B, rep.channels, (H, W), dev, dtype, opts.backend, fn)
    out = common.run(
        fn,
        obj,
        rep,
        rec,
        opts,
        B=B,
        image_size=(H, W),
        device=dev,
        init=x0,
        init_noise=init_noise,
        parameterization=parameterization,
    )
    last = (
        _io.last_finite(out.measure_history)
        if out.measure_history.shape[0]
        else torch.zeros(0, dtype=torch.float64)
    )
    settings = {
        "representation": rep.config(),
        "recipe": rec.to_dict(),
        "restarts": R,
        "image_size": [H, W],
        "objective": objective.describe(),
        "priors": priors,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "backend": opts.backend,
        "iterations": rec.iterations,
        **common.parameterization_settings(parameterization),
    }
    return VisualizationResult(
        images=per_image(common.images_of(out, rep), B, R),
        measure=per_image(last, B, R),
        loss_history=per_image(out.loss_history, B, R),
        measure_history=per_image(out.measure_history, B, R),
        failed=per_image(out.failed, B, R),
        stopped_at=per_image(out.stopped_at, B, R),
        codes=per_image(out.codes.detach(), B, R) if out.codes is not None else None,
        originals=originals,
        settings=settings,
        seconds=out.seconds,
        names=list(names) if names is not None else [],
    )


def actmax(
    representation,
    units,
    *,
    neuron=None,
    image_size=224,
    recipe="actmax",
    objective: str = "auto",
    steps: Optional[int] = None,
    data_weight: Optional[float] = None,
    restarts: int = 1,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[Sequence[int]] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    batch_size: Optional[int] = None,
    weights="imagenet",
    backend: str = "fused",
    progress: bool = True,
    callback: Optional[Callable] = None,
    labels: Optional[Sequence[str]] = None,
    options: Optional[RunOptions] = None,
    parameterization=None,
    regularizers=None,
    **overrides,
) -> VisualizationResult:
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
        representation: a CNN (:class:`pyinvert.CNN` or "cnn:MODEL:LAYER") of one layer, or
            anything else :func:`pyinvert.representations.as_representation` takes.
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
        options: a :class:`pyinvert.optim.options.RunOptions`. Default: None.
        parameterization: what is optimized; None: the pixels. Default: None.
        regularizers: Yosinski et al.'s regularized recipe instead of the IJCV one: 1, 2, 3
            or 4 (Table 1's sets), "yosinski1" ... "yosinski4", or a
            :class:`pyinvert.toolbox.YosinskiParams`; its operators (L2 decay, Gaussian blur,
            clipping pixels of small norm / small contribution) act after every step, and
            ``recipe`` is replaced by the set's (see :mod:`pyinvert.toolbox.regularizers`).
            Default: None.
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
    units = common.unit_list(units, fn)
    if regularizers is not None:
        # A real cycle: pyinvert.toolbox imports this module.
        from pyinvert.toolbox import regularizers as _yosinski

        params = _yosinski.yosinski_params(regularizers)
        recipe = _yosinski.yosinski_recipe(params)
        callback = _yosinski.YosinskiRegularizer(
            params, then=callback if callback is not None or options is None else options.callback
        )
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
        backend=backend,
        progress=progress,
        callback=callback,
    )
    restarts = opts.restarts
    rep = as_representation(representation, backend=opts.backend, weights=weights, fn=fn)
    image_size = image_size_pair(image_size, fn)
    rec = get_recipe(recipe, representation=rep, **overrides)
    B = len(units)
    y = x = None
    if objective not in ("auto", "activation", "log_probability"):
        raise ValueError(
            f"{fn}: expected objective in ('auto', 'activation', "
            f"'log_probability'), got {objective!r}"
        )
    with torch.no_grad():
        p = next(rep.parameters(), None)
        probe = rep(
            torch.zeros(
                1,
                rep.channels,
                *image_size,
                dtype=p.dtype if p is not None else torch.float32,
                device=p.device if p is not None else "cpu",
            )
        )
    K = probe.shape[1] if probe.dim() >= 2 else 0
    bad = [u for u in units if not 0 <= u < K]
    if bad:
        raise ValueError(
            f"{fn}: expected units in [0, {K}) for a code of shape "
            f"{list(probe.shape[1:])}, got {bad}"
        )
    if objective == "auto":
        objective = "log_probability" if probe.dim() == 2 and neuron is None else "activation"
    if objective == "log_probability" and (probe.dim() != 2 or neuron is not None):
        raise ValueError(
            f"{fn}: objective 'log_probability' needs a layer of logits (N, K), "
            f"got a code of shape {list(probe.shape)}"
        )
    if neuron is not None:
        if probe.dim() != 4:
            raise ValueError(
                f"{fn}: a neuron needs a spatial layer (N, C, h, w), "
                f"got a code of shape {list(probe.shape)}"
            )
        h, w = probe.shape[-2:]
        if isinstance(neuron, str):
            if neuron != "center":
                raise ValueError(f"{fn}: expected neuron to be (y, x) or 'center', got {neuron!r}")
            y, x = (h - 1) // 2, (w - 1) // 2
        else:
            y, x = (int(v) for v in neuron)
            if not (0 <= y < h and 0 <= x < w):
                raise ValueError(
                    f"{fn}: expected the neuron inside the {h}x{w} grid, got ({y}, {x})"
                )
    weight = rec.data_weight if data_weight is None else data_weight
    term = (
        ClassLogProbability(torch.tensor(units))
        if objective == "log_probability"
        else Activation(torch.tensor(units), y=y, x=x)
    )
    res = visualize(
        weight * term,
        representation=rep,
        B=B,
        image_size=image_size,
        recipe=rec,
        options=opts,
        parameterization=parameterization,
        names=[f"unit{u:04d}" for u in units],
        _fn=fn,
    )
    if res.codes is not None and res.codes.dim() == (3 if restarts > 1 else 2):
        prob = res.codes.double().softmax(-1)
        idx = torch.tensor(units, device=prob.device)
        if restarts > 1:
            res.probabilities = prob.gather(-1, idx.view(-1, 1, 1).expand(-1, restarts, 1))[..., 0]
        else:
            res.probabilities = prob.gather(-1, idx.view(-1, 1))[:, 0]
        res.probabilities = res.probabilities.cpu()
    res.labels = list(labels) if labels is not None else [str(u) for u in units]
    if regularizers is not None:
        res.settings["yosinski"] = dict(params.__dict__)
    res.settings.update(
        {
            "units": units,
            "neuron": None if y is None else [y, x],
            "data_weight": weight if not isinstance(weight, Tensor) else weight.tolist(),
            "objective": objective,
        }
    )
    return res


# The tasks that moved to their own modules (caricature, dream, invariance), still importable
# from here; a lazy lookup, because they import visualize from this module (a real cycle).
_MOVED = {
    "caricature": "pyinvert.tasks.caricature",
    "dream": "pyinvert.tasks.dream",
    "invariance_map": "pyinvert.tasks.invariance",
    "InvarianceResult": "pyinvert.tasks.invariance",
}


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
