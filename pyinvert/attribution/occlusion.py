"""Occlusion (Zeiler & Fergus, ECCV 2014, section 4.2): the drop of a target's score when a
window of the image is replaced by a baseline, slid over the image with a stride.

Convention (captum's ``Occlusion``): window starts at 0, s, 2s, ... up to ceil((H - w) / s)
steps, the last window cut at the border; each pixel's value is the mean score drop over the
windows that cover it. The window covers every channel. Memory is bounded: occluded copies
are evaluated ``batch_size`` at a time under ``torch.inference_mode``. For the zoo networks the
early layers are recomputed only where a window changes them (:mod:`.incremental`, Nakandala
et al., SIGMOD 2019) on an inference form of the network (BatchNorm folded, oneDNN kernels);
the result is the same up to float32 rounding, and the clean score the drops are taken from
goes through the same form (an empty window in the first batch), so no window means no drop.
"""

import math

import torch

from pyinvert.attribution.core import resolve_targets, scores_of
from pyinvert.attribution.gradient import baseline_of
from pyinvert.attribution.incremental import IncrementalOcclusion


def _pair(v, name):
    if isinstance(v, bool):
        raise TypeError(f"attribute: expected {name} to be an int or a pair of ints, got bool")
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(u, int) for u in v):
        return int(v[0]), int(v[1])
    raise TypeError(f"attribute: expected {name} to be an int or a pair of ints, got {v!r}")


def windows(H: int, W: int, window, stride):
    """The (y0, y1, x0, x1) of every occlusion window, row-major (captum's order)."""
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if min(wh, ww, sh, sw) < 1:
        raise ValueError(
            f"attribute: expected window and stride >= 1, got window {(wh, ww)}, stride {(sh, sw)}"
        )
    if wh > H or ww > W:
        raise ValueError(
            f"attribute: expected an occlusion window no larger than the image "
            f"{(H, W)}, got {(wh, ww)}"
        )
    ny = math.ceil((H - wh) / sh) + 1
    nx = math.ceil((W - ww) / sw) + 1
    return [
        (i * sh, min(i * sh + wh, H), j * sw, min(j * sw + ww, W))
        for i in range(ny)
        for j in range(nx)
    ]


def occlusion(
    model,
    pre,
    x,
    targets,
    *,
    output="logit",
    layer=None,
    window=16,
    stride=8,
    baseline="black",
    batch_size=8,
    incremental="auto",
):
    """Occlusion maps (B, T, H, W): mean over covering windows of S(x) - S(x occluded).

    Args:
        window, stride: ints or (h, w) pairs, in pixels. Defaults: 16, 8.
        baseline: what fills a window: "black", "white", a number or a tensor broadcastable
            to the images. Default: "black".
        batch_size: occluded copies evaluated at once (bounds the memory; on a CPU small
            batches are fastest, as they stay in cache: MobileNetV2 at 224, 8 beats 4 and
            16). Default: 8.
        incremental: "auto" (incremental inference when the model is supported), True
            (required) or False (re-run the whole network on each copy).
    """
    if incremental not in ("auto", True, False):
        raise ValueError(
            f"attribute: expected incremental in ('auto', True, False), got {incremental!r}"
        )
    B, C, H, W = x.shape
    boxes = windows(H, W, window, stride)
    base = baseline_of(x, baseline)
    engine = None
    if incremental is not False:
        engine = IncrementalOcclusion.for_model(model, pre)
        if engine is None and incremental is True:
            raise ValueError(
                f"attribute: incremental occlusion supports the zoo networks "
                f"with their ImageNet preprocessing, not a "
                f"{type(model).__name__}; pass incremental=False"
            )
    n_chunk = max(1, int(batch_size))
    with torch.inference_mode():
        clean = scores_of(model(pre(x)), output, "attribute")
        t = resolve_targets(targets, B, clean, "attribute")
        T = t.shape[1]
        total = torch.zeros(B, T, H, W, dtype=torch.float64, device=x.device)
        count = torch.zeros(H, W, dtype=torch.float64, device=x.device)
        for y0, y1, x0, x1 in boxes:
            count[y0:y1, x0:x1] += 1
        for b in range(B):
            s0, items, run = clean[b, t[b]], boxes, None
            if engine is not None:
                # the empty box first: the clean image through the engine's network form,
                # so the drops are within one form (no window, no drop)
                s0, items = None, [(0, 0, 0, 0), *boxes]
                run = engine.prepare(x[b], base[b], _pair(window, "window"))
            for lo in range(0, len(items), n_chunk):
                chunk = items[lo : lo + n_chunk]
                if run is not None:
                    logits = run(chunk)
                else:
                    xs = x[b].expand(len(chunk), C, H, W).clone()
                    for i, (y0, y1, x0, x1) in enumerate(chunk):
                        xs[i, :, y0:y1, x0:x1] = base[b, :, y0:y1, x0:x1]
                    logits = model(pre(xs))
                score = scores_of(logits, output, "attribute")[:, t[b]]
                if s0 is None:
                    s0, score, chunk = score[0], score[1:], chunk[1:]
                drop = (s0[None] - score).double()
                for i, (y0, y1, x0, x1) in enumerate(chunk):
                    total[b, :, y0:y1, x0:x1] += drop[i][:, None, None]
        maps = (total / count).to(x.dtype)
    return {
        "maps": maps,
        "gradients": None,
        "targets": t,
        "scores": clean.gather(1, t),
        "info": {"windows": len(boxes), "incremental": engine is not None},
    }
