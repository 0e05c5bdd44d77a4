"""Gradient-type methods: saliency, deconvnet, guided backprop, Grad-CAM, guided Grad-CAM,
integrated gradients and SmoothGrad.

Every function takes ``(model, pre, x, targets, *, output, layer, ...)`` with ``x`` a
(B, 3, H, W) batch in [0, 1] and ``pre`` the model's preprocessing, and returns a dict with
``maps`` (B, T, H, W), ``gradients`` (B, T, C, H, W) or None, ``targets`` and ``scores``
(B, T), and ``info`` (method-specific diagnostics).
"""

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from pyinvert.attribution.core import gradient_pass, resolve_targets, scores_of

#: Default layer of Grad-CAM for the zoo models: the output of the last convolutional block
#: (after its rectifier), as in Selvaraju et al. (the last convolutional feature maps).
DEFAULT_LAYERS = {
    "AlexNet": "features.11",
    "VGG16": "features.29",
    "ResNet18": "layer4",
    "MobileNetV2": "features.18",
}


def channel_max_abs(g: Tensor) -> Tensor:
    """Simonyan et al. 2014, section 3.1: the map is max over colour channels of |gradient|."""
    return g.abs().amax(2)


def _rule_method(rule):
    def method(model, pre, x, targets, *, output="logit", layer=None):
        r = gradient_pass(model, pre, x, targets, rule=rule, output=output, fn="attribute")
        g = r["input_grad"]
        return {
            "maps": channel_max_abs(g),
            "gradients": g,
            "targets": r["targets"],
            "scores": r["scores"],
            "info": {},
        }

    return method


#: Simonyan, Vedaldi, Zisserman. Deep inside convolutional networks. ICLR 2014 workshop,
#: eq. 3 and section 3.1 (map = max_c |d S_c / d x|).
saliency = _rule_method("gradient")
#: Zeiler & Fergus, ECCV 2014, as the backward rule max(g, 0) at every rectifier
#: (Mahendran & Vedaldi, ECCV 2016, eq. 5). Map: max_c |signal| (as saliency).
deconvnet = _rule_method("deconvnet")
#: Springenberg et al., Striving for simplicity, ICLR 2015 workshop, eq. in fig. 1:
#: g * 1[unit active] * 1[g > 0]. Map: max_c |signal| (as saliency).
guided_backprop = _rule_method("guided")


def resolve_layer(model, layer, fn="attribute"):
    """The module named ``layer`` (or ``layer`` itself); None: the zoo default."""
    if layer is None:
        name = DEFAULT_LAYERS.get(type(model).__name__)
        if name is None:
            raise ValueError(
                f"{fn}: gradcam needs layer= for a {type(model).__name__} "
                f"(defaults exist for {sorted(DEFAULT_LAYERS)})"
            )
        layer = name
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            near = [n for n in modules if n and n.split(".")[0] == layer.split(".")[0]][:8]
            raise ValueError(f"{fn}: the model has no layer {layer!r} (e.g. {near})")
        return modules[layer]
    if isinstance(layer, torch.nn.Module):
        return layer
    raise TypeError(
        f"{fn}: expected layer to be a module name or an nn.Module, got {type(layer).__name__}"
    )


def _cam(r, relu):
    alpha = r["layer_grad"].mean((-2, -1), keepdim=True)  # eq. 1: GAP of dS/dA
    cam = (alpha * r["activation"][:, None]).sum(2)  # eq. 2: sum_k a_k A^k
    return cam.clamp(min=0) if relu else cam


def gradcam(model, pre, x, targets, *, output="logit", layer=None, relu=True):
    """Selvaraju et al., Grad-CAM, ICCV 2017, eqs. 1-2: ReLU(sum_k alpha_k A^k), alpha_k the
    spatial mean of dS/dA^k; upsampled bilinearly (align_corners=False) to the input size.
    ``info["layer_maps"]`` keeps the (B, T, h, w) maps at the layer's resolution."""
    module = resolve_layer(model, layer)
    r = gradient_pass(
        model, pre, x, targets, layer=module, output=output, fn="attribute", input_grad=False
    )
    cam = _cam(r, relu)
    up = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return {
        "maps": up,
        "gradients": None,
        "targets": r["targets"],
        "scores": r["scores"],
        "info": {"layer_maps": cam},
    }


