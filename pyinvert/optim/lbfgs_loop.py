"""The engine's loop with the batched per-row L-BFGS (:mod:`pyinvert.optim.lbfgs`) as the
update rule: ``optimizer="lbfgs"`` (the default of :func:`pyinvert.texture` and
:func:`pyinvert.style_transfer`, as in Gatys et al.; any task takes
``options=RunOptions(optimizer="lbfgs")``).

It has the signature and the returns of :func:`pyinvert.optim.loop.optimize`: every row is its
own problem (its own curvature history and strong-Wolfe line search), the histories hold one
value per accepted iteration, and a row whose value or gradient becomes NaN/Inf is frozen and
reported. What differs from the first-order rules: the recipe's iterations are L-BFGS
iterations (each uses one closure value or more: the line search's), the stages' learning
rates are not used (the line search sets the step), and the objective must stay fixed while a
row's line search runs, so there is no jitter (the centred crop is seen throughout) and no
projection onto the recipe's bound (the pixels are clamped to [0, 1] when they become images).

The L-BFGS settings come from ``recipe.extra["lbfgs"]`` (a dict of
:func:`pyinvert.optim.lbfgs.lbfgs` keywords) over :data:`LBFGS_DEFAULTS`.

References:
    L. A. Gatys, A. S. Ecker, M. Bethge. NIPS 2015 and CVPR 2016 (L-BFGS on the pixels);
    DeepTextures (scipy's L-BFGS-B, memory m = 10).
"""

from typing import Callable, Optional, Sequence

import math

import torch
from torch import Tensor

from pyinvert.optim.jitter import center_crop
from pyinvert.optim.lbfgs_state import LBFGS, NONFINITE
from pyinvert.optim.recipes import Recipe
from pyinvert.optim.rowwise import rowsum
from pyinvert.optim.rules import _rows

#: The settings used unless ``recipe.extra["lbfgs"]`` changes them: the first step's RMS
#: change of the pixels (in the optimized scale: 1 of 255 for a CNN), the memory of scipy's
#: L-BFGS-B (DeepTextures), closure values up to twice the iterations, and no tolerance stop
#: on the gradient (the run lasts the recipe's iterations unless a step or value stalls).
LBFGS_DEFAULTS = dict(
    first_step=1.0,
    history_size=10,
    tolerance_grad=0.0,
    tolerance_change=1e-12,
    line_search="strong_wolfe",
)


def lbfgs_settings(recipe: Recipe) -> dict:
    """:data:`LBFGS_DEFAULTS` with ``recipe.extra["lbfgs"]`` applied, and max_iter = the
    recipe's iterations, max_eval twice that (unless given)."""
    opts = {**LBFGS_DEFAULTS, **dict(recipe.extra.get("lbfgs", {}))}
    opts["max_iter"] = recipe.iterations
    opts.setdefault("max_eval", 2 * recipe.iterations)
    return opts


