"""Caricatures (IJCV 2016 eq. (5)): amplify what a layer already sees in an image."""

from typing import Callable, Optional, Sequence

import torch

from pyinvert.objectives import Caricature
from pyinvert.optim.options import RunOptions
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import as_representation
from pyinvert.tasks.inputs import prepare_images
from pyinvert.tasks.visualization import VisualizationResult, visualize


def caricature(
    images,
    representation,
    *,
    recipe="caricature",
    steps: Optional[int] = None,
    data_weight: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    batch_size: Optional[int] = None,
    weights="imagenet",
    backend: str = "fused",
    progress: bool = True,
    callback: Optional[Callable] = None,
    names: Optional[Sequence[str]] = None,
    options: Optional[RunOptions] = None,
    parameterization=None,
    **overrides,
) -> VisualizationResult:
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
        options: a :class:`pyinvert.optim.options.RunOptions`. Default: None.
        parameterization: what is optimized; None: the pixels. Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult` (``originals`` are the inputs; ``measure`` is the
        normalized inner product, 1 at the start for a non-negative code).

    References:
        Mahendran & Vedaldi, IJCV 2016, eq. (5); nnpreimage exp_enhance.m (which computes
        Phi0 on the un-normalized image, an oversight we do not copy).
    """
    fn = "caricature"
    opts = RunOptions.resolve(
        fn,
        options,
        steps=steps,
        generator=generator,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        backend=backend,
        progress=progress,
        callback=callback,
    )
    rep = as_representation(representation, backend=opts.backend, weights=weights, fn=fn)
    prep = prepare_images(images, rep, fn, opts.device, opts.dtype, check=False)
    with torch.no_grad():
        ref = rep(prep.x)
    rec = get_recipe(recipe, representation=rep, **overrides)
    weight = rec.data_weight if data_weight is None else data_weight
    res = visualize(
        weight * Caricature(ref),
        representation=rep,
        init=prep.batch,
        recipe=rec,
        options=RunOptions.resolve(fn, opts, device=prep.device),
        names=names,
        parameterization=parameterization,
        _fn=fn,
    )
    res.settings["data_weight"] = weight
    return res
