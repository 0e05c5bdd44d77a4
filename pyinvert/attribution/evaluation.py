"""Evaluating attribution maps: the model-parameter randomization test, deletion / insertion
curves and the pointing game."""

import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyinvert.attribution.api import attribute
from pyinvert.attribution.core import as_batch, resolve_preprocess, resolve_targets
from pyinvert.attribution.figures import line_plot


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of the last two dims, flattened (ties ranked by order)."""

    def ranks(t):
        t = t.flatten(-2)
        return t.argsort(-1).argsort(-1).double()

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1)).clamp_min(1e-12)


def ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """SSIM (Wang et al. 2004, eq. 13, uniform ``window``, C1 = 0.01^2, C2 = 0.03^2) of
    maps each scaled to [0, 1] by its own min and max, averaged over the image."""

    def unit(t):
        t = t.double()
        lo = t.flatten(-2).amin(-1)[..., None, None]
        hi = t.flatten(-2).amax(-1)[..., None, None]
        return (t - lo) / (hi - lo).clamp_min(1e-12)

    a, b = unit(a), unit(b)
    shape = a.shape
    a, b = a.reshape(-1, 1, *shape[-2:]), b.reshape(-1, 1, *shape[-2:])

    def mu(t):
        return F.avg_pool2d(t, window, 1)

    ma, mb = mu(a), mu(b)
    va, vb, cov = mu(a * a) - ma**2, mu(b * b) - mb**2, mu(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1).reshape(shape[:-2])


def cascade_layers(model: nn.Module) -> List[str]:
    """The blocks randomized in turn, top (logits) first: the classifier's and the
    ``features`` children with parameters (AlexNet, VGG, MobileNetV2), or ResNet's ``fc``,
    blocks and stem; else every leaf module with parameters, last first."""
    names = []
    for parent in ("classifier", "features"):
        seq = getattr(model, parent, None)
        if isinstance(seq, nn.Sequential):
            names += [
                f"{parent}.{n}"
                for n, m in reversed(list(seq.named_children()))
                if any(True for _ in m.parameters())
            ]
    if names:
        return names
    if hasattr(model, "layer4") and hasattr(model, "fc"):
        names = ["fc"]
        for stage in ("layer4", "layer3", "layer2", "layer1"):
            names += [
                f"{stage}.{n}" for n, _ in reversed(list(getattr(model, stage).named_children()))
            ]
        return names + ["bn1", "conv1"]
    return [
        n
        for n, m in reversed(list(model.named_modules()))
        if n and not any(True for _ in m.children()) and any(True for _ in m.parameters())
    ]


def _reinit(module, generator):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                )
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()


def randomization_test(
    images,
    model,
    methods=("saliency",),
    targets=None,
    *,
    layers: Optional[Sequence[str]] = None,
    seed: int = 0,
    size: Optional[int] = None,
    preprocess="auto",
    **options,
) -> dict:
    """The cascading model-parameter randomization test (Adebayo et al., Sanity checks for
    saliency maps, NeurIPS 2018, section 3.1): re-initialize the blocks from the top one down,
    cumulatively, and after each stage compare every method's maps with the trained model's
    by Spearman rank correlation (of |map| and of the signed map) and SSIM.

    Re-initialization: Conv2d and Linear weights ~ N(0, 2 / fan_in) (He), biases 0, from a
    ``seed``-ed generator; BatchNorm reset (weight 1, bias 0, running mean 0, var 1). The
    targets stay those of the trained model.

    Args:
        images, targets, size, preprocess, **options: as in :func:`attribute`.
        model: the trained network (not modified: a copy is randomized).
        methods: the methods compared. Default: ('saliency',).
        layers: module names randomized in turn, top first. Default: None
            (``cascade_layers(model)``).
        seed: seed of the re-initialization. Default: 0.

    Returns:
        dict with ``stages`` (["trained", layer names...]), and per method
        ``spearman_abs``, ``spearman``, ``ssim``: (stages, B, T) tensors.
    """
    x = as_batch(images, size, "randomization_test")
    pre = resolve_preprocess(model, preprocess, "randomization_test")
    if targets is None:
        with torch.no_grad():
            targets = resolve_targets(None, x.shape[0], model(pre(x)), "randomization_test")
    layers = list(layers) if layers is not None else cascade_layers(model)
    base = attribute(x, model, methods, targets, preprocess=pre, **options)
    net = copy.deepcopy(model)
    modules = dict(net.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"randomization_test: the model has no layers {missing}")
    g = torch.Generator().manual_seed(seed)
    out = {"stages": ["trained"] + layers, "targets": base.targets}
    rows = {m: {"spearman_abs": [], "spearman": [], "ssim": []} for m in base.maps}
    for stage in [None] + layers:
        if stage is not None:
            _reinit(modules[stage], g)
        r = (
            base
            if stage is None
            else attribute(x, net, methods, base.targets, preprocess=pre, **options)
        )
        for m in base.maps:
            a, b = base.maps[m], r.maps[m]
            rows[m]["spearman_abs"].append(spearman(a.abs(), b.abs()))
            rows[m]["spearman"].append(spearman(a, b))
            rows[m]["ssim"].append(ssim(a.abs(), b.abs()))
    for m, d in rows.items():
        out[m] = {k: torch.stack(v) for k, v in d.items()}
    return out


def randomization_figure(result: dict, metric: str = "spearman_abs") -> np.ndarray:
    """Line plot of the mean ``metric`` per stage, one line per method."""
    series = {
        m: v[metric].flatten(1).mean(1).tolist() for m, v in result.items() if isinstance(v, dict)
    }
    return line_plot(
        series, result["stages"], f"cascading randomization: {metric}", ylim=(-0.2, 1.0)
    )


def _blur(x, sigma):
    k = int(2 * round(3 * sigma) + 1)
    t = torch.arange(k, dtype=x.dtype) - k // 2
    w = torch.exp(-(t**2) / (2 * sigma**2))
    w = (w / w.sum()).to(x.device)
    C = x.shape[1]
    x = F.conv2d(
        F.pad(x, (k // 2,) * 4, mode="reflect"), w.view(1, 1, 1, k).expand(C, 1, 1, k), groups=C
    )
    return F.conv2d(x, w.view(1, 1, k, 1).expand(C, 1, k, 1), groups=C)


def deletion_insertion(
    images,
    model,
    maps: Tensor,
    targets,
    *,
    steps: int = 32,
    modes=("deletion", "insertion"),
    blur_sigma: float = 5.0,
    baseline: float = 0.0,
    batch_size: int = 32,
    preprocess="auto",
    size: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Deletion and insertion curves (Petsiuk, Das, Saenko. RISE. BMVC 2018, section 4.1):
    pixels in decreasing order of the map are removed (set to ``baseline``) or inserted (into
    a Gaussian blur of the image, sigma ``blur_sigma``: the paper's blurred insertion), in
    ``steps`` equal steps; the softmax probability of the target after each step gives the
    curve, and its area (trapezoid rule over the fraction in [0, 1]) the AUC. Low deletion AUC
    and high insertion AUC are better.

    Args:
        images, model, targets, preprocess, size: as in :func:`attribute`.
        maps: (B, T, H, W) the maps ranked.
        steps: steps of the curve. Default: 32.
        modes: "deletion" and/or "insertion". Default: ('deletion', 'insertion').
        blur_sigma: the insertion start's Gaussian blur, in pixels. Default: 5.0.
        baseline: the deleted pixels' value. Default: 0.0.
        batch_size: images per forward pass. Default: 32.

    Returns:
        ``{mode: (B, T, steps + 1) curve, mode + "_auc": (B, T)}``.
    """
    x = as_batch(images, size, "deletion_insertion")
    pre = resolve_preprocess(model, preprocess, "deletion_insertion")
    B, C, H, W = x.shape
    t = resolve_targets(targets, B, None, "deletion_insertion")
    if maps.shape != (B, t.shape[1], H, W):
        raise ValueError(
            f"deletion_insertion: expected maps of shape {[B, t.shape[1], H, W]}, "
            f"got {list(maps.shape)}"
        )
    bad = [m for m in modes if m not in ("deletion", "insertion")]
    if bad:
        raise ValueError(
            f"deletion_insertion: expected modes in ('deletion', 'insertion'), got {bad}"
        )
    n = H * W
    counts = [round(i * n / steps) for i in range(steps + 1)]
    out = {}
    blurred = _blur(x, blur_sigma) if "insertion" in modes else None
    for mode in modes:
        curve = torch.zeros(B, t.shape[1], steps + 1)
        for b in range(B):
            for k in range(t.shape[1]):
                order = maps[b, k].flatten().argsort(descending=True)
                rank = torch.empty(n, dtype=torch.long)
                rank[order] = torch.arange(n)
                rank = rank.view(1, 1, H, W)
                start = x[b : b + 1] if mode == "deletion" else blurred[b : b + 1]
                end = (
                    torch.full_like(x[b : b + 1], baseline) if mode == "deletion" else x[b : b + 1]
                )
                probs = []
                for lo in range(0, steps + 1, batch_size):
                    c = torch.tensor(counts[lo : lo + batch_size]).view(-1, 1, 1, 1)
                    mask = (rank < c).to(x.dtype)
                    xs = start * (1 - mask) + end * mask
                    with torch.inference_mode():
                        p = F.softmax(model(pre(xs)), 1)[:, t[b, k]]
                    probs.append(p.float().cpu())
                curve[b, k] = torch.cat(probs)
        out[mode] = curve
        frac = torch.tensor(counts, dtype=torch.float64) / n
        out[mode + "_auc"] = torch.trapezoid(curve.double(), frac, dim=-1).float()
    return out


