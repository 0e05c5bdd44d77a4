"""Incremental inference for occlusion (Nakandala, Kumar, Papakonstantinou. Incremental and
approximate inference for faster occlusion-based deep CNN explanations. SIGMOD 2019).

An occluded copy differs from the clean image only inside its window; after a convolution
with kernel k, stride s and padding p only the outputs whose receptive field meets the
changed region change. So each early layer is computed only on a small patch per copy: the
patch's input crop is assembled from the copy's changed values and the clean image's cached
activation (zero padding outside the image, as the convolution pads), and the layer runs with
padding 0 on the crop. Exact, not approximate: the crop holds exactly the values the full
layer would read. Once a changed region covers more than ``max_fraction`` of its layer (the
paper's projective-field threshold), the patches are pasted into the clean activation and
the rest of the network runs in full on the batch. The clean activations are cached per image,
only for the stages before that switch (computed the first time a batch reaches them).

Patch sizes are the same for every copy of a batch (the window's size, border windows moved
inside the image: a superset of the changed region), so each layer is one batched call.
Supported: the zoo networks (``features`` of AlexNet, VGG-16 and MobileNetV2, and ResNet-18's
stem and stages) built from Conv2d, MaxPool2d, BatchNorm2d (eval), ReLU-family units,
MobileNetV2's inverted residuals and ResNet's basic blocks, with identity or ImageNet
preprocessing.
"""

import torch
from torch import nn
from torch.nn import functional as F

from pyinvert.attribution.core import _identity
from pyinvert.models import VGG16, AlexNet, MobileNetV2, ResNet18, normalize
from pyinvert.models.mobilenetv2 import InvertedResidual
from pyinvert.models.resnet import BasicBlock

_POINT = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Identity, nn.Dropout)


class _State:
    """ref: the clean activation (C, H, W); patch: (N, C, h, w) at rows ys, cols xs."""

    __slots__ = ("ref", "patch", "ys", "xs")

    def __init__(self, ref, patch, ys, xs):
        self.ref, self.patch, self.ys, self.xs = ref, patch, ys, xs


def _put(dst, src, dy, dx):
    """dst[n, :, dy[n] + i, dx[n] + j] = src[n, :, i, j] where inside dst; one slice
    assignment per distinct offset (copies of a batch share few offsets)."""
    N, h, w = src.shape[0], src.shape[-2], src.shape[-1]
    hd, wd = dst.shape[-2], dst.shape[-1]
    groups = {}
    for n, key in enumerate(zip(dy.tolist(), dx.tolist())):
        groups.setdefault(key, []).append(n)
    for (a, b), idx in groups.items():
        r0, r1, c0, c1 = max(0, -a), min(h, hd - a), max(0, -b), min(w, wd - b)
        if r1 <= r0 or c1 <= c0:
            continue
        if len(idx) == N:
            dst[:, :, a + r0 : a + r1, b + c0 : b + c1] = src[:, :, r0:r1, c0:c1]
        else:
            it = torch.tensor(idx, device=dst.device)
            dst[it, :, a + r0 : a + r1, b + c0 : b + c1] = src[it, :, r0:r1, c0:c1]
    return dst


def _crop(state, r0, c0, hc, wc, fill):
    """(N, C, hc, wc) crops starting at rows r0 / cols c0 (N,) of the copies' activations;
    rows and columns outside the activation (the convolution's padding) hold ``fill``."""
    ref = state.ref
    C, H, W = ref.shape
    crop = ref.new_full((len(r0), C, hc, wc), fill)
    for n, (r, c) in enumerate(zip(r0.tolist(), c0.tolist())):
        a0, a1, b0, b1 = max(r, 0), min(r + hc, H), max(c, 0), min(c + wc, W)
        if a1 > a0 and b1 > b0:
            crop[n, :, a0 - r : a1 - r, b0 - c : b1 - c] = ref[:, a0:a1, b0:b1]
    return _put(crop, state.patch, state.ys - r0, state.xs - c0)


def _geometry(module):
    k, s, p = module.kernel_size, module.stride, module.padding
    k = k if isinstance(k, tuple) else (k, k)
    s = s if isinstance(s, tuple) else (s, s)
    p = p if isinstance(p, tuple) else (p, p)
    return k, s, p


