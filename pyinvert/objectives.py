r"""Composable objectives: small terms that each give a per-row loss [N], to be minimized.

A term is evaluated on the representation's code of the (jittered) image, ``code = Phi(x)``,
and on the full optimized tensor ``x`` (the image priors act on x). Terms add and scale:

    >>> targets = torch.rand(2, 31, 4, 4)
    >>> obj = 100.0 * Inversion(targets) + ImagePrior(tv_weight=1e-3, norm_weight=1e-12)
    >>> type(obj).__name__
    'Sum'

``a + b`` is a :class:`Sum`, ``w * a`` a :class:`Scaled` term (``w`` a float or a per-row
Tensor[N], e.g. a sweep of the data weight C over the rows). Scaling an :class:`ImagePrior`
scales its weights instead, and a sum of a TV-only and a norm-only prior is fused into one
:func:`pyinvert.image_prior` call: the priors keep the op's fast path (value and gradient in
one pass, a unit grad_output with the lambdas passed as weights).

Every term also reports a *measure* per row (what the engine records beside the loss): the
normalized feature error for :class:`Inversion`, the activation for :class:`Activation` /
:class:`Direction` / :class:`Caricature`, the mean squared activation for :class:`DeepDream`.
A :class:`Sum` reports its first term's measure.

Per-row tensors (targets, weights, per-row channels) have the batch as their first dimension;
:meth:`Objective.map_rows` applies a function to all of them (the engine uses it to repeat rows
for restarts, to cut chunks and to move to a device).

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, eq. (1)-(3); "Visualizing Deep Convolutional Neural Networks Using Natural
    Pre-Images", IJCV 2016, eq. (3) (inversion), eq. (4)-(5) (activation maximization and
    caricatures), Sec. 3.3-3.4 (the priors N_alpha and TV_beta).
    A. Mordvintsev, C. Olah, M. Tyka, "Inceptionism: Going Deeper into Neural Networks",
    Google Research Blog, 2015 (DeepDream).
"""
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from pyinvert import reference as _reference
from pyinvert.priors.handcrafted import image_prior as _image_prior

Weight = Union[float, Tensor]


def feature_distance(code: Tensor, target: Tensor) -> Tensor:
    """Squared distance |code_b - target_b|^2 per image. Shape: (B, ...) x (B, ...) -> (B,)."""
    d = (code - target).flatten(1)
    return (d * d).sum(1)


def _check_weight(w, fn: str):
    if isinstance(w, Tensor):
        if w.dim() > 1:
            raise ValueError(f"{fn}: expected a float or a per-row weight of shape (N,), "
                             f"got {list(w.shape)}")
        return w.detach()
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"{fn}: expected a float or a Tensor weight, got {type(w).__name__}")
    return float(w)


def _map_weight(w, fn):
    return fn(w) if isinstance(w, Tensor) and w.dim() == 1 else w


def _to(w, device, dtype):
    if isinstance(w, Tensor):
        return w.to(device=device, dtype=dtype if w.is_floating_point() else w.dtype)
    return w


