r"""Learned priors as objective terms: :class:`LearnedPrior` (on the image) and
:class:`FeaturePrior` (on a CNN layer's activations, the thesis' priors on feature maps), plus
:func:`train_feature_prior` and :func:`resolve_prior` (what ``invert(prior=...)`` accepts).

The optimized tensor of an inversion lives in its representation's pixel scale
(``255 * image - offset``, :meth:`pyinvert.representations.base.Representation.preprocess`);
the image priors were trained on images in [0, 1]. :class:`LearnedPrior` multiplies x by
``input_scale`` (1/255 in :func:`pyinvert.invert`) before the energy; the offset needs no
correction because the image priors' filters sum to 0 over each channel
(:mod:`pyinvert.priors.models`). A gray prior on a C-channel x is the sum of its energies on
each channel.
"""

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from pyinvert.objectives.base import Objective, Weight, check_weight, map_weight
from pyinvert.priors.denoise import prior_energy
from pyinvert.priors.models import FoE, ICA, LearnedModel, SeparableFoE
from pyinvert.priors.store import as_model
from pyinvert.priors.train import train
from pyinvert.data.photos import training_photos
from pyinvert.priors.handcrafted import tv_norm
from pyinvert.representations.base import to_gray

#: invert(prior=...): the weight of a learned image prior in units of the TV term's
#: (inversion_prior). Tuned for "foe" on training photos only: HOG, cvpr2015, 120 steps, the
#: centre 96 x 96 crops of astronaut and coffee downscaled by 4; 0.3, 1, 3, 10, 30 tried, 10
#: gave the best PSNR against the originals (11.24 / 11.62 dB vs TV alone 10.93 / 11.30; 30 a
#: little more PSNR but a worse feature error on coffee). "ica" reuses it (not tuned).
LEARNED_WEIGHT = {"foe": 10.0, "ica": 10.0}
#: Whether a learned image prior replaces the recipe's TV term (True) or is added to it
#: (False, the default). Replacing it was tried and is worse at every weight (HOG, the crops
#: above: feature error 0.34 / 0.37 vs 0.20 / 0.22 with TV, PSNR 9.1 vs 10.9 dB): from the
#: random start the Student-t experts' gradient vanishes on large responses (rho'(s) ~ 2/s),
#: so the prior alone does not remove the start's noise; TV does, and the FoE then adds
#: what it knows about natural image structure.
REPLACE_TV = False


class LearnedPrior(Objective):
    r"""``weight * E(input_scale * x)``: a learned prior's energy as a term of the image alone.

    Args:
        model: a learned model (:class:`pyinvert.priors.FoE`, ...) or "foe", "ica", a path.
        weight: a float or a per-row Tensor[N]. Default: 1.0.
        input_scale: x is multiplied by this before the energy (1/255 for the inversions'
            pixel scale). Default: 1.0.

    Shape:
        - x: (N, C, H, W) with H, W >= the filter size; output: (N,)

    Example:
        >>> from pyinvert.priors import FoE
        >>> term = LearnedPrior(FoE(3, 4, generator=torch.Generator().manual_seed(0)), 2.0)
        >>> term(None, torch.zeros(2, 1, 8, 8)).detach()
        tensor([0., 0.])
    """

    needs_code = False

    def __init__(self, model, weight: Weight = 1.0, input_scale: float = 1.0):
        self.model = as_model(model, "LearnedPrior")
        self.weight = check_weight(weight, "LearnedPrior")
        self.input_scale = float(input_scale)

    def evaluate(self, code, x):
        model = self.model
        if model.basis.device != x.device or model.basis.dtype != x.dtype:
            model = model.to(device=x.device, dtype=x.dtype)
            self.model = model
        return self.weight * prior_energy(model, x * self.input_scale), None

    def map_rows(self, fn):
        out = LearnedPrior.__new__(LearnedPrior)
        out.model, out.input_scale = self.model, self.input_scale
        out.weight = map_weight(self.weight, fn)
        return out

    def describe(self):
        w = self.weight if not isinstance(self.weight, Tensor) else "w[N]"
        return f"{w} * LearnedPrior({self.model.kind}, {self.model.size}x{self.model.size})"


class FeaturePrior(Objective):
    r"""``weight * E(layer(x)) / M``: a learned prior on the activations of a network layer
    (Harder's "priors on CNN feature maps"), a term of the image alone; M is the number of
    values of one map (C h w), so that the weight is per activation, comparable to the
    normalized data term.

    Args:
        model: a learned model whose channels are the layer's (see :func:`train_feature_prior`).
        layer: a representation (e.g. ``make_representation("cnn:mobilenet_v2:features.3")``)
            mapping the optimized x (its pixel scale) to the layer's maps [N, C, h, w].
        weight: a float or a per-row Tensor[N]. Default: 1.0.
    """

    needs_code = False

    def __init__(self, model: LearnedModel, layer: nn.Module, weight: Weight = 1.0):
        if not isinstance(model, LearnedModel):
            raise TypeError(f"FeaturePrior: expected a learned model, got {type(model).__name__}")
        self.model, self.layer = model, layer
        self.weight = check_weight(weight, "FeaturePrior")

    def evaluate(self, code, x):
        model = self.model
        if model.basis.dtype != x.dtype or model.basis.device != x.device:
            model = self.model = model.to(device=x.device, dtype=x.dtype)
        maps = self.layer(x)
        return self.weight * model.energy(maps) / maps[0].numel(), None

    def map_rows(self, fn):
        return FeaturePrior(self.model, self.layer, map_weight(self.weight, fn))

    def describe(self):
        return f"FeaturePrior({self.model.kind} on {getattr(self.layer, 'name', 'a layer')})"


