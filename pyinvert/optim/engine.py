"""The one optimization engine behind every task (:mod:`pyinvert.tasks`).

It runs an objective (:mod:`pyinvert.objectives`) over rows = images x restarts, in chunks,
each row seeded on its own (its result does not depend on its batch-mates), from noise (the
recipe's initialization) or from given images placed at the centre of the jitter canvas (as
nnpreimage's ``initialImage``), with the recipe's schedule and update rule
(:func:`pyinvert.optim.loop.optimize`: per-row NaN freezing, callback, progress bar; or
:func:`pyinvert.optim.lbfgs_loop.optimize` for ``recipe.optimizer == "lbfgs"``).
"""

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pyinvert.objectives import Objective
from pyinvert.optim import lbfgs_loop
from pyinvert.optim.heap import keep_freed_memory
from pyinvert.optim.loop import optimize
from pyinvert.optim.parameterizations import PixelCanvas, _quantile, init_rows  # noqa: F401
from pyinvert.optim.recipes import Recipe


def recipe_scales(rec: Recipe, C: int, H: int, W: int) -> dict:
    """sigma (the initialization's scale), the priors' multiplier and the lr multiplier of a
    recipe for images of C x H x W values (see :mod:`pyinvert.optim.recipes`)."""
    numel = C * H * W
    if rec.prior_normalization == "sigma2":
        sigma = (
            rec.sigma
            if rec.sigma_reference_numel is None
            else rec.sigma * math.sqrt(numel / rec.sigma_reference_numel)
        )
        prior_scale = 0.5 / sigma**2
        lr_mult = sigma**2
    else:
        sigma = rec.sigma
        prior_scale = 1.0 / (H * W)
        lr_mult = 1.0
    if rec.lr_pixels:
        lr_mult *= H * W
    return {"sigma": sigma, "prior_scale": prior_scale, "lr_mult": lr_mult}


def per_row(value, B: int, R: int, name: str, device, dtype, fn: str = "invert") -> Tensor:
    """A float or Tensor[B] recipe weight as Tensor[B*R] (row = image * R + restart)."""
    if isinstance(value, Tensor):
        v = value.detach().to(device=device, dtype=dtype)
        if v.dim() == 0:
            v = v.expand(B)
        if v.shape != (B,):
            raise ValueError(
                f"{fn}: expected {name} to be a float or of shape ({B},), got {list(value.shape)}"
            )
        return v.repeat_interleave(R)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{fn}: expected {name} to be a float or a Tensor, got {type(value).__name__}"
        )
    return torch.full((B * R,), float(value), device=device, dtype=dtype)