def guided_gradcam(model, pre, x, targets, *, output="logit", layer=None, relu=True):
    """Selvaraju et al. 2017, section 3.1: guided backprop times the upsampled Grad-CAM map,
    per pixel and channel. Map: max_c |product|."""
    cam = gradcam(model, pre, x, targets, output=output, layer=layer, relu=relu)
    g = guided_backprop(model, pre, x, cam["targets"], output=output)["gradients"]
    prod = g * cam["maps"][:, :, None]
    return {
        "maps": channel_max_abs(prod),
        "gradients": prod,
        "targets": cam["targets"],
        "scores": cam["scores"],
        "info": {"layer_maps": cam["info"]["layer_maps"]},
    }


def _nodes(steps, method):
    """Points alpha in (0, 1] and weights of the path integral (captum's names)."""
    if method == "gausslegendre":
        a, w = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * a + 0.5), list(0.5 * w)
    if method == "riemann_left":
        return [i / steps for i in range(steps)], [1.0 / steps] * steps
    if method == "riemann_right":
        return [(i + 1) / steps for i in range(steps)], [1.0 / steps] * steps
    if method == "riemann_middle":
        return [(i + 0.5) / steps for i in range(steps)], [1.0 / steps] * steps
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError(f"attribute: riemann_trapezoid needs steps >= 2, got {steps}")
        w = [1.0 / (steps - 1)] * steps
        w[0] = w[-1] = 0.5 / (steps - 1)
        return [i / (steps - 1) for i in range(steps)], w
    raise ValueError(
        f"attribute: expected ig_method in ('gausslegendre', 'riemann_left', "
        f"'riemann_right', 'riemann_middle', 'riemann_trapezoid'), got {method!r}"
    )


def baseline_of(x, baseline, fn="attribute"):
    """ "black" (0), "white" (1), a number, or a tensor broadcastable to the images."""
    if isinstance(baseline, str):
        if baseline not in ("black", "white"):
            raise ValueError(
                f'{fn}: expected baseline "black", "white", a number or a tensor, got {baseline!r}'
            )
        return torch.full_like(x, 0.0 if baseline == "black" else 1.0)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(x).expand_as(x)
        except RuntimeError:
            raise ValueError(
                f"{fn}: expected a baseline broadcastable to {list(x.shape)}, "
                f"got {list(baseline.shape)}"
            ) from None
    raise TypeError(
        f'{fn}: expected baseline "black", "white", a number or a tensor, '
        f"got {type(baseline).__name__}"
    )


