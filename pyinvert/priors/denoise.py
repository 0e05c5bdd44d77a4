r"""MAP denoising with a prior: :func:`denoise`, the evaluation of the learned priors.

For a noisy image :math:`y = x + \sigma n` (Gaussian n), the estimate minimizes

.. math::
    \frac{1}{2\sigma^2}\|x - y\|^2 + \lambda\, E(x)

with :math:`E` the prior's energy: a learned model's (applied to each channel when the model
is gray and the image is not), on the image reflect-padded by k // 2 pixels
(:func:`padded_energy`: the model's energy sums over the valid k x k patches only, so without
the padding a pixel within k // 2 of the border lies in fewer cliques and is denoised less;
on the tuning crops of ``bench/tune_denoise.py`` at sigma 25 the padding gave the FoE +0.35 dB,
while padding TV's energy cost it 0.05 dB, so TV keeps its own boundary) or, for ``prior="tv"``, the project's TV prior
:func:`pyinvert.priors.tv_norm` with :data:`TV_BETA` = 1 and :data:`TV_EPS` (true total
variation, smoothed at 0: the classical baseline; TV_2, the inversion recipes' default, is a
quadratic smoother and denoises worse). Images are in [0, 1] and ``sigma`` is on that scale
(25/255 for the usual "sigma = 25"). The minimization is the project's per-row L-BFGS
(:func:`pyinvert.optim.lbfgs.lbfgs`, strong-Wolfe line search) from x = y, every image its
own problem.

The default weight :math:`\lambda` for each sigma is :data:`DEFAULT_WEIGHTS`, fitted by
``bench/tune_denoise.py`` on crops of the training photos only
(:func:`pyinvert.data.photos.training_photos`), never on the held-out ones; between the
tabulated sigmas the weight is interpolated linearly in log sigma and log weight.
"""

import math
from numbers import Real
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.optim.lbfgs import lbfgs
from pyinvert.priors.handcrafted import tv_norm
from pyinvert.priors.models import LearnedModel
from pyinvert.priors.store import as_model

#: TV exponent and smoothing of the TV baseline.
TV_BETA = 1.0
TV_EPS = 1e-4

#: sigma (in 8-bit levels) -> weight, per prior; fitted by bench/tune_denoise.py on training
#: photos only (see that script's header for the data and the grid; the learned priors'
#: energies reflect-padded as :func:`denoise` does): ``--sigma 15 25 50 --priors tv``,
#: ``--sigma 25 15 50 --priors foe`` (the shipped FoE of ``pyinvert/priors/weights/foe.pt``)
#: and ``--sigma 25 --priors ica``; the ica weights at 15 and 50 were not searched: they are
#: the sigma-25 weight times 25 / sigma.
DEFAULT_WEIGHTS = {
    "tv": {15: 11.17, 25: 6.7, 50: 4.738},
    "foe": {15: 0.165, 25: 0.14, 50: 0.099},
    "ica": {15: 0.005208, 25: 0.003125, 50: 0.0015625},
}


def prior_energy(prior, x: Tensor) -> Tensor:
    """The energy [B] of images [B, C, H, W] under ``prior`` ("tv" or a learned model)."""
    if isinstance(prior, str) and prior == "tv":
        return tv_norm(x, beta=TV_BETA, eps=TV_EPS)
    model: LearnedModel = prior
    if model.channels == 1 and x.shape[1] != 1:
        B, C = x.shape[:2]
        return model.energy(x.reshape(B * C, 1, *x.shape[2:])).view(B, C).sum(dim=1)
    return model.energy(x)


def padded_energy(prior, x: Tensor) -> Tensor:
    """:func:`prior_energy` of x reflect-padded by k // 2 (a learned model of filter size k;
    "tv" unpadded), the energy :func:`denoise` minimizes: every pixel in k^2 cliques."""
    if isinstance(prior, str):
        return prior_energy(prior, x)
    p = prior.size // 2
    return prior_energy(prior, F.pad(x, (p, p, p, p), mode="reflect") if p else x)


