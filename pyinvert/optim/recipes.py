"""Inversion recipes: the hyper-parameters of the CVPR 2015 and IJCV 2016 papers, as data.

A :class:`Recipe` is a frozen dataclass; :func:`get_recipe` returns a named one with any field
overridden. The engine (:func:`pyinvert.invert`) has a single code path driven by these fields.

What the authors' code does (read in deep-goggle ``core/invert_nn.m`` and
``experiments/experiment_shallow_quantitative.m``, and nnpreimage ``core/nnpreimage.m``,
``core/get_defaults.m``, ``layers/tv.m``, ``layers/l2.m``):

* CVPR 2015 (deep-goggle). The printed energy is
  ``E = |Phi(x) - Phi0|^2 / |Phi0|^2 + (lambda_TV/2 TV_beta(x) + lambda_alpha/2 R_alpha(x)) / sigma^2``
  but the momentum step is ``v = 0.9 v - lr (lambda_TV/2 dTV + lambda_alpha/2 dR)
  - lr sigma^2/|Phi0|^2 dData``, i.e. ``v = 0.9 v - lr sigma^2 dE``: only the priors are divided
  by sigma^2 in E, and the learning rate multiplies ``sigma^2 dE``. x lives in the pixel scale
  ``255 gray - 128`` and starts as ``randn`` rescaled to norm sigma = x0_sigma = 27098.1.
  The momentum is reset whenever the learning rate changes. HOG/HOGb/DSIFT (Table 1):
  lambda_TV = 1, beta = 2, lambda_alpha = 8e-10, alpha = 6, lr 0.004 x [1, .1, .01, .001],
  200 iterations each; DSIFT with bin size 5.
* sigma is a constant in that code, measured on (and used for) the full-size ILSVRC12
  validation images (about 500 x 375 = 187,500 gray pixels, i.e. 62.6 per pixel). Our images
  have other sizes, so by default sigma is rescaled to ``27098.1 sqrt(numel / 187500)``: the
  same per-pixel scale, which makes the dynamics independent of the image size (the data
  term's gradient per pixel does not depend on the size, and |Phi0|^2 grows with it). Set
  ``sigma_reference_numel=None`` to use the constant as the authors' code does.
* IJCV 2016 (nnpreimage). ``E = C/|Phi0|^2 |Phi(x) - Phi0|^2 + lambda_alpha N_alpha(x) +
  lambda_beta TV_beta(x)`` with both priors divided by the number of pixels H W (N_alpha is
  isotropic: the norm is over the channels of a pixel); B = 80, B+ = 160, alpha = 6, beta = 2,
  lambda_alpha = B^-alpha, lambda_beta = (6.5/B)^beta, C = 100 (HOG/DSIFT); x starts as
  uniform noise in [-1, 1] divided by its 95th percentile times B/sqrt(3); the step is
  ``G = 0.9 G + g^2; v = 0.9 v - g / (1/lr + sqrt(G)); x += v`` with ``lr = 0.05 B^2 / alpha``
  times H W; after each step every pixel is projected into the ball ``|x(v)| <= B+``.
  300 iterations at lr (with random jitter), then 50 at 0.1 lr without jitter; DSIFT bin
  size 8.

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, eqs. (1)-(3) and Sec. 3.
    A. Mahendran and A. Vedaldi, "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016, Sec. 3 and 4.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

from pyinvert.representations.registry import as_representation

#: Names accepted by :func:`get_recipe`.
RECIPES = ("cvpr2015", "ijcv2016")
#: The update rules (``Recipe.optimizer``); "lbfgs" is :mod:`pyinvert.optim.lbfgs_loop`.
OPTIMIZERS = ("momentum", "adagrad_momentum", "normalized", "lbfgs")
#: The visualization recipes (activation maximization, caricatures, DeepDream).
VISUALIZATION_RECIPES = ("actmax", "caricature", "dream")

# ---- CNN settings (data) ------------------------------------------------------------------
#
# CVPR 2015 (deep-goggle experiments/experiment_cnn.m) sets lambda_TV per AlexNet layer:
# 1 for layers 1-6 (conv1 ... relu2), 10 for 7-12 (norm2 ... relu4), 100 for 13-20 (conv5 ...
# fc8). For any net we map by the layer's receptive-field stride (pyinvert.representations.cnn.CNN.stride):
# <= 8 pixels -> 1, <= 16 -> 10, more (or no spatial grid) -> 100. On AlexNet this gives the
# authors' values except norm2 (stride 8: 1 instead of 10) and conv5/relu5 (stride 16: 10
# instead of 100); on MobileNetV2: features.0-6 -> 1, features.7-13 -> 10, features.14- and
# the classifier -> 100.
#: (max stride, lambda_TV) of the CVPR 2015 CNN recipe, first match wins.
CVPR2015_CNN_TV_BY_STRIDE = ((8, 1.0), (16, 10.0), (None, 100.0))
#: CVPR 2015 CNN schedule: 0.004 x [1 (100 iterations), 0.1 (200), 0.01 (100)].
CVPR2015_CNN_STAGES = ((0.004, 100), (0.0004, 200), (0.00004, 100))
#: deep-goggle's x0_sigma was measured for, and used with, 227 x 227 x 3 CNN inputs.
CVPR2015_CNN_SIGMA_NUMEL = 227.0 * 227.0 * 3.0
#: IJCV 2016 Fig. 6-7: the data weights C compared for CNN inversions (a per-image sweep).
IJCV2016_CNN_DATA_WEIGHTS = (1.0, 20.0, 100.0, 300.0)


def cvpr2015_cnn_tv_weight(stride: int) -> float:
    """lambda_TV of the CVPR 2015 CNN recipe for a layer of this receptive-field stride."""
    for top, value in CVPR2015_CNN_TV_BY_STRIDE:
        if top is None or stride <= top:
            return value
    raise AssertionError("unreachable")


def ijcv2016_jitter(stride: int) -> int:
    """nnpreimage's jitter ``max(round(stride / 4), 1)``: offsets in [0, J) (randi(J) - 1),
    exactly our :attr:`Recipe.jitter` convention."""
    return max(int(round(stride / 4.0)), 1)


@dataclass(frozen=True)
class Stage:
    """A run of ``iterations`` steps at learning rate ``lr`` (with or without jitter)."""

    lr: float
    iterations: int
    jitter: bool = False


@dataclass(frozen=True)
class Recipe:
    """Every constant of an inversion (see the module docstring for where they come from).

    Attributes:
        name: the recipe's name.
        stages: the learning-rate schedule, a tuple of :class:`Stage`.
        optimizer: "momentum" (CVPR 2015), "adagrad_momentum" (IJCV 2016), "normalized"
            (DeepDream: ``x -= lr g / mean|g|`` per image) or "lbfgs" (per-row L-BFGS:
            :mod:`pyinvert.optim.lbfgs_loop`; no jitter, no bound, the stages' lrs unused).
        momentum: momentum (and AdaGrad decay) factor.
        reset_momentum: zero the momentum (and the AdaGrad accumulator) when the lr changes.
        data_weight: C, the weight of the normalized data term (float or Tensor[B]).
        tv_weight: lambda_TV (CVPR: the TV term is lambda_TV/2 TV) or lambda_beta (IJCV).
        beta: TV exponent.
        norm_weight: lambda_alpha (CVPR: the term is lambda_alpha/2 R_alpha) or lambda_alpha (IJCV).
        alpha: norm exponent.
        isotropic_norm: N_alpha over channels first (IJCV) instead of elementwise R_alpha (CVPR).
        prior_normalization: "sigma2": priors halved and divided by sigma^2 and the lr
            multiplied by sigma^2 (CVPR); "pixels": priors divided by H W (IJCV).
        sigma: x0_sigma, the norm of a natural image (CVPR) or B (IJCV), in pixel units.
        sigma_reference_numel: the number of values sigma was measured on (CVPR); sigma is
            rescaled by sqrt(numel / this). None: use sigma as it is.
        lr_pixels: multiply the lr by H W (IJCV).
        init: "randn_norm" (randn with norm sigma) or "uniform_quantile" (uniform noise with
            95th percentile sigma/sqrt(3)).
        bound: B+, the per-pixel bound (projection after every step); None for none.
        jitter: the jitter amount in pixels (the optimized image is jitter-1 pixels larger and a
            random crop is used in the jittered stages); 1 for none.
        dsift_bin_size: DSIFT bin size used with this recipe.
        dsift_step: DSIFT sampling step used with this recipe.
    """

    name: str
    stages: Tuple[Stage, ...]
    optimizer: str = "momentum"
    momentum: float = 0.9
    reset_momentum: bool = True
    data_weight: object = 1.0
    tv_weight: object = 1.0
    beta: float = 2.0
    norm_weight: object = 8e-10
    alpha: float = 6.0
    isotropic_norm: bool = False
    prior_normalization: str = "sigma2"
    sigma: float = 27098.1
    sigma_reference_numel: Optional[float] = 187500.0
    lr_pixels: bool = False
    init: str = "randn_norm"
    bound: Optional[float] = None
    jitter: int = 1
    dsift_bin_size: int = 5
    dsift_step: int = 4
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def iterations(self) -> int:
        """Total number of iterations of the schedule."""
        return sum(s.iterations for s in self.stages)

    def scaled(self, steps: int, fn: str = "invert") -> "Recipe":
        """The same recipe with the schedule stretched or shortened to ``steps`` iterations in
        all (each stage keeps its share, at least one iteration); ``fn`` names the caller in
        errors."""
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(
                f"{fn}: expected steps to be an int or None, got {type(steps).__name__}"
            )
        if steps < 1:
            raise ValueError(f"{fn}: expected steps >= 1, got {steps}")
        total = self.iterations
        counts = [max(1, round(s.iterations * steps / total)) for s in self.stages]
        # Make the counts add up to `steps` exactly (when steps >= number of stages).
        while sum(counts) > steps and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
        while sum(counts) < steps:
            counts[counts.index(max(counts))] += 1
        return dataclasses.replace(
            self,
            stages=tuple(dataclasses.replace(s, iterations=n) for s, n in zip(self.stages, counts)),
        )

    def to_dict(self) -> dict:
        """JSON-friendly view (tensors become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "stages":
                v = [dataclasses.asdict(s) for s in v]
            elif hasattr(v, "tolist"):
                v = v.tolist()
            out[f.name] = v
        return out


def _cvpr2015() -> Recipe:
    return Recipe(
        name="cvpr2015",
        stages=tuple(Stage(0.004 * f, 200) for f in (1.0, 0.1, 0.01, 0.001)),
        optimizer="momentum",
        momentum=0.9,
        reset_momentum=True,
        data_weight=1.0,
        tv_weight=1.0,
        beta=2.0,
        norm_weight=8e-10,
        alpha=6.0,
        isotropic_norm=False,
        prior_normalization="sigma2",
        sigma=27098.1,
        sigma_reference_numel=187500.0,
        lr_pixels=False,
        init="randn_norm",
        bound=None,
        jitter=1,
        dsift_bin_size=5,
        dsift_step=4,
    )


def _ijcv2016() -> Recipe:
    B, alpha, beta = 80.0, 6.0, 2.0
    lr = 0.05 * B**2 / alpha
    return Recipe(
        name="ijcv2016",
        stages=(Stage(lr, 300, jitter=True), Stage(0.1 * lr, 50, jitter=False)),
        optimizer="adagrad_momentum",
        momentum=0.9,
        reset_momentum=True,
        data_weight=100.0,
        tv_weight=(6.5 / B) ** beta,
        beta=beta,
        norm_weight=(1.0 / B) ** alpha,
        alpha=alpha,
        isotropic_norm=True,
        prior_normalization="pixels",
        sigma=B,
        sigma_reference_numel=None,
        lr_pixels=True,
        init="uniform_quantile",
        bound=2 * B,
        jitter=3,
        dsift_bin_size=8,
        dsift_step=4,
    )


def _cvpr2015_cnn(stride: int) -> Recipe:
    return dataclasses.replace(
        _cvpr2015(),
        name="cvpr2015-cnn",
        stages=tuple(Stage(lr, n) for lr, n in CVPR2015_CNN_STAGES),
        tv_weight=cvpr2015_cnn_tv_weight(stride),
        sigma_reference_numel=CVPR2015_CNN_SIGMA_NUMEL,
        extra={"stride": stride},
    )


def _ijcv2016_cnn(stride: int) -> Recipe:
    # exp_inversion.m: 300 iterations with jitter, then 50 at 0.1 lr without, from the first
    # result (our single run keeps x, and the AdaGrad state, between the two stages).
    return dataclasses.replace(
        _ijcv2016(), name="ijcv2016-cnn", jitter=ijcv2016_jitter(stride), extra={"stride": stride}
    )


def _actmax(stride: int) -> Recipe:
    # exp_maximization.m / get_preimage_opts('maximization'): the fast stage only (300
    # iterations at lr with jitter), no leak (the "noleak" runs of exp_all.m), bound B+ = 160.
    # The data weight replaces nnpreimage's (10000 / rf^2) / k / max-activation-over-data
    # (we have no activation statistics): the objective is the activation times data_weight.
    # Deviation for a layer of logits: pyinvert.tasks.visualization.actmax maximizes the class's
    # log-softmax instead of the raw score (objective="auto"). Measured on MobileNetV2 at
    # 224 px with these settings (300 iterations, seed 0): the raw score gives p(tabby) = 0.29
    # (0.76 at data weight 10, 0.55 at 30; its neighbours tiger cat / Egyptian cat rise with
    # it), the log-probability p = 1.00 at weights 1 and 3, 0.99 at 10; bell pepper, golden
    # retriever, goldfish, Egyptian cat reach 1.00 either way. Weight 1 is kept; the jitter
    # and the schedule are nnpreimage's (see tests/test_cnn.py for the checked classes).
    base = _ijcv2016()
    return dataclasses.replace(
        base,
        name="actmax",
        stages=(base.stages[0],),
        data_weight=ACTMAX_DATA_WEIGHT,
        jitter=ijcv2016_jitter(stride),
        extra={"stride": stride},
    )


def _caricature(stride: int) -> Recipe:
    # exp_enhance.m / get_preimage_opts('enhance'): from the image, the fast stage only,
    # objective weight 1 on <max(Phi0,0)/|max(Phi0,0)|^2, Phi(x)>.
    base = _ijcv2016()
    return dataclasses.replace(
        base,
        name="caricature",
        stages=(base.stages[0],),
        data_weight=CARICATURE_DATA_WEIGHT,
        jitter=ijcv2016_jitter(stride),
        extra={"stride": stride},
    )


def _dream(stride: int) -> Recipe:
    # Not in the papers: the usual DeepDream step (gradient ascent on 1/2 |Phi|^2 with the
    # gradient normalized by its mean magnitude per image), in the 0-255 pixel scale,
    # 10 steps of 1.5 per octave, jitter up to 32 pixels, no priors and no bound.
    return Recipe(
        name="dream",
        stages=(Stage(1.5, 10, jitter=True),),
        optimizer="normalized",
        momentum=0.0,
        reset_momentum=False,
        data_weight=1.0,
        tv_weight=0.0,
        norm_weight=0.0,
        prior_normalization="pixels",
        sigma=80.0,
        sigma_reference_numel=None,
        lr_pixels=False,
        init="uniform_quantile",
        bound=None,
        jitter=32,
        extra={"stride": stride},
    )


#: Data weight of :func:`pyinvert.tasks.visualization.actmax` (the activation's multiplier).
ACTMAX_DATA_WEIGHT = 1.0
#: Data weight of :func:`pyinvert.tasks.visualization.caricature` (nnpreimage: 1).
CARICATURE_DATA_WEIGHT = 1.0

_FACTORIES = {"cvpr2015": _cvpr2015, "ijcv2016": _ijcv2016}
_CNN_FACTORIES = {
    "cvpr2015": _cvpr2015_cnn,
    "ijcv2016": _ijcv2016_cnn,
    "actmax": _actmax,
    "caricature": _caricature,
    "dream": _dream,
}


def get_recipe(recipe="cvpr2015", representation=None, **overrides) -> Recipe:
    """A named recipe (or a :class:`Recipe`) with fields overridden.

    For a CNN representation (its protocol attribute ``kind == "cnn"``) the names pick the CNN
    variants, from the layer's receptive-field stride: "cvpr2015" -> "cvpr2015-cnn"
    (lambda_TV by stride, the 400-iteration schedule, sigma for 227 x 227 x 3 inputs),
    "ijcv2016" -> "ijcv2016-cnn" (jitter ``max(round(stride/4), 1)``), and the visualization
    recipes "actmax", "caricature", "dream" (see the module's source for their constants).

    Args:
        recipe: "cvpr2015", "ijcv2016", "actmax", "caricature", "dream" or a :class:`Recipe`.
            Default: "cvpr2015".
        representation: the representation the recipe is for (CNNs get their variants).
            Default: None.
        **overrides: any :class:`Recipe` field, e.g. ``tv_weight=torch.tensor([0.5, 1, 2])``
            (a per-image sweep), ``stages=(Stage(0.01, 100),)``, ``bound=None``.

    Returns:
        The recipe.

    Example:
        >>> get_recipe("ijcv2016", data_weight=10.0).data_weight
        10.0

    References:
        Mahendran & Vedaldi, CVPR 2015 (Sec. 3) and IJCV 2016 (Sec. 4).
    """
    if isinstance(recipe, Recipe):
        base = recipe
    elif isinstance(recipe, str):
        key = recipe.lower()
        rep = None if representation is None else as_representation(representation, fn="get_recipe")
        if rep is not None and rep.kind == "cnn" and key in _CNN_FACTORIES:
            base = _CNN_FACTORIES[key](int(rep.stride))
        elif key in VISUALIZATION_RECIPES:
            base = _CNN_FACTORIES[key](int(rep.stride) if rep is not None else 4)
        else:
            factory = _FACTORIES.get(key)
            if factory is None:
                raise ValueError(
                    f"get_recipe: expected recipe in "
                    f"{RECIPES + VISUALIZATION_RECIPES}, got {recipe!r}"
                )
            base = factory()
    else:
        raise TypeError(
            f"get_recipe: expected recipe to be a str or Recipe, got {type(recipe).__name__}"
        )
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"get_recipe: unknown recipe field(s) {unknown}; expected some of "
            f"{sorted(names - {'extra'})}"
        )
    if "stages" in overrides:
        overrides["stages"] = tuple(
            s if isinstance(s, Stage) else Stage(*s) for s in overrides["stages"]
        )
    r = dataclasses.replace(base, **overrides)
    if r.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"get_recipe: expected optimizer in ('momentum', 'adagrad_momentum', "
            f"'normalized', 'lbfgs'), got {r.optimizer!r}"
        )
    if r.prior_normalization not in ("sigma2", "pixels"):
        raise ValueError(
            f"get_recipe: expected prior_normalization in ('sigma2', 'pixels'), "
            f"got {r.prior_normalization!r}"
        )
    if r.init not in ("randn_norm", "uniform_quantile"):
        raise ValueError(
            f"get_recipe: expected init in ('randn_norm', 'uniform_quantile'), got {r.init!r}"
        )
    if not isinstance(r.jitter, int) or r.jitter < 1:
        raise ValueError(f"get_recipe: expected jitter to be an int >= 1, got {r.jitter!r}")
    if not r.stages:
        raise ValueError("get_recipe: expected at least one stage, got none")
    return r