def _out_range(start, size, full_out, k, s, p):
    """Start (N,) and size of the output rows a changed input band [start, start + size)
    reaches, as a band of fixed size moved inside [0, full_out)."""
    out = min(full_out, (size + k - 2) // s + 1)
    lo = -torch.div(-(start + p - k + 1), s, rounding_mode="floor")
    return lo.clamp(0, full_out - out), out


class _Local:
    """A convolution or max pooling, then the pointwise units after it (``post``): only the
    group's output is cached, not each unit's."""

    def __init__(self, module):
        self.m = module
        self.post = []
        self.k, self.s, self.p = _geometry(module)
        self.fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0

    def full(self, x):
        y = self.m(x[None])
        for p in self.post:
            y = p(y)
        return y[0]

    def patch(self, st, ref_out):
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        H, W = ref_out.shape[-2:]
        h_in, w_in = st.patch.shape[-2:]
        oy, h = _out_range(st.ys, h_in, H, kh, sh, ph)
        ox, w = _out_range(st.xs, w_in, W, kw, sw, pw)
        if ph != pw:
            raise ValueError("incremental: expected equal row and column padding")
        crop = _crop(
            st, oy * sh - ph, ox * sw - pw, (h - 1) * sh + kh, (w - 1) * sw + kw, self.fill
        )
        m = self.m
        if isinstance(m, nn.Conv2d):
            out = F.conv2d(crop, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        else:
            out = F.max_pool2d(crop, m.kernel_size, m.stride, 0)
        for p in self.post:
            out = p(out)
        return _State(ref_out, out, oy, ox)


class _Point:
    def __init__(self, module):
        self.m = module

    def full(self, x):
        return self.m(x[None])[0]

    def patch(self, st, ref_out):
        return _State(ref_out, self.m(st.patch), st.ys, st.xs)


def _union(a, b, H, W):
    """Both states re-cropped to one band holding both changed regions."""

    def band(s0, n0, s1, n1, full):
        lo, hi = torch.minimum(s0, s1), torch.maximum(s0 + n0, s1 + n1)
        n = min(full, int((hi - lo).max()))
        return lo.clamp(max=full - n), n

    ys, h = band(a.ys, a.patch.shape[-2], b.ys, b.patch.shape[-2], H)
    xs, w = band(a.xs, a.patch.shape[-1], b.xs, b.patch.shape[-1], W)
    return _crop(a, ys, xs, h, w, 0.0), _crop(b, ys, xs, h, w, 0.0), ys, xs


class _Residual:
    """post(branch(x) + shortcut(x)); shortcut None: the identity; add False: branch only."""

    def __init__(self, branch, shortcut, post, add):
        self.branch, self.shortcut, self.post, self.add = branch, shortcut, post, add


def _convert(module):
    """The steps of a supported module, or None."""
    if isinstance(module, nn.Conv2d):
        ok = (
            module.dilation == (1, 1)
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
        return [_Local(module)] if ok else None
    if isinstance(module, nn.MaxPool2d):
        ok = module.dilation in (1, (1, 1)) and not module.ceil_mode
        return [_Local(module)] if ok else None
    if isinstance(module, _POINT):
        return (
            None
            if getattr(module, "training", False)
            and isinstance(module, (nn.BatchNorm2d, nn.Dropout))
            else [_Point(module)]
        )
    if isinstance(module, nn.Sequential):
        steps = []
        for child in module:
            sub = _convert(child)
            if sub is None:
                return None
            for step in sub:  # a unit after a conv joins it: one cached output
                if isinstance(step, _Point) and steps and isinstance(steps[-1], _Local):
                    steps[-1].post.append(step.m)
                else:
                    steps.append(step)
        return steps
    if isinstance(module, InvertedResidual):
        branch = _convert(module.conv)
        return None if branch is None else [_Residual(branch, None, [], module.use_res_connect)]
    if isinstance(module, BasicBlock):
        branch = _convert(
            nn.Sequential(module.conv1, module.bn1, module.relu, module.conv2, module.bn2)
        )
        short = None if module.downsample is None else _convert(module.downsample)
        if branch is None or (module.downsample is not None and short is None):
            return None
        return [_Residual(branch, short, [_Point(module.relu)], True)]
    return None


def _run_full(steps, x, refs):
    for step in steps:
        if isinstance(step, _Residual):
            out = _run_full(step.branch, x, refs)
            if step.add:
                out = out + (x if step.shortcut is None else _run_full(step.shortcut, x, refs))
            x = _run_full(step.post, out, refs)
        else:
            x = step.full(x)
        refs.append(x)
    return x


def _run_patch(steps, st, refs):
    for step in steps:
        if isinstance(step, _Residual):
            b = _run_patch(step.branch, st, refs)
            if step.add:
                s = st if step.shortcut is None else _run_patch(step.shortcut, st, refs)
                H, W = b.ref.shape[-2:]
                pa, pb, ys, xs = _union(b, s, H, W)
                b = _State(b.ref + s.ref, pa + pb, ys, xs)
            st = _run_patch(step.post, b, refs)
        else:
            st = step.patch(st, next(refs))
        if isinstance(step, _Residual):
            next(refs)
    return st


def _paste(st):
    """The copies' full activations: the clean one with each copy's patch pasted in."""
    full = st.ref.expand(st.patch.shape[0], *st.ref.shape).clone()
    return _put(full, st.patch, st.ys, st.xs)


class IncrementalOcclusion:
    """Occlusion logits of one image's occluded copies with incremental early layers.

    Use :meth:`for_model` (None when the model is not supported), then ``run =
    engine.prepare(image, baseline)`` and ``run(boxes)`` -> (N, K) logits.
    """

    def __init__(self, stages, head, pre, max_fraction=0.5):
        self.stages, self.head, self.pre = stages, head, pre
        self.max_fraction = max_fraction

    @classmethod
    def for_model(cls, model, pre, max_fraction=0.5):
        if pre is not normalize and pre is not _identity:
            return None
        if isinstance(model, (AlexNet, VGG16, MobileNetV2)):
            mods = list(model.features)
            if isinstance(model, MobileNetV2):

                def head(z):
                    return model.classifier(torch.flatten(F.adaptive_avg_pool2d(z, 1), 1))
            else:

                def head(z):
                    return model.classifier(torch.flatten(model.avgpool(z), 1))
        elif isinstance(model, ResNet18):
            mods = [
                model.conv1,
                model.bn1,
                model.relu,
                model.maxpool,
                model.layer1,
                model.layer2,
                model.layer3,
                model.layer4,
            ]

            def head(z):
                return model.fc(torch.flatten(model.avgpool(z), 1))
        else:
            return None
        stages = []
        for m in mods:
            stages.append((m, _convert(m)))
        return cls(stages, head, pre, max_fraction)

    def prepare(self, image, baseline, window):
        """For ``image`` (C, H, W) returns ``run(boxes)`` (boxes no larger than ``window``
        (h, w)). The clean activations of a stage are computed and cached the first time a
        batch reaches it incrementally, so only the stages before the switch are kept."""
        inputs = [self.pre(image[None])[0]]  # the clean input of each stage reached
        refs = []  # the cached outputs of each stage's steps
        H, W = image.shape[-2:]

        def run(boxes):
            wh, ww = window
            ys = torch.tensor([min(y0, H - wh) for y0, _, _, _ in boxes])
            xs = torch.tensor([min(x0, W - ww) for _, _, x0, _ in boxes])
            patch = torch.stack(
                [image[:, y : y + wh, x : x + ww] for y, x in zip(ys.tolist(), xs.tolist())]
            )
            for i, (y0, y1, x0, x1) in enumerate(boxes):
                py, px = y0 - int(ys[i]), x0 - int(xs[i])
                patch[i, :, py : py + y1 - y0, px : px + x1 - x0] = baseline[:, y0:y1, x0:x1]
            st = _State(inputs[0], self.pre(patch), ys, xs)
            i = 0
            for i, (_module, steps) in enumerate(self.stages):
                H_i, W_i = st.ref.shape[-2:]
                if steps is None or (
                    st.patch.shape[-2] * st.patch.shape[-1] > self.max_fraction * H_i * W_i
                ):
                    break
                if i == len(refs):
                    cache = []
                    inputs.append(_run_full(steps, inputs[i], cache))
                    refs.append(cache)
                st = _run_patch(steps, st, iter(refs[i]))
            else:
                i = len(self.stages)
            z = _paste(st)
            for module, _ in self.stages[i:]:
                z = module(z)
            return self.head(z)

        return run
