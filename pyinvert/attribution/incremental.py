"""Incremental inference for occlusion (Nakandala, Kumar, Papakonstantinou. Incremental and
approximate inference for faster occlusion-based deep CNN explanations. SIGMOD 2019).

An occluded copy differs from the clean image only inside its window; after a convolution
with kernel k, stride s and padding p only the outputs whose receptive field meets the
changed region change. So each early layer is computed only on a small patch per copy: the
patch's input crop is gathered from the clean image's cached activation (one indexing call
for the whole batch; zero padding outside the image, as the convolution pads), the copy's
changed values are written over it, and the layer runs with padding 0 on the crop. Exact, not
approximate: the crop holds exactly the values the full layer would read. Once a changed
region covers more than ``max_fraction`` of its layer (the paper's projective-field
threshold), the patches are pasted into the clean activation and the rest of the network runs
in full on the batch. The clean activations are cached per image, only for the stages before
that switch (computed the first time a batch reaches them).

For speed, the engine works on an inference form of the network (:mod:`.fold`): eval-mode
BatchNorm folded into the convolution before it, activations applied in place, channels-last
tensors, and MobileNetV2's inverted residual as one step whose only cached activation is the
block's input (the expansion is recomputed on the depthwise convolution's one-pixel halo
rather than cached at six times the width). The results equal the network's up to float32
rounding. Memory: the incremental stages keep folded, oneDNN-packed weights (the early
layers: small), and so do the tail's depthwise and small layers (MobileNetV2's up to the 7x7
stages, about 2 MB); the large 1x1 convolutions of the tail, which hold most of MobileNetV2's
weights, keep no copy: they run as matrix products with the model's own weight, the BatchNorm
folded into a copy of one layer's weight at a time (freed after it); and the tail's widest
maps (the expansions) are made ``chunk`` copies at a time. On MobileNetV2 at 224 (window 32,
stride 16, batch 8) this cut the peak of a call from 24 to 14.8 MiB for about 5 percent
of time.

Patch sizes are the same for every copy of a batch (the window's size, border windows moved
inside the image: a superset of the changed region), so each layer is one batched call.
Supported: the zoo networks (``features`` of AlexNet, VGG-16 and MobileNetV2, and ResNet-18's
stem and stages) built from Conv2d, MaxPool2d, BatchNorm2d (eval), ReLU-family units,
MobileNetV2's inverted residuals and ResNet's basic blocks, with identity or ImageNet
preprocessing.
"""

import torch
from torch.nn import functional as F

from pyinvert.attribution.core import _identity
from pyinvert.attribution.fold import PAD, Inverted, Local, Residual, Ref, convert
from pyinvert.models import VGG16, AlexNet, MobileNetV2, ResNet18, normalize


class _State:
    """ref: the clean activation (a :class:`Ref`); patch: (N, C, h, w) at rows ys, cols xs."""

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


