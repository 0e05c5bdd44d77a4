"""Yosinski et al.'s regularized activation maximization: four operators r_theta applied to
the image after every gradient step, ``x <- r_theta(x + lr * grad)`` (Sec. 3 of the paper),
and the paper's four hyper-parameter sets (Table 1) as recipes of the one engine.

The operators act on the optimized tensor in the engine's CNN pixel scale, ``255 (image -
mean)``: the scale of the authors' Caffe code (0-255 pixels minus the mean), so Table 1's
learning rates keep their meaning. They run from the engine's per-step callback (after the
update rule), on the pixel canvas: no jitter, no bound, no other prior (the paper's setting).
The contribution of a pixel needs the step's gradient: with the plain gradient step of these
recipes (momentum 0) the step is ``lr * grad``, and the percentile of ``|sum_c x grad|`` is
the same as that of ``|sum_c x step|``, so the callback reads it from the step.

References:
    J. Yosinski, J. Clune, A. Nguyen, T. Fuchs, H. Lipson, "Understanding Neural Networks
    Through Deep Visualization", ICML Deep Learning Workshop 2015, Sec. 3 (the four
    regularizers) and Table 1 (the hyper-parameter sets); deep-visualization-toolbox's
    optimize_image.py (their order: decay, blur, small norm, small contribution; the
    "progress" learning-rate policy).
"""

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.optim.recipes import Recipe, Stage


def l2_decay(x: Tensor, decay: float) -> Tensor:
    """``(1 - decay) x`` (theta_decay)."""
    return x * (1.0 - decay)


def gaussian_kernel(sigma: float, truncate: float = 4.0, dtype=torch.float64) -> Tensor:
    """The 1-D Gaussian of ``sigma``, radius ``int(truncate sigma + 0.5)``, summing to 1 (as
    scipy.ndimage.gaussian_filter)."""
    radius = int(truncate * sigma + 0.5)
    r = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (r / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Each channel of [B, C, H, W] blurred by a Gaussian of ``sigma`` pixels (theta_b_width),
    separable, with the borders mirrored as scipy.ndimage's "reflect" (the authors' filter)."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, dtype=x.dtype).to(x.device)
    r = (k.numel() - 1) // 2
    B, C, H, W = x.shape
    y = x.reshape(B * C, 1, H, W)
    # "reflect" in scipy (d c b a | a b c d | d c b a) is PyTorch's "symmetric": pad by
    # flipping, for radii up to the image's side.
    y = torch.cat([y[..., :r, :].flip(-2), y, y[..., H - r :, :].flip(-2)], -2) if r else y
    y = torch.cat([y[..., :r].flip(-1), y, y[..., W - r :].flip(-1)], -1) if r else y
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return y.reshape(B, C, H, W)


def _below_percentile(v: Tensor, pct: float) -> Tensor:
    """[B, H, W] True where a value is below its image's ``pct``-th percentile (linear
    interpolation, numpy's default)."""
    q = torch.quantile(v.flatten(1).double(), pct / 100.0, dim=1).to(v.dtype)
    return v < q.view(-1, 1, 1)


def clip_small_norm(x: Tensor, pct: float) -> Tensor:
    """Pixels whose norm over channels is below the image's ``pct``-th percentile set to 0
    (theta_n_pct)."""
    if pct <= 0:
        return x
    small = _below_percentile(x.norm(dim=1), pct)
    return x.masked_fill(small.unsqueeze(1), 0.0)


def clip_small_contribution(x: Tensor, grad: Tensor, pct: float) -> Tensor:
    """Pixels whose contribution ``|sum_c x grad|`` (the first-order change of the activation
    were the pixel set to 0) is below the image's ``pct``-th percentile set to 0
    (theta_c_pct)."""
    if pct <= 0:
        return x
    small = _below_percentile((x * grad).sum(1).abs(), pct)
    return x.masked_fill(small.unsqueeze(1), 0.0)


@dataclass(frozen=True)
class YosinskiParams:
    """One hyper-parameter set of Yosinski et al. (Table 1) and its optimization.

    Attributes:
        decay: theta_decay. blur_width: theta_b_width (Gaussian sigma, pixels).
        blur_every: theta_b_every (0: never). norm_pct: theta_n_pct. contrib_pct: theta_c_pct.
        iterations: gradient steps. lr: the constant learning rate, or the "progress"
            policy's cap (max_lr). progress: None for a constant lr; else the policy's
            desired progress (lr = min(max_lr, progress / |grad|^2), an objective change of
            ``progress`` under a linear model).
    """

    decay: float = 0.0
    blur_width: float = 0.0
    blur_every: int = 0
    norm_pct: float = 0.0
    contrib_pct: float = 0.0
    iterations: int = 1000
    lr: float = 100.0
    progress: Optional[float] = None


