r"""Style terms on per-layer maps (Gatys et al.): Gram matrices of layers matched to targets
(:class:`Gram`, :class:`StyleLoss`) and feature maps matched to targets (:class:`ContentLoss`),
composable with the algebra of :mod:`pyinvert.objectives.base`::

    ContentLoss(...) + 1e3 * StyleLoss(...) + ImagePrior(...)

Each term is data in DeepTextures' sense: a dict layer -> (target, weight). A term receives
the representation's code, either a :class:`pyinvert.Code` or the tensor the engine gets
from a :class:`pyinvert.CNN` (one layer's map, or the flattened concatenation of several,
which ``shapes`` splits back into views).

The Gram matrix of a layer with N maps of M positions is normalized by the positions,
``G = F F^T / M`` (DeepTextures' ``gram_matrix``), so it does not depend on the image size
and a texture can be made at another size than its source; the style error of a layer is
``E_l = 1 / (4 N^2) |G - G0|^2``, which equals the papers' ``1 / (4 N^2 M^2)
|F F^T - F0 F0^T|^2`` (Gatys 2015 eq. (4); DeepTextures' ``gram_mse_loss``).

References:
    L. A. Gatys, A. S. Ecker, M. Bethge. Texture synthesis using convolutional neural
    networks. NIPS 2015, eq. (3)-(5).
    L. A. Gatys, A. S. Ecker, M. Bethge. Image style transfer using convolutional neural
    networks. CVPR 2016, eq. (1) (content), (3)-(5) (style), (7) (their sum).
"""

import math
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from pyinvert.models.gatys import gram_parameter_count  # noqa: F401 (re-exported)
from pyinvert.objectives.base import Objective, _to
from pyinvert.representations.base import Code

LayerWeights = Union[None, float, Sequence[float], Mapping[str, float]]


def gram_matrix(features: Tensor) -> Tensor:
    r"""Gram matrices normalized by the number of positions, ``G = F F^T / M``.

    Args:
        features: maps [B, N, h, w] (or [B, N, M]).

    Returns:
        [B, N, N].

    Raises:
        ValueError: not 3-d or 4-d, or no position.

    Shape:
        - features: :math:`(B, N, h, w)`; output: :math:`(B, N, N)`.

    Example:
        >>> gram_matrix(torch.ones(2, 3, 4, 5))[0]
        tensor([[1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.]])
    """
    if not isinstance(features, Tensor) or features.dim() not in (3, 4):
        got = list(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"gram_matrix: expected features of shape (B, N, h, w), got {got}")
    F = features.flatten(2)
    M = F.shape[2]
    if M == 0:
        raise ValueError(
            f"gram_matrix: expected at least one position, got shape {list(features.shape)}"
        )
    return _Gram.apply(F)


class _Gram(torch.autograd.Function):
    """``F F^T / M`` whose backward uses the symmetry of G: ``dF = (dG + dG^T) F / M``, one
    matrix product where autograd's matmul backward takes two (the Gram products are most
    of a texture step's arithmetic beyond the network)."""

    # forward(ctx, ...) rather than a separate setup_context: with one, every apply binds the
    # arguments through inspect.signature (a tenth of a millisecond a call)
    @staticmethod
    def forward(ctx, F):
        ctx.save_for_backward(F)
        return torch.matmul(F, F.transpose(1, 2)) / F.shape[2]

    @staticmethod
    def backward(ctx, dG):
        (F,) = ctx.saved_tensors
        return torch.matmul(dG + dG.transpose(1, 2), F) / F.shape[2]


def split_code(code, shapes: Optional[Mapping[str, Sequence[int]]], fn: str) -> Dict[str, Tensor]:
    """{layer: [B, ...]} from a :class:`Code`, a dict, or a code tensor (one layer's map when
    ``shapes`` has one layer, else the flattened concatenation in ``shapes``' order)."""
    if isinstance(code, Code):
        return code.maps
    if isinstance(code, Mapping):
        return dict(code)
    if not isinstance(code, Tensor):
        raise TypeError(f"{fn}: expected a code Tensor or Code, got {type(code).__name__}")
    if shapes is None:
        raise ValueError(
            f"{fn}: got a code Tensor but no layer shapes to split it; pass "
            f"shapes= (one image's shape per layer) or give a Code"
        )
    if len(shapes) == 1:
        return {next(iter(shapes)): code}
    return Code.from_flat(code.flatten(1), shapes).maps


