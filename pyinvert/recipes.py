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

#: Names accepted by :func:`get_recipe`.
RECIPES = ("cvpr2015", "ijcv2016")


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
        optimizer: "momentum" (CVPR 2015) or "adagrad_momentum" (IJCV 2016).
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

    def scaled(self, steps: int) -> "Recipe":
        """The same recipe with the schedule stretched or shortened to ``steps`` iterations in
        all (each stage keeps its share, at least one iteration)."""
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"invert: expected steps to be an int or None, got {type(steps).__name__}")
        if steps < 1:
            raise ValueError(f"invert: expected steps >= 1, got {steps}")
        total = self.iterations
        counts = [max(1, round(s.iterations * steps / total)) for s in self.stages]
        # Make the counts add up to `steps` exactly (when steps >= number of stages).
        while sum(counts) > steps and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
        while sum(counts) < steps:
            counts[counts.index(max(counts))] += 1
        return dataclasses.replace(self, stages=tuple(
            dataclasses.replace(s, iterations=n) for s, n in zip(self.stages, counts)))

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
        optimizer="momentum", momentum=0.9, reset_momentum=True,
        data_weight=1.0, tv_weight=1.0, beta=2.0, norm_weight=8e-10, alpha=6.0,
        isotropic_norm=False, prior_normalization="sigma2", sigma=27098.1,
        sigma_reference_numel=187500.0, lr_pixels=False, init="randn_norm", bound=None,
        jitter=1, dsift_bin_size=5, dsift_step=4)


def _ijcv2016() -> Recipe:
    B, alpha, beta = 80.0, 6.0, 2.0
    lr = 0.05 * B ** 2 / alpha
    return Recipe(
        name="ijcv2016",
        stages=(Stage(lr, 300, jitter=True), Stage(0.1 * lr, 50, jitter=False)),
        optimizer="adagrad_momentum", momentum=0.9, reset_momentum=True,
        data_weight=100.0, tv_weight=(6.5 / B) ** beta, beta=beta,
        norm_weight=(1.0 / B) ** alpha, alpha=alpha, isotropic_norm=True,
        prior_normalization="pixels", sigma=B, sigma_reference_numel=None, lr_pixels=True,
        init="uniform_quantile", bound=2 * B, jitter=3, dsift_bin_size=8, dsift_step=4)


_FACTORIES = {"cvpr2015": _cvpr2015, "ijcv2016": _ijcv2016}


def get_recipe(recipe="cvpr2015", **overrides) -> Recipe:
    """A named recipe (or a :class:`Recipe`) with fields overridden.

    Args:
        recipe: "cvpr2015", "ijcv2016" or a :class:`Recipe`. Default: "cvpr2015".
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
        factory = _FACTORIES.get(recipe.lower())
        if factory is None:
            raise ValueError(f"get_recipe: expected recipe in {RECIPES}, got {recipe!r}")
        base = factory()
    else:
        raise TypeError(f"get_recipe: expected recipe to be a str or Recipe, "
                        f"got {type(recipe).__name__}")
    names = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"get_recipe: unknown recipe field(s) {unknown}; expected some of "
                         f"{sorted(names - {'extra'})}")
    if "stages" in overrides:
        overrides["stages"] = tuple(s if isinstance(s, Stage) else Stage(*s)
                                    for s in overrides["stages"])
    r = dataclasses.replace(base, **overrides)
    if r.optimizer not in ("momentum", "adagrad_momentum"):
        raise ValueError(f"get_recipe: expected optimizer in ('momentum', 'adagrad_momentum'), "
                         f"got {r.optimizer!r}")
    if r.prior_normalization not in ("sigma2", "pixels"):
        raise ValueError(f"get_recipe: expected prior_normalization in ('sigma2', 'pixels'), "
                         f"got {r.prior_normalization!r}")
    if r.init not in ("randn_norm", "uniform_quantile"):
        raise ValueError(f"get_recipe: expected init in ('randn_norm', 'uniform_quantile'), "
                         f"got {r.init!r}")
    if not isinstance(r.jitter, int) or r.jitter < 1:
        raise ValueError(f"get_recipe: expected jitter to be an int >= 1, got {r.jitter!r}")
    if not r.stages:
        raise ValueError("get_recipe: expected at least one stage, got none")
    return r
