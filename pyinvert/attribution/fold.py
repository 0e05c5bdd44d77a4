"""The inference form of a network for incremental occlusion (:mod:`.incremental`): steps that
run a layer either on the full batch or, through the engine, on patches.

- ``Local``: a convolution or max pooling and the pointwise units after it, with an eval-mode
  BatchNorm right after a convolution folded into its weight and bias (``w * g / sqrt(v + e)``,
  ``(b - m) * g / sqrt(v + e) + beta``: the same function up to float32 rounding; the folded
  tensors are new, the model is not changed) and ReLU-family units applied in place.
- ``Point``: a pointwise unit on its own.
- ``Residual``: ``post(branch(x) + shortcut(x))`` (ResNet's basic block).
- ``Inverted``: MobileNetV2's inverted residual (1x1 expansion, 3x3 depthwise, 1x1 linear
  projection, plus the input when the shapes match) as one step.

Steps run in the network's tail (the copies in full, after the incremental stages) keep no
copy of a large weight (``keep=False``, see :meth:`Local.apply`): on MobileNetV2 most weights
are in the late 7x7 stages.

Clean activations are kept as :class:`Ref`: zero-padded channels-last storage, so the engine
gathers a whole batch of crops with one indexing call.
"""

import torch
from torch import nn
from torch.nn import functional as F

from pyinvert.models.mobilenetv2 import InvertedResidual
from pyinvert.models.resnet import BasicBlock

#: Convolution weights of at most this many elements keep their folded, packed copy in the
#: tail too (MobileNetV2: those before the 7x7 stages, about 2 MB in all).
SMALL = 100_000

#: Padding kept around every cached clean activation (the largest padding a step may use).
PAD = 3

_POINT = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Identity, nn.Dropout)


class Ref:
    """A clean activation (C, H, W), stored zero-padded by ``PAD`` as (H + 2 PAD, W + 2 PAD, C);
    ``t`` is the (C, H, W) view of its inside."""

    __slots__ = ("pad", "t", "_fills")

    def __init__(self, t):
        C, H, W = t.shape
        self.pad = t.new_zeros(H + 2 * PAD, W + 2 * PAD, C)
        self.pad[PAD : PAD + H, PAD : PAD + W] = t.permute(1, 2, 0)
        self.t = self.pad[PAD : PAD + H, PAD : PAD + W].permute(2, 0, 1)
        self._fills = {}

    def padded(self, fill=0.0):
        """The padded storage with the border set to ``fill`` (max pooling pads with -inf)."""
        if fill == 0.0:
            return self.pad
        if fill not in self._fills:
            q = torch.full_like(self.pad, fill)
            H, W = self.t.shape[-2:]
            q[PAD : PAD + H, PAD : PAD + W] = self.pad[PAD : PAD + H, PAD : PAD + W]
            self._fills[fill] = q
        return self._fills[fill]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _inplace(m):
    """A ReLU-family unit as an in-place function of a fresh tensor, or None."""
    if isinstance(m, nn.Hardtanh):  # ReLU6 included
        lo, hi = float(m.min_val), float(m.max_val)
        return lambda y: y.clamp_(lo, hi)
    if isinstance(m, nn.ReLU):
        return torch.relu_
    if isinstance(m, nn.LeakyReLU):
        slope = float(m.negative_slope)
        return lambda y: F.leaky_relu_(y, slope)
    return None


_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise"
)


def _fusable(m):
    """oneDNN's fused post-op (name, scalars) for a ReLU-family unit, or None."""
    if isinstance(m, nn.Hardtanh):
        return "hardtanh", [float(m.min_val), float(m.max_val)]
    if isinstance(m, nn.ReLU):
        return "relu", []
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", [float(m.negative_slope)]
    return None


def _pack(weight, conv, padding, input_size):
    """The weight reordered into oneDNN's blocked layout, or None where oneDNN refuses."""
    try:
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(padding), list(conv.stride), list(conv.dilation), conv.groups, input_size
        )
    except RuntimeError:
        return None


def _foldable(bn):
    return isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_var is not None


