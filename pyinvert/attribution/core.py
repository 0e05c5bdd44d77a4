"""What every attribution method shares: images in, preprocessing, targets, scores, and one
forward pass with a vector-Jacobian product per target.

Attributions are taken with respect to the [0, 1] pixels: the model's preprocessing (ImageNet
normalization for the zoo models) runs inside the differentiated function. The network must
treat the images of a batch independently (eval mode; no batch statistics), which is what lets
one backward pass give every image's gradient at once.
"""

import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyinvert.attribution.rules import backward_rule
from pyinvert.io import array_to_tensor, load_image
from pyinvert.models import VGG16, AlexNet, MobileNetV2, ResNet18, normalize, prepare_image

OUTPUTS = ("logit", "probability")

#: Use the batched backward on the CPU too (tests check both paths agree).
BATCHED_BACKWARD_ON_CPU = False


def zoo_classes():
    return (AlexNet, VGG16, ResNet18, MobileNetV2)


def resolve_preprocess(model: nn.Module, preprocess, fn: str) -> Callable[[Tensor], Tensor]:
    """``"auto"``: ImageNet normalization for the zoo models, identity otherwise; None:
    identity; a callable: itself."""
    if isinstance(preprocess, str):
        if preprocess != "auto":
            raise ValueError(
                f'{fn}: expected preprocess to be "auto", None or a callable, got {preprocess!r}'
            )
        return normalize if isinstance(model, zoo_classes()) else _identity
    if preprocess is None:
        return _identity
    if not callable(preprocess):
        raise TypeError(
            f'{fn}: expected preprocess to be "auto", None or a callable, '
            f"got {type(preprocess).__name__}"
        )
    return preprocess


def _identity(x):
    return x


def _one_image(image, size, fn) -> Tensor:
    if isinstance(image, (str, os.PathLike)):
        t = load_image(image)
    elif isinstance(image, np.ndarray):
        t = array_to_tensor(image, name="image")
    elif isinstance(image, Tensor):
        t = image[None] if image.dim() == 2 else image
        if t.dim() != 3:
            raise ValueError(
                f"{fn}: expected each image of shape (C, H, W) or (H, W), got {list(image.shape)}"
            )
    else:
        raise TypeError(
            f"{fn}: expected images as paths, numpy arrays or tensors, got {type(image).__name__}"
        )
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.shape[0] != 3:
        raise ValueError(f"{fn}: expected 1 or 3 channels, got an image of shape {list(t.shape)}")
    t = t.float() if not t.is_floating_point() else t
    return prepare_image(t, size) if size is not None else t


def as_batch(images, size: Optional[int] = None, fn: str = "attribute") -> Tensor:
    """Images (a path, array or tensor, a list of them, or a (B, 3, H, W) tensor) in [0, 1]
    as one float (B, 3, H, W) tensor; ``size`` applies ``prepare_image`` (resize + crop)."""
    if isinstance(images, Tensor) and images.dim() == 4:
        if images.shape[1] != 3:
            raise ValueError(
                f"{fn}: expected images of shape (B, 3, H, W), got {list(images.shape)}"
            )
        x = images if images.is_floating_point() else images.float()
        return torch.stack([_one_image(im, size, fn) for im in x]) if size else x
    if isinstance(images, (list, tuple)):
        items = [_one_image(im, size, fn) for im in images]
        if not items:
            raise ValueError(f"{fn}: expected at least one image, got an empty list")
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise ValueError(
                f"{fn}: expected images of one size (pass size= to resize and "
                f"crop them), got sizes {sorted(shapes)}"
            )
        return torch.stack(items)
    return _one_image(images, size, fn)[None]


def resolve_targets(targets, batch: int, logits: Optional[Tensor], fn: str) -> Tensor:
    """Targets as a (B, T) int64 tensor: None -> each image's top-1 (needs ``logits``); an int
    -> that class for every image; one int per image; one list per image (equal lengths)."""
    device = logits.device if logits is not None else None
    if targets is None:
        if logits is None:
            raise ValueError(f"{fn}: targets=None needs the logits")
        return logits.argmax(1, keepdim=True)
    if isinstance(targets, Tensor):
        t = targets.to(device=device, dtype=torch.long)
        t = t.expand(batch) if t.dim() == 0 else t
        t = t[:, None] if t.dim() == 1 else t
    elif isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        t = torch.full((batch, 1), int(targets), dtype=torch.long, device=device)
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        rows = [list(r) if isinstance(r, (Sequence, Tensor, np.ndarray)) else [r] for r in targets]
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise ValueError(
                f"{fn}: expected the same number of targets for every image, "
                f"got lengths {[len(r) for r in rows]}"
            )
        t = torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), -1)
    else:
        raise TypeError(
            f"{fn}: expected targets to be None, an int, or one int or list per "
            f"image, got {type(targets).__name__}"
        )
    if t.dim() != 2 or t.shape[0] != batch:
        raise ValueError(
            f"{fn}: expected targets for {batch} image(s) (shape [{batch}] or "
            f"[{batch}, T]), got shape {list(t.shape)}"
        )
    if logits is not None and t.numel() and (t.min() < 0 or t.max() >= logits.shape[1]):
        raise ValueError(
            f"{fn}: expected targets in [0, {logits.shape[1]}), got values in "
            f"[{int(t.min())}, {int(t.max())}]"
        )
    return t