def _gather(ref, r0, c0, hc, wc, fill=0.0):
    """(N, C, hc, wc) crops (channels-last) of the clean activation starting at rows r0 and
    cols c0 (N,), >= -PAD; rows and columns outside the activation hold ``fill``."""
    src = ref.padded(fill)
    dev = src.device
    rows = (r0 + PAD).to(dev)[:, None] + torch.arange(hc, device=dev)
    cols = (c0 + PAD).to(dev)[:, None] + torch.arange(wc, device=dev)
    return src[rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _crop(st, r0, c0, hc, wc, fill=0.0):
    """The copies' crops: the clean activation with each copy's patch written over it."""
    return _put(_gather(st.ref, r0, c0, hc, wc, fill), st.patch, st.ys - r0, st.xs - c0)


def _inside(r0, n, full):
    """(N, n) bool: rows r0 + i inside [0, full)."""
    rows = r0[:, None] + torch.arange(n)
    return (rows >= 0) & (rows < full)


def _out_range(start, size, full_out, k, s, p):
    """Start (N,) and size of the output rows a changed input band [start, start + size)
    reaches, as a band of fixed size moved inside [0, full_out)."""
    out = min(full_out, (size + k - 2) // s + 1)
    lo = -torch.div(-(start + p - k + 1), s, rounding_mode="floor")
    return lo.clamp(0, full_out - out), out


def _local_patch(step, st, ref_out):
    (kh, kw), (sh, sw), (ph, pw) = step.k, step.s, step.p
    H, W = ref_out.t.shape[-2:]
    h_in, w_in = st.patch.shape[-2:]
    oy, h = _out_range(st.ys, h_in, H, kh, sh, ph)
    ox, w = _out_range(st.xs, w_in, W, kw, sw, pw)
    if (kh, kw, sh, sw) == (1, 1, 1, 1):  # a pointwise layer: the patch is its own crop
        return _State(ref_out, step.apply(st.patch, padding=0), st.ys, st.xs)
    crop = _crop(st, oy * sh - ph, ox * sw - pw, (h - 1) * sh + kh, (w - 1) * sw + kw, step.fill)
    return _State(ref_out, step.apply(crop, padding=0), oy, ox)


def _inverted_patch(step, st, ref_out):
    """One inverted residual on the patches: the block input is cropped with the depthwise
    convolution's halo, the expansion runs on the whole crop (positions outside the map are
    then zeroed: the depthwise convolution pads its input, the expanded map, with zeros)."""
    s = step.stride
    Hi, Wi = st.ref.t.shape[-2:]
    H, W = ref_out.t.shape[-2:]
    oy, h = _out_range(st.ys, st.patch.shape[-2], H, 3, s, 1)
    ox, w = _out_range(st.xs, st.patch.shape[-1], W, 3, s, 1)
    r0, c0, hc, wc = oy * s - 1, ox * s - 1, (h - 1) * s + 3, (w - 1) * s + 3
    crop = _crop(st, r0, c0, hc, wc)
    y = crop
    if step.expand is not None:
        y = step.expand.apply(y, padding=0)
        vr, vc = _inside(r0, hc, Hi), _inside(c0, wc, Wi)
        if not (bool(vr.all()) and bool(vc.all())):
            y = y.mul_((vr[:, None, :, None] & vc[:, None, None, :]).to(y))
    y = step.project.apply(step.depthwise.apply(y, padding=0), padding=0)
    if step.residual:
        y = y.add_(crop[:, :, 1:-1, 1:-1])
    return _State(ref_out, y, oy, ox)


def _union(a, b, H, W):
    """Both states re-cropped to one band holding both changed regions."""

    def band(s0, n0, s1, n1, full):
        lo, hi = torch.minimum(s0, s1), torch.maximum(s0 + n0, s1 + n1)
        n = min(full, int((hi - lo).max()))
        return lo.clamp(max=full - n), n

    ys, h = band(a.ys, a.patch.shape[-2], b.ys, b.patch.shape[-2], H)
    xs, w = band(a.xs, a.patch.shape[-1], b.xs, b.patch.shape[-1], W)
    return _crop(a, ys, xs, h, w), _crop(b, ys, xs, h, w), ys, xs


def _run_full(steps, x, refs=None, keep=True, chunk=None):
    """The steps on a full batch (N, C, H, W); ``refs`` (a list): each step's output is
    appended as a :class:`Ref` (N = 1, the clean image); ``keep``, ``chunk``: as
    :meth:`Inverted.full`."""
    for step in steps:
        if isinstance(step, Residual):
            out = _run_full(step.branch, x, refs, keep, chunk)
            if step.add:
                sc = x if step.shortcut is None else _run_full(step.shortcut, x, refs, keep, chunk)
                out = out + sc
            x = _run_full(step.post, out, refs, keep, chunk)
        else:
            x = step.full(x, keep, chunk)
        if refs is not None:
            r = Ref(x[0])
            refs.append(r)
            x = r.t[None]
    return x


def _run_patch(steps, st, refs):
    for step in steps:
        if isinstance(step, Residual):
            b = _run_patch(step.branch, st, refs)
            if step.add:
                s = st if step.shortcut is None else _run_patch(step.shortcut, st, refs)
                H, W = b.ref.t.shape[-2:]
                pa, pb, ys, xs = _union(b, s, H, W)
                b = _State(None, pa.add_(pb), ys, xs)
            st = _run_patch(step.post, b, refs)
            st.ref = next(refs)
        elif isinstance(step, Inverted):
            st = _inverted_patch(step, st, next(refs))
        elif isinstance(step, Local):
            st = _local_patch(step, st, next(refs))
        else:
            st = _State(next(refs), step.m(st.patch), st.ys, st.xs)
    return st


def _paste(st):
    """The copies' full activations: the clean one with each copy's patch pasted in."""
    ref = st.ref.t
    full = torch.empty(
        (st.patch.shape[0], *ref.shape), dtype=ref.dtype, device=ref.device
    ).contiguous(memory_format=torch.channels_last)
    full.copy_(ref.expand(full.shape))
    return _put(full, st.patch, st.ys, st.xs)


class IncrementalOcclusion:
    """Occlusion logits of one image's occluded copies with incremental early layers.

    Use :meth:`for_model` (None when the model is not supported), then ``run =
    engine.prepare(image, baseline)`` and ``run(boxes)`` -> (N, K) logits. ``chunk``: copies
    whose expanded maps the tail makes at once (bounds its memory: at batch 8, 4 instead of 8
    saved 2.5 MiB, 2 about 1 more; the time differences were within the run-to-run noise of a
    shared machine). ``patches``: ``run`` takes any number of boxes; the incremental stages
    handle them ``patches`` at a time (small batches stay in cache), the tail all at once.
    """

    def __init__(self, stages, head, pre, max_fraction=0.3, chunk=2, patches=8):
        self.stages, self.head, self.pre = stages, head, pre
        self.max_fraction, self.chunk, self.patches = max_fraction, chunk, patches

    @classmethod
    def for_model(cls, model, pre, max_fraction=0.3, chunk=2, patches=8):
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
        stages = [(m, convert(m)) for m in mods]
        return cls(stages, head, pre, max_fraction, chunk, patches)

    def _tail(self, z, i):
        for module, steps in self.stages[i:]:
            z = module(z) if steps is None else _run_full(steps, z, keep=False, chunk=self.chunk)
        return self.head(z)

    def prepare(self, image, baseline, window):
        """For ``image`` (C, H, W) returns ``run(boxes)`` (boxes no larger than ``window``
        (h, w)). The clean activations of a stage are computed and cached the first time a
        batch reaches it incrementally, so only the stages before the switch are kept."""
        pre_ref = Ref(self.pre(image[None])[0])
        inputs = [pre_ref.t[None]]  # the clean input of each stage reached
        refs = []  # the cached outputs of each stage's steps
        img, base = Ref(image), Ref(baseline.expand_as(image))
        H, W = image.shape[-2:]

        def early(boxes):
            wh, ww = window
            b = torch.tensor(boxes, dtype=torch.long).reshape(-1, 4)
            ys, xs = b[:, 0].clamp(max=H - wh), b[:, 2].clamp(max=W - ww)
            rows, cols = ys[:, None] + torch.arange(wh), xs[:, None] + torch.arange(ww)
            in_r = (rows >= b[:, :1]) & (rows < b[:, 1:2])
            in_c = (cols >= b[:, 2:3]) & (cols < b[:, 3:])
            inside = (in_r[:, None, :, None] & in_c[:, None, None, :]).to(image.device)
            occluded = torch.where(
                inside, _gather(base, ys, xs, wh, ww), _gather(img, ys, xs, wh, ww)
            )
            st = _State(pre_ref, self.pre(occluded), ys, xs)
            i = 0
            for i, (_module, steps) in enumerate(self.stages):
                H_i, W_i = st.ref.t.shape[-2:]
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
            return _paste(st), i

        def run(boxes):
            parts = [
                early(boxes[lo : lo + self.patches]) for lo in range(0, len(boxes), self.patches)
            ]
            if len(parts) == 1:
                return self._tail(*parts[0])
            return self._tail(torch.cat([z for z, _ in parts]), parts[0][1])

        return run


__all__ = ["IncrementalOcclusion"]
