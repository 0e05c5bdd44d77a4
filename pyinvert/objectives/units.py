r"""Terms of units: activation maximization of channels, neurons and classes (IJCV 2016 eq. (4)),
directions in code space, caricatures (eq. (5)) and DeepDream (Mordvintsev et al. 2015).
"""

from typing import Optional

import torch
from torch import Tensor

from pyinvert.objectives.base import Objective, _to


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
            raise TypeError(
                f"Direction: expected direction to be a Tensor, got {type(direction).__name__}"
            )
        self.direction = direction.detach()
        self.per_row = bool(per_row)

    def evaluate(self, code, x):
        w = self.direction
        if not self.per_row:
            w = w.unsqueeze(0)
        if tuple(w.shape[1:]) != tuple(code.shape[1:]):
            raise ValueError(
                f"{type(self).__name__}: expected a code of shape "
                f"{list(w.shape[1:])} per row, got {list(code.shape[1:])}"
            )
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
            raise TypeError(
                f"Caricature: expected reference to be a Tensor, got {type(reference).__name__}"
            )
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
                raise ValueError(
                    f"Activation: expected {name} to be an int or a LongTensor[N], "
                    f"got {v.dtype} of shape {list(v.shape)}"
                )
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
            raise ValueError(
                f"Activation: expected channel in [0, {code.shape[1]}), got {ch.tolist()}"
            )
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
                    raise ValueError(
                        f"Activation: expected the neuron inside the {h}x{w} grid, "
                        f"got y={yy.tolist()}, x={xx.tolist()}"
                    )
                a = code[n, ch, yy, xx]
        else:
            raise ValueError(
                f"Activation: expected a code of shape (N, K) or (N, C, h, w), "
                f"got {list(code.shape)}"
            )
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
            raise ValueError(
                f"ClassLogProbability: expected logits of shape (N, K), got {list(code.shape)}"
            )
        N = code.shape[0]
        ch = Activation._rows(None, self.channel, N, code.device)
        logp = torch.log_softmax(code, 1)[torch.arange(N, device=code.device), ch]
        return -logp, logp.exp()

    def map_rows(self, fn):
        out = ClassLogProbability.__new__(ClassLogProbability)
        out.channel = (
            fn(self.channel)
            if isinstance(self.channel, Tensor) and self.channel.dim() == 1
            else self.channel
        )
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