def scores_of(logits: Tensor, output: str, fn: str) -> Tensor:
    """The scores attributed: the logits, or the softmax probabilities."""
    if output == "logit":
        return logits
    if output == "probability":
        return F.softmax(logits, dim=1)
    raise ValueError(f"{fn}: expected output in {OUTPUTS}, got {output!r}")


def check_logits(logits, fn):
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{fn}: expected the model to return logits of shape (B, K), got {shape}")


def vjp_per_target(scores: Tensor, inputs: Sequence[Tensor]):
    """d scores[:, t] / d inputs for every target t of a (B, T) score tensor, from one forward
    graph. On a GPU one batched backward (``is_grads_batched``: the graph is traversed once
    with T cotangent rows); on the CPU, where the batched rules cost more than they save
    (bench/bench_attribution.py, MobileNetV2 at 224, one thread, 10 targets: saliency 0.87
    against 0.56 of ten single calls, integrated gradients 0.79 against 0.51), one backward
    per target on the retained graph. Returns, per input, a (B, T, ...) tensor."""
    B, T = scores.shape
    if T == 1:
        return [g[:, None] for g in torch.autograd.grad(scores.sum(), inputs)]
    if scores.is_cuda or BATCHED_BACKWARD_ON_CPU:
        eye = torch.eye(T, dtype=scores.dtype, device=scores.device)
        cot = eye[:, None, :].expand(T, B, T).contiguous()
        try:
            grads = torch.autograd.grad(
                scores, inputs, grad_outputs=cot, is_grads_batched=True, retain_graph=True
            )
            return [g.transpose(0, 1) for g in grads]
        except RuntimeError:  # an op without a batching rule: fall through to the loop
            pass
    per_t = [
        torch.autograd.grad(scores[:, t].sum(), inputs, retain_graph=t < T - 1) for t in range(T)
    ]
    return [torch.stack([p[i] for p in per_t], 1) for i in range(len(inputs))]


def gradient_pass(
    model: nn.Module,
    pre,
    x: Tensor,
    targets,
    rule: str = "gradient",
    layer: Optional[nn.Module] = None,
    output: str = "logit",
    fn: str = "attribute",
    input_grad: bool = True,
):
    """One forward of ``x`` (B, C, H, W) in [0, 1] with ``rule`` on the ReLU-family units, and
    the gradient of each target's score w.r.t. the pixels (and ``layer``'s output).

    With ``input_grad=False`` (a layer is then needed) only the layer's gradient is taken: the
    forward records no graph below the layer, and each target's backward pass runs only
    through the part of the network above it (Grad-CAM: the head).

    Returns:
        dict with ``targets`` (B, T), ``scores`` (B, T), ``logits`` (B, K), ``input_grad``
        (B, T, C, H, W), and with a layer ``activation`` (B, K', h, w) and ``layer_grad``
        (B, T, K', h, w).
    """
    if not input_grad and layer is None:
        raise ValueError(f"{fn}: input_grad=False needs a layer")
    x = x.detach().clone().requires_grad_(input_grad)
    store = {}
    handle = None
    if layer is not None:

        def hook(module, args, out):
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"{fn}: expected the layer to output one tensor, got {type(out).__name__}"
                )
            if not input_grad:  # the graph starts here; grad mode is restored below
                torch.set_grad_enabled(True)
                store["activation"] = out.detach().requires_grad_(True)
                return store["activation"].clone()  # in-place units after it stay legal
            store["activation"] = out

        handle = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(input_grad), backward_rule(rule) as info:
            logits = model(pre(x))
            check_logits(logits, fn)
            t = resolve_targets(targets, x.shape[0], logits.detach(), fn)
            scores = scores_of(logits, output, fn).gather(1, t)
    finally:
        if handle is not None:
            handle.remove()
    if rule != "gradient" and info["count"] == 0:
        raise ValueError(
            f"{fn}: the {rule} rule found no ReLU-family unit in the model "
            f"(ReLU, ReLU6, LeakyReLU, Hardtanh, F.relu, ...)"
        )
    if layer is not None and "activation" not in store:
        raise ValueError(f"{fn}: the layer did not run in the model's forward")
    inputs = ([x] if input_grad else []) + ([store["activation"]] if layer is not None else [])
    if t.shape[1] == 0:
        grads = [torch.zeros(i.shape[0], 0, *i.shape[1:], dtype=i.dtype) for i in inputs]
    else:
        grads = vjp_per_target(scores, inputs)
    out = {
        "targets": t,
        "scores": scores.detach(),
        "logits": logits.detach(),
        "input_grad": grads[0] if input_grad else None,
    }
    if layer is not None:
        out["activation"] = store["activation"].detach()
        out["layer_grad"] = grads[-1]
    return out