class Objective:
    """Base class: ``evaluate(code, x) -> (loss [N], measure [N] or None)``.

    Subclasses implement :meth:`evaluate` and :meth:`map_rows` (and :meth:`to` when they hold
    tensors shared by all rows). ``needs_code`` is False for terms of the image alone.
    """

    needs_code = True

    def evaluate(self, code: Optional[Tensor], x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        raise NotImplementedError

    def __call__(self, code: Optional[Tensor], x: Tensor) -> Tensor:
        return self.evaluate(code, x)[0]

    def map_rows(self, fn: Callable[[Tensor], Tensor]) -> "Objective":
        """A copy with ``fn`` applied to every per-row tensor (first dimension = rows)."""
        return self

    def to(self, device=None, dtype=None) -> "Objective":
        """A copy with every tensor moved (floating tensors also cast to ``dtype``)."""
        return self.map_rows(lambda t: _to(t, device, dtype))

    def select(self, rows) -> "Objective":
        """The objective of some rows (a slice or an index tensor)."""
        return self.map_rows(lambda t: t[rows])

    def repeat_rows(self, repeats: int) -> "Objective":
        """Each row repeated ``repeats`` times in place (row = image * repeats + r)."""
        if repeats == 1:
            return self
        return self.map_rows(lambda t: t.repeat_interleave(repeats, 0))

    # ---- algebra ---------------------------------------------------------------------------

    def __add__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum([self, other])

    def __mul__(self, weight):
        if not isinstance(weight, (int, float, Tensor)) or isinstance(weight, bool):
            return NotImplemented
        return Scaled(self, weight)

    __rmul__ = __mul__

    def __neg__(self):
        return Scaled(self, -1.0)

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum([self, Scaled(other, -1.0)])

    def describe(self) -> str:
        return type(self).__name__


class Scaled(Objective):
    """``weight * term`` with a float or per-row Tensor[N] weight (the measure is the term's).

    Args:
        term: the objective scaled.
        weight: a float or Tensor[N].
    """

    def __init__(self, term: Objective, weight: Weight):
        self.term = term
        self.weight = _check_weight(weight, "Scaled")
        self.needs_code = term.needs_code

    def evaluate(self, code, x):
        loss, measure = self.term.evaluate(code, x)
        return self.weight * loss, measure

    def map_rows(self, fn):
        return Scaled(self.term.map_rows(fn), _map_weight(self.weight, fn))

    def describe(self):
        w = self.weight if not isinstance(self.weight, Tensor) else "w[N]"
        return f"{w} * {self.term.describe()}"


class Sum(Objective):
    """The sum of terms (image priors that can share one fused call are merged).

    Args:
        terms: the objectives added, in order.
    """

    def __init__(self, terms: Sequence[Objective]):
        flat: List[Objective] = []
        for t in terms:
            if not isinstance(t, Objective):
                raise TypeError(f"Sum: expected Objective terms, got {type(t).__name__}")
            flat.extend(t.terms if isinstance(t, Sum) else [t])
        self.terms = _fuse_priors(flat)
        self.needs_code = any(t.needs_code for t in self.terms)

    def evaluate(self, code, x):
        loss, measure = None, None
        for t in self.terms:
            l, m = t.evaluate(code, x)
            loss = l if loss is None else loss + l
            if measure is None:
                measure = m
        return loss, measure

    def map_rows(self, fn):
        s = Sum.__new__(Sum)
        s.terms = [t.map_rows(fn) for t in self.terms]
        s.needs_code = self.needs_code
        return s

    def describe(self):
        return " + ".join(t.describe() for t in self.terms)


# ---- data terms -------------------------------------------------------------------------

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

    def __init__(self, targets: Tensor, mask: Optional[Tensor] = None,
                 segments: Optional[Sequence[Tuple[int, int]]] = None):
        if not isinstance(targets, Tensor):
            raise TypeError(f"Inversion: expected targets to be a Tensor, "
                            f"got {type(targets).__name__}")
        self.targets = targets.detach()
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"Inversion: expected mask to be a Tensor, "
                                f"got {type(mask).__name__}")
            if tuple(mask.shape) not in (tuple(targets.shape[1:]), tuple(targets.shape)):
                raise ValueError(f"Inversion: expected mask of shape {list(targets.shape[1:])} "
                                 f"(one code) or {list(targets.shape)}, got {list(mask.shape)}")
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


class Direction(Objective):
    r"""Maximize the inner product with a direction in code space (IJCV 2016 eq. (4)):
    ``loss = -<w, Phi(x)>``, measure ``<w, Phi(x)>``.

    Args:
        direction: w, of the shape of one code (shared) or [N, ...] (one per row).

    Shape:
        - code: :math:`(N, ...)`; loss: :math:`(N,)`.
    """

    def __init__(self, direction: Tensor, per_row: Optional[bool] = None):
        if not isinstance(direction, Tensor):
            raise TypeError(f"Direction: expected direction to be a Tensor, "
                            f"got {type(direction).__name__}")
        self.direction = direction.detach()
        self.per_row = bool(per_row)

    def evaluate(self, code, x):
        w = self.direction
        if not self.per_row:
            w = w.unsqueeze(0)
        if tuple(w.shape[1:]) != tuple(code.shape[1:]):
            raise ValueError(f"{type(self).__name__}: expected a code of shape "
                             f"{list(w.shape[1:])} per row, got {list(code.shape[1:])}")
        value = (code * w).flatten(1).sum(1)
        return -value, value

    def map_rows(self, fn):
        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        if self.per_row:
            out.direction = fn(self.direction)
        return out

    def to(self, device=None, dtype=None):
        out = self.map_rows(lambda t: _to(t, device, dtype))
        out.direction = _to(out.direction, device, dtype)
        return out