def row_seeds(
    B: int,
    R: int,
    seeds: Optional[Sequence[int]],
    generator: Optional[torch.Generator],
    fn: str = "invert",
) -> List[int]:
    """One seed per row: from ``seeds[b]`` alone for image b's restarts, else drawn from
    ``generator`` (a fresh one from torch's global generator when None)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{fn}: expected generator to be a torch.Generator, got {type(generator).__name__}"
        )
    if seeds is not None:
        if len(seeds) != B or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds
        ):
            raise ValueError(f"{fn}: expected seeds to be {B} ints (one per image), got {seeds!r}")
        return [
            int(
                torch.randint(
                    2**62,
                    (1,),
                    generator=torch.Generator().manual_seed((int(s) * 1000003 + r) % 2**63),
                ).item()
            )
            for s in seeds
            for r in range(R)
        ]
    gen = (
        generator
        if generator is not None
        else torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    )
    return torch.randint(2**62, (B * R,), generator=gen).tolist()


@dataclass
class EngineOutput:
    """Per row (N = B R): the final images x (the centred H x W window, optimized scale),
    loss and measure histories [N, T] (NaN after a stop), failed [N], stopped_at [N], the
    codes of the final x (None when the objective needs none) and the wall time."""

    x: Tensor
    loss_history: Tensor
    measure_history: Tensor
    failed: Tensor
    stopped_at: Tensor
    codes: Optional[Tensor]
    seconds: float


def run(
    objective: Objective,
    representation,
    rec: Recipe,
    *,
    B: int,
    R: int,
    image_size,
    channels: int,
    seeds: Sequence[int],
    device,
    dtype,
    init: Optional[Tensor] = None,
    init_noise: float = 0.0,
    batch_size: Optional[int] = None,
    progress=True,
    callback: Optional[Callable] = None,
    desc: str = "",
    final_codes: bool = True,
    parameterization=None,
) -> EngineOutput:
    """Optimize ``objective`` for B images x R restarts (see the module docstring).

    Args:
        objective: the objective of the B images (rows are repeated for the restarts).
        representation: Phi (called on the jittered crop when the objective needs a code).
        rec: the recipe (schedule, update rule, bound, jitter, initialization).
        B, R: images and restarts per image.
        image_size: (H, W) seen by Phi.
        channels: channels of x.
        seeds: B * R ints (:func:`row_seeds`).
        device, dtype: where and how to optimize.
        init: None for the recipe's noise, or [B, C, H, W] starting images in the optimized
            scale (placed at the centre of the jitter canvas, zeros around).
        init_noise: with ``init``, add this times the recipe's noise (restarts then differ).
        batch_size: rows per chunk (None: all).
        progress: True for a tqdm bar, False for none, or an object with ``update(n)``.
        callback: ``callback(iteration, x, loss, measure, active)``; True stops the chunk.
        desc: the progress bar's label.
        final_codes: compute Phi of the final images.
        parameterization: what is optimized (:mod:`pyinvert.optim.parameterizations`); None:
            the pixel canvas.
    """
    H, W = (int(v) for v in image_size)
    N = B * R
    J = rec.jitter
    keep_freed_memory()  # once per process: no page faults between iterations (optim.heap)
    shape = (channels, H + J - 1, W + J - 1)
    sc = recipe_scales(rec, channels, H, W)
    dev = torch.device(device)
    objective = objective.to(device=dev, dtype=dtype).repeat_rows(R)
    if init is not None:
        init = init.detach().to(device=dev, dtype=dtype)
        if R > 1:
            init = init.repeat_interleave(R, 0)
    chunk = batch_size or max(N, 1)
    param = parameterization if parameterization is not None else PixelCanvas()
    to_image = None if param.projects else (lambda p: param.image(p, representation, shape[-2:]))
    bar, own_bar = None, False
    if progress is True:
        bar = tqdm(
            total=rec.iterations * math.ceil(N / chunk) if N else 0,
            desc=desc,
            unit="it",
            leave=False,
        )
        own_bar = True
    elif progress:
        bar = progress

    def step_objective(obj):
        def f(crop, full):
            code = representation(crop) if obj.needs_code else None
            loss, measure = obj.evaluate(code, full)
            return loss, (measure if measure is not None else loss)

        return f

    xs, hists, meas, fails, stops, codes = [], [], [], [], [], []
    o = (J - 1) // 2
    t0 = time.perf_counter()
    try:
        for start in range(0, N, chunk):
            rows = slice(start, min(start + chunk, N))
            n = rows.stop - rows.start
            x = param.init(
                rec,
                shape,
                seeds[rows],
                sc["sigma"],
                dtype,
                dev,
                representation,
                start=None if init is None else init[rows],
                start_noise=init_noise,
            )
            gens = [torch.Generator().manual_seed(int(s) ^ 0x5EED) for s in seeds[rows]]
            obj = objective.select(rows)
            lr_scale = torch.full((n,), param.lr_scale(sc["lr_mult"], rec), device=dev, dtype=dtype)
            loop = lbfgs_loop.optimize if rec.optimizer == "lbfgs" else optimize
            hist, mhist, active, stopped = loop(
                x,
                step_objective(obj),
                rec,
                image_size=(H, W),
                lr_scale=lr_scale,
                generators=gens,
                progress=bar,
                callback=callback,
                to_image=to_image,
            )
            if to_image is not None:
                with torch.no_grad():
                    x = to_image(x)
            xc = x[..., o : o + H, o : o + W]
            if final_codes and representation is not None:
                with torch.no_grad():
                    codes.append(representation(xc))
            xs.append(xc)
            hists.append(hist)
            meas.append(mhist)
            fails.append(~active.cpu())
            stops.append(stopped)
    finally:
        if own_bar:
            bar.close()
    seconds = time.perf_counter() - t0
    if N == 0:
        T = rec.iterations
        empty = torch.zeros(0, T, dtype=torch.float64)
        return EngineOutput(
            torch.zeros((0, channels, H, W), device=dev, dtype=dtype),
            empty,
            empty.clone(),
            torch.zeros(0, dtype=torch.bool),
            torch.zeros(0, dtype=torch.long),
            None,
            seconds,
        )
    T = max(h.shape[1] for h in hists)

    def pad(h):
        return torch.cat([h, h.new_full((h.shape[0], T - h.shape[1]), float("nan"))], 1)

    return EngineOutput(
        torch.cat(xs),
        torch.cat([pad(h) for h in hists]),
        torch.cat([pad(h) for h in meas]),
        torch.cat(fails),
        torch.cat(stops),
        torch.cat(codes) if codes else None,
        seconds,
    )