def pointing_game(maps: Tensor, boxes, tolerance: int = 15) -> dict:
    """The pointing game (Zhang et al. Top-down neural attention by excitation backprop. ECCV
    2016, section 5.1): a hit when the map's maximum lies within ``tolerance`` pixels of a
    ground-truth box of the target.

    Args:
        maps: (B, T, H, W).
        boxes: per image, per target, one (x0, y0, x1, y1) box (pixels, inclusive-exclusive)
            or a list of boxes (any may be hit).
        tolerance: pixels. Default: 15 (the paper's).

    Returns:
        ``{"hits": (B, T) bool, "accuracy": float}``.
    """
    B, T, H, W = maps.shape
    if len(boxes) != B or any(len(bb) != T for bb in boxes):
        raise ValueError(
            f"pointing_game: expected boxes for {B} images x {T} targets, got "
            f"{[len(bb) for bb in boxes]}"
        )
    hits = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        for k in range(T):
            idx = int(maps[b, k].flatten().argmax())
            y, x = divmod(idx, W)
            items = boxes[b][k]
            items = (
                [items] if len(items) == 4 and not isinstance(items[0], (list, tuple)) else items
            )
            for x0, y0, x1, y1 in items:
                dx = max(x0 - x, 0, x - (x1 - 1))
                dy = max(y0 - y, 0, y - (y1 - 1))
                if dx * dx + dy * dy <= tolerance * tolerance:
                    hits[b, k] = True
    return {"hits": hits, "accuracy": hits.float().mean().item()}