def optimize(
    x: Tensor,
    objective,
    recipe: Recipe,
    *,
    image_size,
    lr_scale: Tensor = None,
    generators: Sequence[torch.Generator] = (),
    progress=None,
    callback: Optional[Callable] = None,
    to_image: Optional[Callable] = None,
):
    """Run per-row L-BFGS on x in place for the recipe's iterations.

    Args:
        x: [N, C, H', W'] the optimized tensor (modified in place).
        objective: callable (crop, full) -> (loss [N], measure [N]).
        recipe: the number of iterations (``recipe.iterations``) and ``extra["lbfgs"]``.
        image_size: (H, W) seen by the representation (the centred crop of the canvas).
        lr_scale, generators: unused (the line search sets the steps; no jitter).
        progress: an object with ``update(n)``, advanced by the most advanced row's
            iterations, or None.
        callback: ``callback(iteration, x, loss, measure, active)`` after each iteration of
            the most advanced row (x the accepted points); True stops the run.
        to_image: None when x is the image canvas, else the parameterization's map.

    Returns:
        As :func:`pyinvert.optim.loop.optimize`: (loss history [N, T] at the accepted points,
        measure history [N, T], active [N] bool, stopped_at [N] long: the iteration at which
        a value or gradient was not finite, -1 for none).
    """
    N = x.shape[0]
    T = recipe.iterations
    hdtype = torch.float64 if x.device.type != "mps" else torch.float32
    history = torch.full((N, T), float("nan"), dtype=hdtype, device=x.device)
    measures = torch.full((N, T), float("nan"), dtype=hdtype, device=x.device)
    settings = lbfgs_settings(recipe)
    first_step = settings.pop("first_step")
    opt = None

    def result(t_end=None):
        if opt is None:
            return (
                history.double().cpu(),
                measures.double().cpu(),
                torch.ones(N, dtype=torch.bool, device=x.device),
                torch.full((N,), -1, dtype=torch.long),
            )
        active = opt.status != NONFINITE
        stopped = torch.where(active, torch.full_like(opt.iterations, -1), opt.iterations)
        h, m = (history, measures) if t_end is None else (history[:, :t_end], measures[:, :t_end])
        return h.double().cpu(), m.double().cpu(), active, stopped.cpu()

    if N == 0:
        return result()

    def evaluate(z):
        z = z.detach().requires_grad_(True)
        image = z if to_image is None else to_image(z)
        loss, measure = objective(center_crop(image, image_size), image)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        return loss.detach(), measure.detach(), grad

    # The first step. Each row is solved in u = x / s and its loss scaled by c, two constants
    # of the row alone (from its own starting gradient g0), so that the first step (along
    # -g0) moves the pixels by ``first_step`` (RMS) however the objective is scaled: with
    # torch's rule (first step 1 / |g|_1) a small gradient gives a step whose change of value
    # is below float32 resolution and the line search fails. L-BFGS is invariant to both
    # constants after the first step (its initial Hessian scale y.s / y.y absorbs them).
    f0, m0, g0 = evaluate(x)
    flat = g0.reshape(N, -1)
    l1 = rowsum(flat.abs())
    l2 = rowsum(flat * flat).sqrt()
    ok = torch.isfinite(l1) & torch.isfinite(l2) & (l1 > 0) & (l2 > 0)
    one = torch.ones_like(l1)
    safe1, safe2 = torch.where(ok, l1, one), torch.where(ok, l2, one)
    scale = torch.where(
        ok, first_step * safe1 * math.sqrt(flat.shape[1]) / safe2, torch.ones_like(l1)
    )
    c = torch.where(ok, 1.0 / (scale * safe1), torch.ones_like(l1))
    rs, rc = _rows(scale, x), _rows(c, x)
    opt = LBFGS(x / rs, **settings, _fn="lbfgs")
    gscale = (rc * rs).reshape(N)  # the gradient's factor, once
    opt.scale_asks(scale)  # the trials in x's scale (written with the trials on the CPU)
    opt.scale_gradients(gscale)
    opt.tell(f0 * c, g0, _fresh=True)
    accepted_measure = m0.to(x.dtype)
    done_iters = 0
    # On the CPU (float32/64) the per-step bookkeeping is done on Python lists and NumPy
    # scalars (the same values): after the network's backward every call runs with cold caches,
    # and each NumPy array operation then costs tens of microseconds.
    host = opt._use_rows and history.device.type == "cpu"
    if host:
        hist_np, meas_np, c_np = history.numpy(), measures.numpy(), c.numpy()
        acc = accepted_measure.tolist()
    while not opt.done:
        loss, measure, grad = evaluate(opt.ask_scaled())
        before = opt.iterations.tolist() if host else opt.iterations.clone()
        with torch.no_grad():
            scaled = loss * c
            opt.tell(scaled, grad, _fresh=True)
            # Freed now, not after the next evaluation: a gradient kept alive across the
            # network's next forward and backward fragments the heap, and glibc then returns
            # memory that the next activations fault in again (see lbfgs_rows).
            del grad
            if host:
                top = _record(opt, before, scaled, measure, acc, hist_np, meas_np, c_np, T)
            else:
                accepted_measure, top = _record_tensors(
                    opt, before, scaled, measure, accepted_measure, history, measures, c, T
                )
        if top > done_iters:
            if progress is not None:
                progress.update(top - done_iters)
            done_iters = top
            if callback is not None:
                x.copy_(opt.x * rs)
                if host:
                    accepted_measure = torch.tensor(acc, dtype=x.dtype)
                if callback(top, x, opt.f / c, accepted_measure.clone(), opt.status != NONFINITE):
                    return result(top)
    with torch.no_grad():
        x.copy_(opt.x * rs)
    return result()


def _record(opt, before, scaled, measure, acc, hist_np, meas_np, c_np, T) -> int:
    """:func:`_record_tensors` on Python lists (``before``: the rows' iterations before the
    tell; ``acc``: the measures at the accepted points, updated in place) and NumPy views of
    the CPU histories; returns the most advanced row's iterations."""
    its = opt.iterations.tolist()
    moved = [b for b, (now, was) in enumerate(zip(its, before)) if now > was]
    if moved:
        f_np = opt.f.numpy()
        f = opt.f.tolist()
        new = scaled.to(opt.f.dtype).tolist()
        values = measure.to(opt._x.dtype).tolist()
        for b in moved:
            if f[b] == new[b]:
                acc[b] = values[b]
            it = min(max(its[b] - 1, 0), T - 1)
            hist_np[b, it] = f_np[b] / c_np[b]  # NumPy scalars: the dtype's rounding
            meas_np[b, it] = acc[b]
    return max(its)


def _record_tensors(opt, before, scaled, measure, accepted_measure, history, measures, c, T):
    """Write the rows that accepted a step into the histories: (the measures at the accepted
    points, the most advanced row's iterations)."""
    rows = torch.arange(history.shape[0], device=history.device)
    hdtype = history.dtype
    x_dtype = accepted_measure.dtype
    moved = opt.iterations > before
    # The accepted point is the trial just evaluated unless the line search fell back to its
    # bracket's low end (then the measure of the previous accepted point stays).
    same = moved & (opt.f == scaled.to(opt.f.dtype))
    accepted_measure = torch.where(same, measure.to(x_dtype), accepted_measure)
    if bool(moved.any()):
        it = (opt.iterations - 1).clamp(0, T - 1)
        history[rows[moved], it[moved]] = (opt.f / c)[moved].to(hdtype)
        measures[rows[moved], it[moved]] = accepted_measure[moved].to(hdtype)
    return accepted_measure, int(opt.iterations.max())
