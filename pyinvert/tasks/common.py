"""What every task shares after its inputs are prepared: the options, the representation and
its recipe, the recipe's priors, and the engine run (:mod:`pyinvert.optim.engine`)."""

from typing import Optional

import torch
from torch import Tensor

from pyinvert.objectives import ImagePrior, Objective
from pyinvert.optim import engine as _engine
from pyinvert.optim.options import RunOptions
from pyinvert.optim.recipes import Recipe, get_recipe
from pyinvert.representations import Representation, as_representation


def resolve(
    fn: str,
    representation,
    recipe,
    opts: RunOptions,
    weights,
    overrides: dict,
    dsift_from_recipe: bool = False,
):
    """(representation, recipe) of a task: the recipe's CNN variant for a CNN, the schedule
    stretched to ``opts.steps``; ``dsift_from_recipe``: the name "dsift" takes the recipe's
    bin size and step (inversion, as in the papers)."""
    rec = get_recipe(recipe, **overrides)
    rep = as_representation(
        representation,
        backend=opts.backend,
        recipe=rec if dsift_from_recipe else None,
        weights=weights,
        fn=fn,
    )
    if rep.kind == "cnn" or not dsift_from_recipe:
        rec = get_recipe(recipe, representation=rep, **overrides)
    if opts.steps is not None:
        rec = rec.scaled(opts.steps, fn)
    return rep, rec


def recipe_priors(
    rec: Recipe,
    B: int,
    channels: int,
    image_size,
    device,
    dtype,
    backend: str = "fused",
    fn: str = "visualize",
) -> ImagePrior:
    """The recipe's TV_beta + N_alpha priors with its weights scaled for this image size
    (``fn`` names the caller in errors)."""
    H, W = image_size
    sc = _engine.recipe_scales(rec, channels, H, W)
    scale = sc["prior_scale"]
    tv = _engine.per_row(rec.tv_weight, B, 1, "tv_weight", device, dtype, fn) * scale
    nw = _engine.per_row(rec.norm_weight, B, 1, "norm_weight", device, dtype, fn) * scale
    return ImagePrior(
        tv_weight=tv,
        beta=rec.beta,
        norm_weight=nw,
        alpha=rec.alpha,
        isotropic=rec.isotropic_norm,
        backend=backend,
    )


def run(
    fn: str,
    objective: Objective,
    rep: Representation,
    rec: Recipe,
    opts: RunOptions,
    *,
    B: int,
    image_size,
    device,
    init: Optional[Tensor] = None,
    init_noise: float = 0.0,
    parameterization=None,
) -> _engine.EngineOutput:
    """The engine on B images x ``opts.restarts``, seeded per row."""
    seeds = _engine.row_seeds(B, opts.restarts, opts.seeds, opts.generator, fn)
    return _engine.run(
        objective,
        rep,
        rec,
        B=B,
        R=opts.restarts,
        image_size=image_size,
        channels=rep.channels,
        seeds=seeds,
        device=device,
        dtype=opts.dtype,
        init=init,
        init_noise=init_noise,
        batch_size=opts.batch_size,
        progress=opts.progress,
        callback=opts.callback,
        desc=f"{fn} {rep.name} ({rec.name})",
        parameterization=parameterization,
    )


def images_of(out: _engine.EngineOutput, rep: Representation) -> Tensor:
    """The final rows as images in [0, 1] (a stopped row's NaNs as 0)."""
    return torch.nan_to_num(rep.postprocess(torch.nan_to_num(out.x, nan=0.0))).detach()


def parameterization_settings(parameterization) -> dict:
    return {} if parameterization is None else {"parameterization": parameterization.config()}


def unit_list(units, fn: str) -> list:
    """Channel or class indices as a list of ints (an int, a list or a Tensor), or a
    ValueError naming ``fn``."""
    if isinstance(units, Tensor):
        units = units.tolist()
    if isinstance(units, int) and not isinstance(units, bool):
        units = [units]
    if (
        not isinstance(units, (list, tuple))
        or not units
        or not all(isinstance(u, int) and not isinstance(u, bool) for u in units)
    ):
        raise ValueError(
            f"{fn}: expected units as an int or a non-empty list of ints, got {units!r}"
        )
    return list(units)