def integrated_gradients(
    model,
    pre,
    x,
    targets,
    *,
    output="logit",
    layer=None,
    steps=50,
    baseline="black",
    ig_method="gausslegendre",
    batch_size=32,
):
    """Sundararajan, Taly, Yan. Axiomatic attribution for deep networks. ICML 2017, eq. 3:
    (x - x') * integral_0^1 dS(x' + a (x - x'))/dx da, by ``ig_method`` quadrature with
    ``steps`` nodes (captum's default, Gauss-Legendre, instead of the paper's Riemann sum), the
    path points in chunks of ``batch_size`` images. Map: the sum over channels (signed, so the
    map sums to S(x) - S(x')). ``info["completeness_residual"]`` (B, T): sum of attributions
    minus (S(x) - S(x')), the paper's check (prop. 1) on the quadrature's accuracy."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"attribute: expected steps to be an int >= 1, got {steps!r}")
    base = baseline_of(x, baseline)
    alphas, weights = _nodes(steps, ig_method)
    B = x.shape[0]
    with torch.no_grad():
        ends = scores_of(model(pre(torch.cat([x, base]))), output, "attribute")
    t = resolve_targets(targets, B, ends[:B], "attribute")
    T = t.shape[1]
    total = torch.zeros(B, T, *x.shape[1:], dtype=x.dtype, device=x.device)
    points = [(b, s) for b in range(B) for s in range(steps)]
    for lo in range(0, len(points), max(1, batch_size)):
        chunk = points[lo : lo + max(1, batch_size)]
        bi = torch.tensor([b for b, _ in chunk], device=x.device)
        a = torch.tensor([alphas[s] for _, s in chunk], dtype=x.dtype, device=x.device)
        w = torch.tensor([weights[s] for _, s in chunk], dtype=x.dtype, device=x.device)
        xs = base[bi] + a.view(-1, 1, 1, 1) * (x[bi] - base[bi])
        g = gradient_pass(model, pre, xs, t[bi], output=output)["input_grad"]
        total.index_add_(0, bi, g * w.view(-1, 1, 1, 1, 1))
    attr = (x - base)[:, None] * total
    delta = ends[:B].gather(1, t) - ends[B:].gather(1, t)
    residual = attr.flatten(2).sum(2) - delta
    return {
        "maps": attr.sum(2),
        "gradients": attr,
        "targets": t,
        "scores": ends[:B].gather(1, t),
        "info": {"completeness_residual": residual, "score_difference": delta},
    }


def smoothgrad(
    model,
    pre,
    x,
    targets,
    *,
    output="logit",
    layer=None,
    base="saliency",
    samples=50,
    noise=0.15,
    batch_size=32,
    generator: Optional[torch.Generator] = None,
    **base_options,
):
    """Smilkov et al. SmoothGrad: removing noise by adding noise. 2017, eq. 2: the mean of the
    ``base`` method's maps (and raw signals) over ``samples`` copies of the image with
    Gaussian noise of standard deviation ``noise * (x.max() - x.min())`` per image (section
    3.1's noise level), drawn from ``generator``, in chunks of ``batch_size`` images."""
    # import here: pyinvert.attribution.api imports pyinvert.attribution.gradient (cycle)
    from pyinvert.attribution.api import GRADIENT_METHODS

    if base not in GRADIENT_METHODS or base == "smoothgrad":
        raise ValueError(
            f"attribute: expected smoothgrad's base in "
            f"{[m for m in GRADIENT_METHODS if m != 'smoothgrad']}, got {base!r}"
        )
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"attribute: expected samples to be an int >= 1, got {samples!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(
            f"attribute: expected noise >= 0 (a fraction of the input range), got {noise!r}"
        )
    fn = GRADIENT_METHODS[base]
    B = x.shape[0]
    with torch.no_grad():
        logits = model(pre(x))
    t = resolve_targets(targets, B, logits, "attribute")
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    maps = grads = None
    n_chunk = max(1, batch_size // max(1, B))
    for lo in range(0, samples, n_chunk):
        n = min(n_chunk, samples - lo)
        eps = torch.randn(
            (n,) + tuple(x.shape), generator=generator, dtype=x.dtype, device="cpu"
        ).to(x.device)
        xs = (x[None] + sigma.view(1, B, 1, 1, 1) * eps).flatten(0, 1)
        r = fn(model, pre, xs, t.repeat(n, 1), output=output, layer=layer, **base_options)
        m = r["maps"].unflatten(0, (n, B)).sum(0)
        maps = m if maps is None else maps + m
        if r["gradients"] is not None:
            g = r["gradients"].unflatten(0, (n, B)).sum(0)
            grads = g if grads is None else grads + g
    return {
        "maps": maps / samples,
        "gradients": None if grads is None else grads / samples,
        "targets": t,
        "scores": scores_of(logits, output, "attribute").gather(1, t),
        "info": {"sigma": sigma, "base": base, "samples": samples},
    }