def fold_bn(weight, bias, bn):
    """The weight and bias of a convolution followed by the eval-mode BatchNorm ``bn``."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean if bias is None else bias - bn.running_mean
    shift = shift * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return (weight * scale.reshape(-1, 1, 1, 1)).detach(), shift.detach()


class Local:
    """A convolution or max pooling, then the pointwise units after it (``post``): only the
    group's output is cached, not each unit's."""

    def __init__(self, module, post=()):
        self.m, self.post = module, list(post)
        self.k, self.s, self.p = (
            _pair(v) for v in (module.kernel_size, module.stride, module.padding)
        )
        self.fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0
        self.conv = isinstance(module, nn.Conv2d)
        self.weight = self.bias = self.bn = None
        rest = list(post)
        if self.conv:
            if rest and _foldable(rest[0]):
                self.bn = rest.pop(0)
            self.bias = self._folded()[1]
        # a 1x1 convolution can run as a matrix product with the model's own weight and the
        # BatchNorm applied to its output (``scale``): no copy of the weight (the tail)
        self.scale = None
        if self.conv and self.bn is not None:
            bn = self.bn
            self.scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                self.scale = (self.scale * bn.weight).detach()
        self.pointwise = (
            self.conv
            and (self.k, self.s, self.p) == ((1, 1), (1, 1), (0, 0))
            and module.groups == 1
            and module.dilation == (1, 1)
            and (self.bn is None or self.scale is not None)
        )
        # weights kept even in the tail: depthwise and small ones (repacking costs more)
        self.small = self.conv and (
            module.groups == module.in_channels or module.weight.numel() <= SMALL
        )
        rest = [m for m in rest if not isinstance(m, (nn.Identity, nn.Dropout))]
        # oneDNN: the weight reordered once, the first unit fused into the convolution
        self.packed, self.attr, self.act = None, None, None
        w = module.weight if self.conv else None
        if self.conv and _MKLDNN and w.device.type == "cpu" and w.dtype == torch.float32:
            attr = _fusable(rest[0]) if rest else ("none", [])
            if attr is not None:
                self.packed, self.attr = {}, attr
                self.act = _inplace(rest.pop(0)) if rest else None
        # in place where possible; an unfolded BatchNorm as its module
        self.fns = [_inplace(m) or m for m in rest]

    def apply(self, x, padding=None, keep=True, w=None):
        """The group on ``x``. ``keep`` False (the network's tail, run in full): no folded or
        packed copy of a large weight is kept: a 1x1 convolution runs as a matrix product with
        the model's weight, the BatchNorm folded into a copy of that one weight made for this
        call; other convolutions use a folded copy made for this call; depthwise and small
        (``SMALL``) weights keep their packed copy.
        ``w``: a weight from :meth:`packed_for`."""
        p = self.p if padding is None else padding
        m = self.m
        keep = keep or self.small
        if not keep and self.pointwise and _pair(p) == (0, 0):
            return self._matmul(x)
        if w is None:
            w = self.packed_for(x, p, keep)
        if w is not None:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, w, self.bias, _pair(p), m.stride, m.dilation, m.groups, *self.attr, ""
            )
        elif self.conv:
            weight = self.weight if self.weight is not None else self._folded()[0]
            if keep:
                self.weight = weight
            y = F.conv2d(x, weight, self.bias, m.stride, p, m.dilation, m.groups)
            if self.act is not None:  # fused on the oneDNN path
                y = self.act(y)
        else:
            y = F.max_pool2d(x, m.kernel_size, m.stride, p)
        for f in self.fns:
            y = f(y)
        return y

    def _folded(self):
        """The convolution's weight (channels-last) and bias with the BatchNorm folded in:
        computed when needed, so a packed layer keeps only its packed copy."""
        m = self.m
        w, b = m.weight.detach(), None if m.bias is None else m.bias.detach()
        if self.bn is not None:
            w, b = fold_bn(w, b, self.bn)
        return w.contiguous(memory_format=torch.channels_last), b

    def _matmul(self, x):
        N, C, H, W = x.shape
        m = self.m
        w = m.weight.detach().reshape(-1, C)
        x2 = x.permute(0, 2, 3, 1).reshape(-1, C)
        if self.scale is not None:  # folded for this call: one weight at a time
            w = w * self.scale[:, None]
        y = torch.mm(x2, w.t()) if self.bias is None else torch.addmm(self.bias, x2, w.t())
        del w
        y = y.view(N, H, W, -1).permute(0, 3, 1, 2)
        if self.act is not None:
            y = self.act(y)
        for f in self.fns:
            y = f(y)
        return y

    def packed_for(self, x, padding=None, keep=True):
        """The weight in oneDNN's layout (None off that path), reordered once for the first
        input of each padding (oneDNN picks the layout by the input's shape; any shape may use
        it); ``keep`` False: made for this call only (unless one is kept already)."""
        keep = keep or self.small
        if self.packed is None or x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        if not keep and self.pointwise:
            return None  # the matrix product
        keep = keep or self.small
        key = _pair(self.p if padding is None else padding)
        if key in self.packed:
            return self.packed[key]
        w = _pack(self._folded()[0], self.m, key, list(x.shape))
        if keep:
            self.packed[key] = w
        return w

    def full(self, x, keep=True, chunk=None):
        return self.apply(x, keep=keep)


class Point:
    def __init__(self, module):
        self.m = module

    def full(self, x, keep=True, chunk=None):
        return self.m(x)


class Residual:
    """post(branch(x) + shortcut(x)); shortcut None: the identity; add False: branch only."""

    def __init__(self, branch, shortcut, post, add):
        self.branch, self.shortcut, self.post, self.add = branch, shortcut, post, add


class Inverted:
    """MobileNetV2's inverted residual: ``expand`` (a 1x1 ``Local`` or None), ``depthwise``
    (3x3, padding 1), ``project`` (1x1, BatchNorm folded), ``residual``."""

    def __init__(self, expand, depthwise, project, residual, stride):
        self.expand, self.depthwise, self.project = expand, depthwise, project
        self.residual, self.stride = residual, stride

    def full(self, x, keep=True, chunk=None):
        """The block on a batch; ``chunk``: the expanded (widest) maps are made for at most
        that many images at a time (the output is one tensor), each weight packed once."""
        n = x.shape[0]
        c = n if chunk is None else max(1, min(int(chunk), n))
        exp, dw, proj = self.expand, self.depthwise, self.project
        first = x[:c]
        we = None if exp is None else exp.packed_for(first, keep=keep)
        h = first if exp is None else exp.apply(first, keep=keep, w=we)
        wd = dw.packed_for(h, keep=keep)
        h = dw.apply(h, keep=keep, w=wd)
        wp = proj.packed_for(h, keep=keep)
        y0 = proj.apply(h, keep=keep, w=wp)
        if c == n:
            return y0.add_(x) if self.residual else y0
        del h
        out = torch.empty((n, *y0.shape[1:]), dtype=y0.dtype, device=y0.device)
        out = out.contiguous(memory_format=torch.channels_last)
        out[:c] = y0
        del y0
        for lo in range(c, n, c):
            part = x[lo : lo + c]
            h = part if exp is None else exp.apply(part, keep=keep, w=we)
            out[lo : lo + c] = proj.apply(dw.apply(h, keep=keep, w=wd), keep=keep, w=wp)
            del h
        return out.add_(x) if self.residual else out


def _conv_ok(m):
    return (
        m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
        and max(m.padding) <= PAD
    )


def _inverted(module):
    """The one-step form of an InvertedResidual of the expected structure, or None."""
    layers = list(module.conv)

    def conv_unit(seq, k):
        if not (isinstance(seq, nn.Sequential) and len(seq) == 3):
            return None
        conv, bn, act = seq
        ok = (
            isinstance(conv, nn.Conv2d)
            and _conv_ok(conv)
            and conv.kernel_size == (k, k)
            and conv.padding == ((k - 1) // 2,) * 2
            and _foldable(bn)
            and _inplace(act) is not None
        )
        if not ok:
            return None
        return Local(conv, [bn, act])

    if len(layers) not in (3, 4):
        return None
    expand = conv_unit(layers[0], 1) if len(layers) == 4 else None
    dw = conv_unit(layers[-3], 3)
    proj, bn = layers[-2], layers[-1]
    if (
        (len(layers) == 4 and expand is None)
        or dw is None
        or expand is not None
        and (expand.m.stride != (1, 1))
    ):
        return None
    if dw.m.groups != dw.m.in_channels or dw.m.stride[0] != dw.m.stride[1]:
        return None
    if not (
        isinstance(proj, nn.Conv2d)
        and _conv_ok(proj)
        and proj.kernel_size == (1, 1)
        and proj.stride == (1, 1)
        and _foldable(bn)
    ):
        return None
    return Inverted(expand, dw, Local(proj, [bn]), module.use_res_connect, dw.m.stride[0])


def convert(module):
    """The steps of a supported module, or None."""
    if isinstance(module, nn.Conv2d):
        return [Local(module)] if _conv_ok(module) else None
    if isinstance(module, nn.MaxPool2d):
        ok = (
            module.dilation in (1, (1, 1))
            and not module.ceil_mode
            and max(_pair(module.padding)) <= PAD
        )
        return [Local(module)] if ok else None
    if isinstance(module, _POINT):
        return (
            None
            if getattr(module, "training", False)
            and isinstance(module, (nn.BatchNorm2d, nn.Dropout))
            else [Point(module)]
        )
    if isinstance(module, nn.Sequential):
        steps = []
        for child in module:
            sub = convert(child)
            if sub is None:
                return None
            for step in sub:  # a unit after a conv joins it: one cached output
                if isinstance(step, Point) and steps and isinstance(steps[-1], Local):
                    steps[-1] = Local(steps[-1].m, [*steps[-1].post, step.m])
                else:
                    steps.append(step)
        return steps
    if isinstance(module, InvertedResidual):
        fused = _inverted(module)
        if fused is not None:
            return [fused]
        branch = convert(module.conv)
        return None if branch is None else [Residual(branch, None, [], module.use_res_connect)]
    if isinstance(module, BasicBlock):
        branch = convert(
            nn.Sequential(module.conv1, module.bn1, module.relu, module.conv2, module.bn2)
        )
        short = None if module.downsample is None else convert(module.downsample)
        if branch is None or (module.downsample is not None and short is None):
            return None
        return [Residual(branch, short, [Point(module.relu)], True)]
    return None
