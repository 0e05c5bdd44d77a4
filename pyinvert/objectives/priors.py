r"""Prior terms of an objective: the handcrafted image priors (:class:`ImagePrior`, one class
with :class:`pyinvert.ImagePrior`) and their one-term forms. Learned priors
(:mod:`pyinvert.priors`) join here as terms of the image alone (``needs_code = False``).
"""

from pyinvert.objectives.base import Weight
from pyinvert.priors.handcrafted import ImagePrior


class TotalVariation(ImagePrior):
    r"""``weight * TV_beta(x)`` (CVPR 2015 eq. (3), IJCV 2016 Sec. 3.4): an
    :class:`ImagePrior` with the norm off.

    Args:
        weight: the TV weight, a float or Tensor[N]. Default: 1.0.
        beta: TV exponent. Default: 2.0.
        backend: "fused" or "reference". Default: "fused".
    """

    def __init__(self, weight: Weight = 1.0, beta: float = 2.0, backend: str = "fused"):
        super().__init__(tv_weight=weight, beta=beta, norm_weight=0.0, backend=backend)


class AlphaNorm(ImagePrior):
    r"""``weight * N_alpha(x)`` (isotropic, IJCV 2016 Sec. 3.3) or ``R_alpha`` (CVPR 2015
    eq. (2)): an :class:`ImagePrior` with TV off.

    Args:
        weight: the norm weight, a float or Tensor[N]. Default: 1.0.
        alpha: norm exponent. Default: 6.0.
        isotropic: over the channels of a pixel. Default: True.
        backend: "fused" or "reference". Default: "fused".
    """

    def __init__(
        self,
        weight: Weight = 1.0,
        alpha: float = 6.0,
        isotropic: bool = True,
        backend: str = "fused",
    ):
        super().__init__(
            tv_weight=0.0, norm_weight=weight, alpha=alpha, isotropic=isotropic, backend=backend
        )