def _layer_weights(
    weights: LayerWeights, layers: Sequence[str], default: float, fn: str
) -> Dict[str, float]:
    if weights is None:
        return {k: default for k in layers}
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        return {k: float(weights) for k in layers}
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(layers))
        if unknown:
            raise ValueError(
                f"{fn}: weights for unknown layers {unknown}; the layers are {list(layers)}"
            )
        return {k: float(weights.get(k, 0.0)) for k in layers}
    weights = list(weights)
    if len(weights) != len(layers):
        raise ValueError(
            f"{fn}: expected {len(layers)} layer weights (one per layer of "
            f"{list(layers)}), got {len(weights)}"
        )
    return {k: float(w) for k, w in zip(layers, weights)}


def _check_targets(targets, fn: str, dims: int, what: str) -> Dict[str, Tensor]:
    if not isinstance(targets, Mapping) or not targets:
        raise TypeError(
            f"{fn}: expected targets as a non-empty dict layer -> Tensor, got "
            f"{type(targets).__name__}"
        )
    rows = set()
    out = {}
    for k, t in targets.items():
        if not isinstance(t, Tensor) or t.dim() != dims:
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{fn}: expected the target of {k!r} to be {what}, got {got}")
        rows.add(t.shape[0])
        out[k] = t.detach()
    if len(rows) != 1:
        raise ValueError(f"{fn}: expected targets of one batch size, got {sorted(rows)}")
    return out


class _PerLayerTargets(Objective):
    """The row handling shared by :class:`Gram` and :class:`ContentLoss`: per-layer targets
    [N, ...] in ``self.targets``, moved or re-indexed together."""

    def map_rows(self, fn):
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.targets = {k: fn(t) for k, t in self.targets.items()}
        out._norms = None
        return out

    def target_norms(self) -> Dict[str, Tensor]:
        """{layer: |target|^2 per row [N], 1 where it is 0} (the denominators of the relative
        errors), computed once per set of targets."""
        if getattr(self, "_norms", None) is None:
            norms = {}
            for k, t in self.targets.items():
                n = (t * t).flatten(1).sum(1)
                norms[k] = torch.where(n > 0, n, torch.ones_like(n))
            self._norms = norms
        return self._norms

    def to(self, device=None, dtype=None):
        return self.map_rows(lambda t: _to(t, device, dtype))

    def describe(self):
        return f"{type(self).__name__}({', '.join(self.layers)})"


class Gram(_PerLayerTargets):
    r"""Gram-matrix matching over layers (texture synthesis, Gatys 2015 eq. (4)-(5)):

    .. math:: \ell(x) = \sum_l \frac{w_l}{4 N_l^2} \| G_l(x) - G_{0,l} \|_F^2,
              \qquad G_l = F_l F_l^\top / M_l

    The measure is the mean over the layers of the relative errors
    ``|G_l - G0_l|^2 / |G0_l|^2`` (:meth:`layer_errors` gives each).

    Args:
        targets: {layer: target Gram matrices [N, C_l, C_l]} (rows = images).
        weights: w_l: a float for all layers, one per layer, or a dict (missing layers 0).
            Default: None (1 for every layer, Gatys 2015).
        shapes: {layer: one image's map shape} of every layer of the code this term receives,
            in the code's order (needed to split a flattened multi-layer code). Default: None.

    Shape:
        - loss: :math:`(N,)`.

    Example:
        >>> maps = {"a": torch.rand(2, 3, 5, 5), "b": torch.rand(2, 4, 2, 2)}
        >>> term = Gram.from_maps(maps)
        >>> term(Code(maps), None)
        tensor([0., 0.])
    """

    #: Default weights 1 / L (StyleLoss) instead of 1 (Gram).
    mean_weights = False

    def __init__(
        self,
        targets: Mapping[str, Tensor],
        weights: LayerWeights = None,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
    ):
        fn = type(self).__name__
        self.targets = _check_targets(targets, fn, 3, "Gram matrices [N, C, C]")
        for k, t in self.targets.items():
            if t.shape[1] != t.shape[2]:
                raise ValueError(
                    f"{fn}: expected square Gram matrices for {k!r}, got {list(t.shape)}"
                )
        self.layers = list(self.targets)
        default = 1.0 / len(self.layers) if self.mean_weights else 1.0
        self.weights = _layer_weights(weights, self.layers, default, fn)
        self.shapes = None if shapes is None else {k: tuple(v) for k, v in shapes.items()}
        if self.shapes is not None:
            missing = [k for k in self.layers if k not in self.shapes]
            if missing:
                raise ValueError(f"{fn}: layers {missing} are not in shapes {list(self.shapes)}")

    @classmethod
    def from_maps(
        cls,
        maps: Union[Code, Mapping[str, Tensor]],
        weights: LayerWeights = None,
        layers: Optional[Sequence[str]] = None,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
    ) -> "Gram":
        """The term whose targets are the Gram matrices of ``maps`` (a Code or a dict; only
        ``layers`` when given)."""
        maps = maps.maps if isinstance(maps, Code) else dict(maps)
        layers = list(maps) if layers is None else list(layers)
        return cls({k: gram_matrix(maps[k].detach()) for k in layers}, weights, shapes)

    def _grams(self, code) -> Dict[str, Tensor]:
        maps = split_code(code, self.shapes, type(self).__name__)
        return {k: gram_matrix(maps[k]) for k in self.layers}

    def layer_errors(self, code) -> Dict[str, Tensor]:
        """{layer: |G_l - G0_l|^2 / |G0_l|^2 per row [N]} (the reported Gram error)."""
        out, norms = {}, self.target_norms()
        for k, G in self._grams(code).items():
            d = (G - self.targets[k]).flatten(1)
            out[k] = (d * d).sum(1) / norms[k]
        return out

    def evaluate(self, code, x):
        loss, rel, norms = None, None, self.target_norms()
        for k, G in self._grams(code).items():
            t = self.targets[k]
            d = (G - t).flatten(1)
            sq = (d * d).sum(1)
            term = sq * (self.weights[k] / (4.0 * t.shape[1] ** 2))
            r = sq / norms[k]
            loss = term if loss is None else loss + term
            rel = r if rel is None else rel + r
        return loss, rel / len(self.layers)