def default_weight(prior_name: str, sigma: float) -> float:
    """The tabulated weight of ``prior_name`` at ``sigma`` (in [0, 1] units): log-log
    interpolation in :data:`DEFAULT_WEIGHTS`, constant beyond its ends."""
    if prior_name not in DEFAULT_WEIGHTS:
        raise ValueError(
            f"denoise: no default weight for prior {prior_name!r} (tabulated: "
            f"{tuple(DEFAULT_WEIGHTS)}); pass weight="
        )
    table = sorted(DEFAULT_WEIGHTS[prior_name].items())
    s = sigma * 255.0
    if s <= table[0][0]:
        return float(table[0][1])
    if s >= table[-1][0]:
        return float(table[-1][1])
    for (s0, w0), (s1, w1) in zip(table, table[1:]):
        if s0 <= s <= s1:
            t = (math.log(s) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return float(math.exp((1 - t) * math.log(w0) + t * math.log(w1)))
    raise AssertionError("unreachable")


def _prior_name(prior) -> str:
    if isinstance(prior, str):
        return prior if prior in ("tv", "foe", "ica") else "path"
    return "model"  # a model of the user's own: no tabulated weight


def denoise(
    noisy: Tensor,
    prior="foe",
    sigma: float = 25.0 / 255.0,
    weight: Optional[float] = None,
    steps: int = 200,
) -> Tensor:
    r"""MAP estimate of clean images from ``noisy`` (module docstring).

    Args:
        noisy: images in [0, 1] (float32 or float64).
        prior: "tv", "foe", "ica" (the shipped priors), a path, or a learned model.
            Default: "foe".
        sigma: the noise's standard deviation, in [0, 1] units. Default: 25/255.
        weight: the prior's weight lambda; None: the tabulated default for this sigma
            (shipped priors and TV only). Default: None.
        steps: L-BFGS iterations. Default: 200.

    Returns:
        The denoised images (not clamped), like ``noisy``.

    Shape:
        - noisy: (B, C, H, W) with H, W >= the filter size; output: the same.

    Example:
        >>> y = torch.rand(1, 1, 16, 16)
        >>> denoise(y, "tv", sigma=0.1, steps=5).shape
        torch.Size([1, 1, 16, 16])

    References:
        S. Roth, M. J. Black. Fields of Experts. CVPR 2005, Sec. 5.1 (denoising).
    """
    fn = "denoise"
    if not isinstance(noisy, Tensor):
        raise TypeError(f"{fn}: expected noisy to be a torch.Tensor, got {type(noisy).__name__}")
    if noisy.dim() != 4 or noisy.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"{fn}: expected noisy images of shape (B, C, H, W), float32 or float64, got "
            f"{list(noisy.shape)} {noisy.dtype}"
        )
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not 0 < sigma < float("inf"):
        raise ValueError(f"{fn}: expected sigma > 0 (in [0, 1] units, e.g. 25/255), got {sigma}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fn}: expected steps to be an int >= 1, got {steps!r}")
    name = _prior_name(prior)
    if weight is None:
        weight = default_weight(name, float(sigma))
    energy_of = "tv" if name == "tv" else as_model(prior, fn)
    if isinstance(weight, bool) or not isinstance(weight, Real) or not weight >= 0:
        raise ValueError(f"{fn}: expected weight >= 0, got {weight}")
    if noisy.shape[0] == 0:
        return noisy.clone()
    y = noisy.detach()
    if energy_of != "tv":
        energy_of = energy_of.to(device=y.device)
        k = energy_of.size
        if min(y.shape[-2:]) < k:
            raise ValueError(
                f"{fn}: expected images of at least {k}x{k} pixels, got {y.shape[-2]}x{y.shape[-1]}"
            )
    lam = float(weight) * float(sigma) ** 2  # the objective times sigma^2

    def closure(x):
        data = 0.5 * (x - y).pow(2).flatten(1).sum(dim=1)
        return data + lam * padded_energy(energy_of, x)

    x, _ = lbfgs(closure, y.clone(), max_iter=steps, history_size=20, tolerance_grad=1e-9)
    return x.to(noisy.dtype)