def train_feature_prior(
    layer: nn.Module,
    images: Tensor,
    *,
    kind: str = "foe",
    filter_size: int = 3,
    n_experts: int = 32,
    steps: int = 300,
    batch_size: int = 32,
    seed: int = 0,
    patch_size: Optional[int] = None,
    progress: bool = False,
) -> LearnedModel:
    """Train a prior on a layer's activations of ``images`` ([B, C, H, W] in [0, 1]).

    The activations are computed once (``layer(layer.preprocess(images))``) and are the
    training images: no DC removal (a feature map's level means something), whitening on,
    no dequantization noise.

    Args:
        layer: a representation with ``preprocess`` (e.g. cnn:mobilenet_v2:features.3).
        images: training images in [0, 1].
        kind: "foe", "ica" or "separable". Default: "foe".
        filter_size: k. Default: 3.
        n_experts: filters (for "separable": spatial filters). Default: 32.
        steps: training steps. Default: 300.
        batch_size: crops per step. Default: 32.
        seed: the generator's seed. Default: 0.
        patch_size: crop side; None: see :func:`pyinvert.priors.train`. Default: None.
        progress: show a progress bar. Default: False.

    Returns:
        The trained model (its ``channels`` = the layer's).
    """
    fn = "train_feature_prior"
    with torch.no_grad():
        maps = layer(layer.preprocess(images)).float()
    if maps.dim() != 4:
        raise ValueError(
            f"{fn}: expected the layer to give maps [B, C, h, w], got {list(maps.shape)}"
        )
    C = maps.shape[1]
    g = torch.Generator().manual_seed(seed)
    makers = {
        "foe": lambda: FoE(filter_size, n_experts, C, generator=g),
        "ica": lambda: ICA(filter_size, n_experts, C, generator=g),
        "separable": lambda: SeparableFoE(filter_size, n_experts, C, generator=g),
    }
    if kind not in makers:
        raise ValueError(f"{fn}: expected kind in {tuple(makers)}, got {kind!r}")
    model = makers[kind]()
    train(
        model,
        maps,
        patch_size=patch_size,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        noise=0.0,
        remove_dc=False,
        progress=progress,
    )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def resolve_prior(prior, fn: str = "invert"):
    """What ``invert(prior=...)`` accepts, as (None for "tv", or a :class:`LearnedPrior`
    whose weight is still to be set). "foe", "ica", a path, a model or a LearnedPrior."""
    if isinstance(prior, str) and prior == "tv":
        return None
    if isinstance(prior, (LearnedPrior, FeaturePrior)):
        return prior
    if isinstance(prior, (str, Path, LearnedModel)):
        return LearnedPrior(as_model(prior, fn))
    raise TypeError(
        f"{fn}: expected prior to be 'tv', 'foe', 'ica', a path, a learned model, a "
        f"LearnedPrior or a FeaturePrior, got {type(prior).__name__}"
    )


_CALIBRATION = {}


def tv_equivalent_weight(model: LearnedModel, beta: float, scale: float = 255.0) -> float:
    r"""The weight r that gives ``r * E(x / scale)`` the gradient norm of ``TV_beta(x)`` on
    natural images in the pixel scale ``x = scale * image - 128``: the mean over 4 gray
    64 x 64 crops of the training photos (one per photo, the first four, their centres) of
    :math:`\|\nabla TV_\beta(x)\| / \|\nabla_x E(x/s)\|`. Cached per model and beta."""
    key = (id(model), float(beta), float(scale))
    if key not in _CALIBRATION:
        crops = []
        for img in list(training_photos().values())[:4]:
            g = to_gray(img[None])
            H, W = g.shape[-2:]
            crops.append(g[..., H // 2 - 32 : H // 2 + 32, W // 2 - 32 : W // 2 + 32])
        x = (torch.cat(crops).double() * scale - 128.0).requires_grad_(True)
        m = model.to(torch.float64)
        (gt,) = torch.autograd.grad(tv_norm(x, beta=beta).sum(), x)
        (ge,) = torch.autograd.grad(prior_energy(m, x / scale).sum(), x)
        model.to(torch.float32)
        ratio = (gt.flatten(1).norm(dim=1) / ge.flatten(1).norm(dim=1).clamp_min(1e-30)).mean()
        _CALIBRATION[key] = float(ratio)
    return _CALIBRATION[key]


def inversion_prior(prior, rec, rep, priors, fn: str = "invert") -> Objective:
    """The prior terms of an inversion with ``prior=`` other than "tv": the recipe's
    ``priors`` (an :class:`pyinvert.ImagePrior`: TV_beta and the alpha-norm, both kept, see
    :data:`REPLACE_TV`) plus a learned prior. A "foe" / "ica" / path / model prior gets the
    weight ``LEARNED_WEIGHT[kind] * tv_equivalent_weight(model, beta) * (the recipe's scaled
    TV weight)`` and ``input_scale = 1 / rep.scale`` (at LEARNED_WEIGHT = 1 its gradient on
    natural images is as strong as the TV term's). A :class:`LearnedPrior` or a
    :class:`FeaturePrior` is added as given.
    """
    term = resolve_prior(prior, fn)
    if isinstance(term, FeaturePrior):
        return priors + term
    if not isinstance(term, LearnedPrior) or prior is not term:
        model = term.model
        scale = float(getattr(rep, "scale", 255.0))
        r = tv_equivalent_weight(model, rec.beta, scale)
        term = LearnedPrior(
            model, priors.tv_weight * (r * LEARNED_WEIGHT.get(model.kind, 10.0)), 1.0 / scale
        )
    return (priors._replace(tv_weight=0.0) if REPLACE_TV else priors) + term
