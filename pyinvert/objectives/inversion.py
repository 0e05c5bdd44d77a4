r"""The inversion data term (CVPR 2015 eq. (1), IJCV 2016 eq. (3)) and the inversion
objective that :func:`pyinvert.invert` builds from a recipe.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from pyinvert.objectives.base import Objective, Scaled, Sum, Weight, _to
from pyinvert.priors.handcrafted import ImagePrior


def feature_distance(code: Tensor, target: Tensor) -> Tensor:
    """Squared distance |code_b - target_b|^2 per image. Shape: (B, ...) x (B, ...) -> (B,)."""
    d = (code - target).flatten(1)
    return (d * d).sum(1)


class Inversion(Objective):
    r"""Normalized distance to the target code (CVPR 2015 eq. (1), IJCV 2016 eq. (3)):

    .. math:: \ell(x) = \sum_l \frac{\| m_l \odot (\Phi_l(x) - \Phi_{0,l}) \|^2}
                                  {\| m_l \odot \Phi_{0,l} \|^2}

    one term per layer (``segments``; one for a single code), with an optional 0/1 mask m over
    the code: a window of neurons and/or a subset of channels (the "neuron subset"
    reconstructions of CVPR 2015 Sec. 5.2 / IJCV 2016 Sec. 5.3, normalized by the masked
    target as in the authors' code). A zero denominator (a blank image's code) is replaced
    by 1. The measure is the loss itself (the normalized feature error).

    Args:
        targets: the codes Phi0, [N, ...].
        mask: 0/1 (or any non-negative) weights of the shape of one code, shared by the rows,
            or [N, ...] per row; None for all. Default: None.
        segments: ``[(start, stop), ...]`` slices of the flattened code, one per layer (see
            :meth:`pyinvert.representations.cnn.CNN.segments`); None for one term. Default: None.

    Shape:
        - code, targets: :math:`(N, ...)`; loss: :math:`(N,)`.
    """

    def __init__(
        self,
        targets: Tensor,
        mask: Optional[Tensor] = None,
        segments: Optional[Sequence[Tuple[int, int]]] = None,
    ):
        if not isinstance(targets, Tensor):
            raise TypeError(
                f"Inversion: expected targets to be a Tensor, got {type(targets).__name__}"
            )
        self.targets = targets.detach()
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(
                    f"Inversion: expected mask to be a Tensor, got {type(mask).__name__}"
                )
            if tuple(mask.shape) not in (tuple(targets.shape[1:]), tuple(targets.shape)):
                raise ValueError(
                    f"Inversion: expected mask of shape {list(targets.shape[1:])} "
                    f"(one code) or {list(targets.shape)}, got {list(mask.shape)}"
                )
            mask = mask.detach().to(device=targets.device, dtype=targets.dtype)
            self.mask_per_row = mask.shape == targets.shape
        else:
            self.mask_per_row = False
        self.mask = mask
        self.segments = [tuple(s) for s in segments] if segments is not None else None
        self._norm2 = None

    def _masked(self, t: Tensor) -> Tensor:
        return t if self.mask is None else t * self.mask

    def _per_segment(self, sq: Tensor) -> Tensor:
        """[N, D] squared entries -> [N, S] sums per segment."""
        if self.segments is None:
            return sq.sum(1, keepdim=True)
        return torch.stack([sq[:, a:b].sum(1) for a, b in self.segments], 1)

    def norm2(self) -> Tensor:
        """|m Phi0|^2 per row and segment, [N, S] (0 replaced by 1)."""
        if self._norm2 is None:
            t = self._masked(self.targets).flatten(1)
            n = self._per_segment(t * t)
            self._norm2 = torch.where(n > 0, n, torch.ones_like(n))
        return self._norm2

    def evaluate(self, code, x):
        d = self._masked(code - self.targets).flatten(1)
        sq = d * d
        if self.segments is None:
            err = sq.sum(1) / self.norm2()[:, 0]
        else:
            err = (self._per_segment(sq) / self.norm2()).sum(1)
        return err, err

    def map_rows(self, fn):
        m = self.mask
        if m is not None and self.mask_per_row:
            m = fn(m)  # a shared mask (one code's shape) is not a per-row tensor
        out = Inversion.__new__(Inversion)
        out.targets = fn(self.targets)
        out.mask = m
        out.mask_per_row = self.mask_per_row
        out.segments = self.segments
        out._norm2 = None
        return out

    def to(self, device=None, dtype=None):
        out = self.map_rows(lambda t: _to(t, device, dtype))
        if out.mask is not None and not out.mask_per_row:
            out.mask = _to(out.mask, device, dtype)
        return out


def inversion_objective(
    targets: Tensor,
    *,
    data_weight: Weight,
    tv_weight: Weight,
    norm_weight: Weight,
    beta: float,
    alpha: float,
    isotropic: bool,
    backend: str = "fused",
    mask: Optional[Tensor] = None,
    segments=None,
) -> Objective:
    """``C |Phi(x) - Phi0|^2 / |Phi0|^2 + tv TV_beta(x) + norm N_alpha(x)`` (weights already
    scaled as the recipe says), as :func:`pyinvert.invert` uses it."""
    return Sum(
        [
            Scaled(Inversion(targets, mask=mask, segments=segments), data_weight),
            ImagePrior(
                tv_weight=tv_weight,
                beta=beta,
                norm_weight=norm_weight,
                alpha=alpha,
                isotropic=isotropic,
                backend=backend,
            ),
        ]
    )