class Caricature(Direction):
    r"""Caricature (IJCV 2016 eq. (5), nnpreimage ``exp_enhance``): starting from the image,
    maximize :math:`\langle \max(\Phi_0, 0) / \|\max(\Phi_0, 0)\|^2, \Phi(x) \rangle`
    (1 at the start for a non-negative code; what is already active is amplified).

    Args:
        reference: Phi0 of the images, [N, ...].
    """

    def __init__(self, reference: Tensor):
        if not isinstance(reference, Tensor):
            raise TypeError(f"Caricature: expected reference to be a Tensor, "
                            f"got {type(reference).__name__}")
        pos = reference.detach().clamp_min(0)
        n2 = pos.flatten(1).square().sum(1)
        n2 = torch.where(n2 > 0, n2, torch.ones_like(n2))
        super().__init__(pos / n2.view(-1, *([1] * (pos.dim() - 1))), per_row=True)


class Activation(Objective):
    r"""Activation maximization of a channel, a single neuron or a class logit (IJCV 2016
    Sec. 3.2 / eq. (4) with a one-hot direction): ``loss = -a``, measure ``a``, with

    * code [N, K] (logits, a linear layer): ``a = code[n, channel_n]``;
    * code [N, C, h, w] and ``y, x`` given: the neuron ``a = code[n, channel_n, y_n, x_n]``;
    * code [N, C, h, w] without ``y, x``: the channel's mean over the grid.

    Args:
        channel: the unit (channel / class index), an int or a LongTensor[N] (one per row).
        y: the neuron's row in the grid (int or LongTensor[N]); None for the whole channel.
            Default: None.
        x: the neuron's column; None with y None. Default: None.
    """

    _checked_shape = None  # the code shape whose indices were last checked

    def __init__(self, channel, y=None, x=None):
        if (y is None) != (x is None):
            raise ValueError("Activation: expected both y and x for a neuron, or neither")
        self.channel = self._index(channel, "channel")
        self.y = None if y is None else self._index(y, "y")
        self.x = None if x is None else self._index(x, "x")

    @staticmethod
    def _index(v, name):
        if isinstance(v, Tensor):
            if v.dim() > 1 or v.is_floating_point():
                raise ValueError(f"Activation: expected {name} to be an int or a LongTensor[N], "
                                 f"got {v.dtype} of shape {list(v.shape)}")
            return v.long()
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"Activation: expected {name} to be an int, got {type(v).__name__}")
        return v

    def _rows(self, v, N, device):
        if isinstance(v, Tensor):
            v = v.to(device)
            return v.expand(N) if v.dim() == 0 else v
        return torch.full((N,), v, dtype=torch.long, device=device)

    def evaluate(self, code, x):
        N = code.shape[0]
        n = torch.arange(N, device=code.device)
        ch = self._rows(self.channel, N, code.device)
        # The index checks read the device: once per code shape, not at every step.
        check = N > 0 and self._checked_shape != tuple(code.shape)
        if check and bool(((ch < 0) | (ch >= code.shape[1])).any()):
            raise ValueError(f"Activation: expected channel in [0, {code.shape[1]}), "
                             f"got {ch.tolist()}")
        if code.dim() == 2:
            a = code[n, ch]
        elif code.dim() == 4:
            if self.y is None:
                a = code[n, ch].flatten(1).mean(1)
            else:
                yy = self._rows(self.y, N, code.device)
                xx = self._rows(self.x, N, code.device)
                h, w = code.shape[-2:]
                if check and bool(((yy < 0) | (yy >= h) | (xx < 0) | (xx >= w)).any()):
                    raise ValueError(f"Activation: expected the neuron inside the {h}x{w} grid, "
                                     f"got y={yy.tolist()}, x={xx.tolist()}")
                a = code[n, ch, yy, xx]
        else:
            raise ValueError(f"Activation: expected a code of shape (N, K) or (N, C, h, w), "
                             f"got {list(code.shape)}")
        self._checked_shape = tuple(code.shape)
        return -a, a

    def map_rows(self, fn):
        out = Activation.__new__(Activation)
        for k in ("channel", "y", "x"):
            v = getattr(self, k)
            setattr(out, k, fn(v) if isinstance(v, Tensor) and v.dim() == 1 else v)
        return out

    def to(self, device=None, dtype=None):
        out = Activation.__new__(Activation)
        for k in ("channel", "y", "x"):
            v = getattr(self, k)
            setattr(out, k, v.to(device) if isinstance(v, Tensor) and device is not None else v)
        return out