class StyleLoss(Gram):
    r"""The style term of style transfer (Gatys 2016 eq. (5)): :class:`Gram` with the
    paper's weights ``w_l = 1 / L`` over its L layers by default.

    Args:
        targets: {layer: the style images' Gram matrices [N, C_l, C_l]}.
        weights: w_l (float, sequence or dict). Default: None (1 / L each).
        shapes: as :class:`Gram`. Default: None.

    Example:
        >>> maps = {"a": torch.rand(1, 3, 5, 5), "b": torch.rand(1, 4, 2, 2)}
        >>> StyleLoss.from_maps(maps).weights
        {'a': 0.5, 'b': 0.5}
    """

    mean_weights = True


class ContentLoss(_PerLayerTargets):
    r"""Feature-map matching over layers (the content term, Gatys 2016 eq. (1)):

    .. math:: \ell(x) = \sum_l \frac{w_l}{2 N_l M_l} \| F_l(x) - P_l \|^2

    The paper's ``1/2 |F - P|^2`` divided by the layer's N M values (a deviation: the weights
    then do not depend on the image size). The measure is the normalized feature error
    ``sum_l |F_l - P_l|^2 / |P_l|^2`` (as :class:`pyinvert.objectives.Inversion`).

    Args:
        targets: {layer: target maps P_l [N, ...]}.
        weights: w_l (float, sequence or dict). Default: None (1 each).
        shapes: as :class:`Gram`. Default: None.

    Example:
        >>> maps = {"a": torch.rand(2, 3, 5, 5)}
        >>> ContentLoss(maps)(Code(maps), None)
        tensor([0., 0.])
    """

    def __init__(
        self,
        targets: Mapping[str, Tensor],
        weights: LayerWeights = None,
        shapes: Optional[Mapping[str, Sequence[int]]] = None,
    ):
        if not isinstance(targets, Mapping) or not targets:
            raise TypeError(
                f"ContentLoss: expected targets as a non-empty dict layer -> "
                f"Tensor, got {type(targets).__name__}"
            )
        dims = {k: (t.dim() if isinstance(t, Tensor) else 0) for k, t in targets.items()}
        bad = [k for k, d in dims.items() if d < 2]
        if bad:
            raise ValueError(f"ContentLoss: expected the targets of {bad} to be maps [N, ...]")
        rows = {t.shape[0] for t in targets.values()}
        if len(rows) != 1:
            raise ValueError(f"ContentLoss: expected targets of one batch size, got {sorted(rows)}")
        self.targets = {k: t.detach() for k, t in targets.items()}
        self.layers = list(self.targets)
        self.weights = _layer_weights(weights, self.layers, 1.0, "ContentLoss")
        self.shapes = None if shapes is None else {k: tuple(v) for k, v in shapes.items()}

    def _diffs(self, code):
        maps = split_code(code, self.shapes, "ContentLoss")
        for k in self.layers:
            t = self.targets[k]
            d = (maps[k] - t).flatten(1)
            yield k, t, (d * d).sum(1)

    def layer_errors(self, code) -> Dict[str, Tensor]:
        """{layer: |F_l - P_l|^2 / |P_l|^2 per row [N]}."""
        norms = self.target_norms()
        return {k: sq / norms[k] for k, t, sq in self._diffs(code)}

    def evaluate(self, code, x):
        loss, rel, norms = None, None, self.target_norms()
        for k, t, sq in self._diffs(code):
            term = sq * (self.weights[k] / (2.0 * math.prod(t.shape[1:])))
            r = sq / norms[k]
            loss = term if loss is None else loss + term
            rel = r if rel is None else rel + r
        return loss, rel