#: Table 1's four sets, in the paper's order, with the deep-visualization-toolbox's learning
#: rates and iteration counts; set 3 made most of the paper's figures.
YOSINSKI_SETS = {
    1: YosinskiParams(
        decay=0.0, blur_width=0.5, blur_every=4, norm_pct=50, iterations=500, lr=100.0, progress=2.0
    ),
    2: YosinskiParams(decay=0.3, norm_pct=20, iterations=750, lr=100.0),
    3: YosinskiParams(decay=0.0001, blur_width=1.0, blur_every=4, iterations=1000, lr=100.0),
    4: YosinskiParams(
        decay=0.0,
        blur_width=0.5,
        blur_every=4,
        contrib_pct=90,
        iterations=1000,
        lr=1e8,
        progress=2.0,
    ),
}


def yosinski_params(which) -> YosinskiParams:
    if isinstance(which, YosinskiParams):
        return which
    if isinstance(which, str) and which.startswith("yosinski") and which[8:].isdigit():
        which = int(which[8:])
    if which not in YOSINSKI_SETS:
        raise ValueError(
            f"yosinski: expected a set in {sorted(YOSINSKI_SETS)} (or "
            f"'yosinski1' ... 'yosinski4', or YosinskiParams), got {which!r}"
        )
    return YOSINSKI_SETS[which]


def engine_lr(p: YosinskiParams) -> float:
    """The engine's step: the set's lr, or 1 under the "progress" policy (whose step the
    regularizer rescales from the second step on)."""
    return 1.0 if p.progress is not None else p.lr


def yosinski_recipe(which=3, stride: int = 1) -> Recipe:
    """The engine's recipe of a set: plain gradient steps (momentum 0) at the set's lr, no
    jitter, no bound and no TV / norm prior (the regularizers replace them), Gaussian
    initial noise."""
    p = yosinski_params(which)
    label = "custom" if isinstance(which, YosinskiParams) else which
    return Recipe(
        name=f"yosinski-{label}",
        stages=(Stage(engine_lr(p), p.iterations),),
        optimizer="momentum",
        momentum=0.0,
        reset_momentum=False,
        data_weight=1.0,
        tv_weight=0.0,
        norm_weight=0.0,
        prior_normalization="pixels",
        sigma=1.0,
        sigma_reference_numel=None,
        lr_pixels=False,
        init="randn_norm",
        bound=None,
        jitter=1,
        extra={"stride": stride, "regularizers": "yosinski"},
    )


class YosinskiRegularizer:
    """The engine callback applying a set's operators after each step (to the active rows).

    ``regularizer(t, x, loss, measure, active)``: x is modified in place. The step taken is
    read as ``x - previous x`` (the gradient times lr); with ``progress`` it is rescaled to
    ``min(max_lr, progress / |grad|^2) grad`` per row first. ``then`` is another callback run
    afterwards (its True stops the run).
    """

    def __init__(self, params: YosinskiParams, then: Optional[Callable] = None):
        self.p, self.then = params, then
        self.previous: Optional[Tensor] = None

    def start(self, x0: Tensor) -> None:
        self.previous = x0.detach().clone()

    def __call__(self, t, x, loss, measure, active):
        p = self.p
        with torch.no_grad():
            prev = (
                self.previous
                if self.previous is not None and self.previous.shape == x.shape
                else None
            )
            step = x - prev if prev is not None else torch.zeros_like(x)
            grad = step / engine_lr(p)  # the activation's gradient (ascent direction)
            if p.progress is not None and prev is not None:
                g2 = grad.flatten(1).square().sum(1).clamp_min(1e-30)
                lr = torch.clamp(p.progress / g2, max=p.lr).view(-1, 1, 1, 1)
                y = prev + lr * grad
            else:
                y = x.clone()
            if p.decay:
                y = l2_decay(y, p.decay)
            if p.blur_width > 0 and p.blur_every > 0 and (t - 1) % p.blur_every == 0:
                y = gaussian_blur(y, p.blur_width)
            y = clip_small_norm(y, p.norm_pct)
            y = clip_small_contribution(y, grad, p.contrib_pct)
            keep = active.view(-1, *[1] * (x.dim() - 1))
            x.copy_(torch.where(keep, y, x))
            self.previous = x.detach().clone()
        return bool(self.then(t, x, loss, measure, active)) if self.then is not None else False


__all__ = [
    "l2_decay",
    "gaussian_blur",
    "gaussian_kernel",
    "clip_small_norm",
    "clip_small_contribution",
    "YosinskiParams",
    "YOSINSKI_SETS",
    "yosinski_recipe",
    "YosinskiRegularizer",
    "yosinski_params",
    "engine_lr",
]