class ClassLogProbability(Objective):
    r"""The log-probability of a class under the softmax of logits: ``loss = -log p_k(x)``,
    ``p = softmax(Phi(x))``; measure ``p_k``. Unlike the logit alone, it pushes the other
    classes down (a logit can grow while a similar class grows as much, leaving p low), and it
    saturates once p_k is near 1.

    Args:
        channel: the class index, an int or a LongTensor[N].
    """

    def __init__(self, channel):
        self.channel = Activation._index(channel, "channel")

    def evaluate(self, code, x):
        if code.dim() != 2:
            raise ValueError(f"ClassLogProbability: expected logits of shape (N, K), "
                             f"got {list(code.shape)}")
        N = code.shape[0]
        ch = Activation._rows(None, self.channel, N, code.device)
        logp = torch.log_softmax(code, 1)[torch.arange(N, device=code.device), ch]
        return -logp, logp.exp()

    def map_rows(self, fn):
        out = ClassLogProbability.__new__(ClassLogProbability)
        out.channel = fn(self.channel) if isinstance(self.channel, Tensor) and \
            self.channel.dim() == 1 else self.channel
        return out

    def to(self, device=None, dtype=None):
        out = self.map_rows(lambda t: t)
        if isinstance(out.channel, Tensor) and device is not None:
            out.channel = out.channel.to(device)
        return out


class DeepDream(Objective):
    r"""DeepDream (Mordvintsev et al. 2015): amplify whatever the layer responds to,
    ``loss = -1/2 ||Phi(x)||^2 / D`` (D = entries of one code, so the scale does not depend on
    the layer's size); measure ``||Phi(x)||^2 / D``."""

    def evaluate(self, code, x):
        e = code.flatten(1).square().mean(1)
        return -0.5 * e, e


# ---- image priors -----------------------------------------------------------------------

class ImagePrior(Objective):
    r"""The fused image priors ``tv_weight TV_beta(x) + norm_weight N_alpha(x)`` per row
    (IJCV 2016 eq. (2) and Sec. 3.3-3.4; CVPR 2015 eq. (2)-(3)), through
    :func:`pyinvert.image_prior` (value and gradient in one pass). Scaling by a float or a
    per-row Tensor scales the weights (the op's fast path is kept).

    Args:
        tv_weight: weight of TV_beta, a float or Tensor[N]. Default: 0.0.
        beta: TV exponent. Default: 2.0.
        norm_weight: weight of N_alpha (R_alpha when not isotropic). Default: 0.0.
        alpha: norm exponent. Default: 6.0.
        isotropic: N_alpha over the channels of a pixel (IJCV) instead of elementwise.
            Default: False.
        backend: "fused" or "reference". Default: "fused".
    """

    needs_code = False

    def __init__(self, tv_weight: Weight = 0.0, beta: float = 2.0, norm_weight: Weight = 0.0,
                 alpha: float = 6.0, isotropic: bool = False, backend: str = "fused"):
        if backend not in ("fused", "reference"):
            raise ValueError(f"ImagePrior: expected backend in ('fused', 'reference'), "
                             f"got {backend!r}")
        self.tv_weight = _check_weight(tv_weight, "ImagePrior")
        self.norm_weight = _check_weight(norm_weight, "ImagePrior")
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.isotropic = bool(isotropic)
        self.backend = backend

    def _off(self, w) -> bool:
        return not isinstance(w, Tensor) and w == 0.0

    def evaluate(self, code, x):
        fn = _image_prior if self.backend == "fused" else _reference.image_prior
        return fn(x, tv_weight=self.tv_weight, beta=self.beta, norm_weight=self.norm_weight,
                  alpha=self.alpha, isotropic=self.isotropic), None

    def _replace(self, **kw):
        out = ImagePrior.__new__(ImagePrior)
        out.__dict__.update(self.__dict__)
        out.__dict__.update(kw)
        return out

    def __mul__(self, weight):
        if not isinstance(weight, (int, float, Tensor)) or isinstance(weight, bool):
            return NotImplemented
        w = _check_weight(weight, "ImagePrior")
        return self._replace(tv_weight=self.tv_weight * w, norm_weight=self.norm_weight * w)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def map_rows(self, fn):
        return self._replace(tv_weight=_map_weight(self.tv_weight, fn),
                             norm_weight=_map_weight(self.norm_weight, fn))

    def describe(self):
        return (f"ImagePrior(tv={'w[N]' if isinstance(self.tv_weight, Tensor) else self.tv_weight}"
                f", beta={self.beta}, norm="
                f"{'w[N]' if isinstance(self.norm_weight, Tensor) else self.norm_weight}, "
                f"alpha={self.alpha}, isotropic={self.isotropic})")


def TotalVariation(weight: Weight = 1.0, beta: float = 2.0, backend: str = "fused"):
    r"""``weight * TV_beta(x)`` (CVPR 2015 eq. (3), IJCV 2016 Sec. 3.4) as an
    :class:`ImagePrior`."""
    return ImagePrior(tv_weight=weight, beta=beta, backend=backend)


def AlphaNorm(weight: Weight = 1.0, alpha: float = 6.0, isotropic: bool = True,
              backend: str = "fused"):
    r"""``weight * N_alpha(x)`` (isotropic, IJCV 2016 Sec. 3.3) or ``R_alpha`` (CVPR 2015
    eq. (2)) as an :class:`ImagePrior`."""
    return ImagePrior(norm_weight=weight, alpha=alpha, isotropic=isotropic, backend=backend)


def _fuse_priors(terms: List[Objective]) -> List[Objective]:
    """Merge a TV-only and a norm-only ImagePrior (same backend) into one fused term, placed
    where the first was."""
    out: List[Objective] = []
    for t in terms:
        if isinstance(t, ImagePrior):
            for i, o in enumerate(out):
                if not isinstance(o, ImagePrior) or o.backend != t.backend:
                    continue
                if o._off(o.norm_weight) and t._off(t.tv_weight):
                    out[i] = o._replace(norm_weight=t.norm_weight, alpha=t.alpha,
                                        isotropic=t.isotropic)
                    break
                if o._off(o.tv_weight) and t._off(t.norm_weight):
                    out[i] = o._replace(tv_weight=t.tv_weight, beta=t.beta)
                    break
            else:
                out.append(t)
        else:
            out.append(t)
    return out


# ---- the inversion objective as the engine built it before ------------------------------

def inversion_objective(targets: Tensor, *, data_weight: Weight, tv_weight: Weight,
                        norm_weight: Weight, beta: float, alpha: float, isotropic: bool,
                        backend: str = "fused", mask: Optional[Tensor] = None,
                        segments=None) -> Objective:
    """``C |Phi(x) - Phi0|^2 / |Phi0|^2 + tv TV_beta(x) + norm N_alpha(x)`` (weights already
    scaled as the recipe says), as :func:`pyinvert.invert` uses it."""
    return Sum([Scaled(Inversion(targets, mask=mask, segments=segments), data_weight),
                ImagePrior(tv_weight=tv_weight, beta=beta, norm_weight=norm_weight,
                           alpha=alpha, isotropic=isotropic, backend=backend)])
