"""Fooling images: projected gradient ascent on a target class's log-probability within an
epsilon-ball around each image, in [0, 1] pixels (Madry et al.'s PGD, targeted)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from pyinvert import io as _io
from pyinvert import models as _models
from pyinvert.tasks.inputs import as_image_batch
from pyinvert.toolbox.common import check_choice, check_int, titled_grid


@dataclass
class FoolResult:
    """Fooling images and what the model makes of them.

    Attributes:
        images: [B, 3, H, W] the fooled images, in [0, 1].
        perturbations: [B, 3, H, W] ``images - originals`` (within the epsilon-ball).
        classes: [B] the model's class of each fooled image; ``probabilities`` [B] its
            probability.
        target: [B] the target classes; ``target_probabilities`` [B] their final probability.
        original_classes, original_probabilities: [B] the same of the originals.
        iterations: [B] gradient steps taken (an image stops once it is classified as the
            target, with ``early_stop``).
        originals: [B, 3, H, W] the inputs.
        settings: eps, norm, steps, step size.
    """

    images: Tensor
    perturbations: Tensor
    classes: Tensor
    probabilities: Tensor
    target: Tensor
    target_probabilities: Tensor
    original_classes: Tensor
    original_probabilities: Tensor
    iterations: Tensor
    originals: Tensor
    settings: dict = field(default_factory=dict)
    names: Optional[List[str]] = None

    @property
    def success(self) -> Tensor:
        """[B] bool: the fooled image is classified as its target."""
        return self.classes == self.target

    def _label(self, k: int) -> str:
        try:
            return _models.decode(int(k))
        except (ValueError, OSError):
            return str(int(k))

    def figure(self, height: int = 160) -> np.ndarray:
        """One row per image: the original (its class and probability), the perturbation
        amplified to fill [0, 1] (0.5 + delta / (2 max|delta|)), and the fooled image (its
        class and probability)."""
        tiles, titles = [], []
        for i in range(self.images.shape[0]):
            d = self.perturbations[i]
            top = d.abs().max().clamp_min(1e-12)
            tiles += [self.originals[i], (0.5 + d / (2 * top)).clamp(0, 1), self.images[i]]
            titles += [
                f"{self._label(self.original_classes[i])} "
                f"{self.original_probabilities[i].item():.2f}",
                f"perturbation x{0.5 / top.item():.0f} (max {255 * top.item():.1f}/255)",
                f"{self._label(self.classes[i])} {self.probabilities[i].item():.2f}",
            ]
        return titled_grid(tiles, titles, 3, height)

    def summary(self) -> dict:
        return {
            **self.settings,
            "success_rate": float(self.success.float().mean()),
            "rows": [
                {
                    "target": int(t),
                    "class": int(c),
                    "probability": float(p),
                    "original_class": int(oc),
                    "original_probability": float(op),
                    "iterations": int(n),
                    "linf": float(d.abs().max()),
                    "l2": float(d.norm()),
                }
                for t, c, p, oc, op, n, d in zip(
                    self.target,
                    self.classes,
                    self.probabilities,
                    self.original_classes,
                    self.original_probabilities,
                    self.iterations,
                    self.perturbations,
                )
            ],
        }

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """``<name>.png`` per fooled image, ``fool.png`` (the figure) and ``result.json``."""
        directory = Path(directory)
        names = list(names or self.names or [f"image{i:03d}" for i in range(self.images.shape[0])])
        written = _io.save_image_rows(directory, self.images, names)
        written.append(_io.save_image(directory / "fool.png", self.figure()))
        written.append(
            _io.write_json(directory / "result.json", {**self.summary(), "names": names})
        )
        return written


#: The usual linf budget: 8 grey levels of 255.
DEFAULT_EPS = 8 / 255


class Normalized(nn.Module):
    """``model((images - mean) / std)``: a network of normalized inputs as one of [0, 1]
    images (what attack libraries take)."""

    def __init__(self, model: nn.Module, mean=_models.IMAGENET_MEAN, std=_models.IMAGENET_STD):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean.to(images)) / self.std.to(images))


def _targets(target, B: int, classes: int, device, fn: str) -> Tensor:
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dtype == torch.bool or t.dim() > 1:
        raise ValueError(f"{fn}: expected target as an int or B ints, got {target!r}")
    t = t.long().flatten().expand(B).clone() if t.numel() == 1 else t.long().flatten()
    if t.numel() != B:
        raise ValueError(f"{fn}: expected {B} targets (one per image), got {t.numel()}")
    if bool(((t < 0) | (t >= classes)).any()):
        raise ValueError(f"{fn}: expected targets in [0, {classes - 1}], got {t.tolist()}")
    return t.to(device)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """``delta`` [B, ...] projected onto the epsilon-ball: clamped (linf), or scaled down to
    norm eps per image (l2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))
    return delta * (eps / n).clamp(max=1.0)


def fool(
    images,
    model: Union[nn.Module, str],
    target,
    eps: float = DEFAULT_EPS,
    steps: int = 20,
    norm: str = "linf",
    *,
    step_size: Optional[float] = None,
    normalize: bool = True,
    early_stop: bool = True,
    random_start: bool = False,
    generator: Optional[torch.Generator] = None,
    device=None,
) -> FoolResult:
    """Fooling images: targeted PGD, ascent on log p(target | x) within the epsilon-ball.

    Each step: ``x <- Proj_{B(x0, eps) and [0, 1]}(x + a * s(grad))`` with ``s`` the sign
    (linf) or the per-image unit L2 direction (l2), the gradient of the target's
    log-softmax.

    Args:
        images: Tensor (B, 3, H, W) in [0, 1], a path or a list of paths (one size).
        model: a classifier returning logits (B, K), e.g. :func:`pyinvert.models.load_model`,
            or a zoo name (its ImageNet weights).
        target: the target class: an int, or one per image.
        eps: the ball's radius in [0, 1] pixels. Default: DEFAULT_EPS (8 / 255).
        steps: gradient steps at most. Default: 20.
        norm: "linf" or "l2". Default: "linf".
        step_size: the step ``a``; None for 2.5 eps / steps (Madry et al.). Default: None.
        normalize: the model takes ImageNet-normalized inputs (the zoo's convention); False
            if it takes [0, 1] images. Default: True.
        early_stop: an image stops at the first iterate classified as its target.
            Default: True.
        random_start: start from a uniform point of the ball (linf) drawn from
            ``generator``. Default: False.
        generator: the random start's generator. Default: None.
        device: where to run; None: the images' device. Default: None.

    Returns:
        :class:`FoolResult` (images, perturbations, final class and probability, iterations).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
        >>> r = fool(torch.rand(2, 3, 4, 4), net, target=1, eps=0.5, normalize=False)
        >>> bool(r.perturbations.abs().max() <= 0.5)
        True

    References:
        A. Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
        ICLR 2018 (PGD); A. Nguyen, J. Yosinski, J. Clune, "Deep Neural Networks are Easily
        Fooled", CVPR 2015; C. Szegedy et al., "Intriguing properties of neural networks",
        ICLR 2014.
    """
    fn = "fool"
    check_choice(norm, "norm", ("linf", "l2"), fn)
    check_int(steps, "steps", fn, low=0)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"{fn}: expected eps > 0, got {eps!r}")
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    elif (
        isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not step_size > 0
    ):
        raise ValueError(f"{fn}: expected step_size > 0, got {step_size!r}")
    if isinstance(model, str):
        model = _models.load_model(model, weights="imagenet")
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{fn}: expected model to be an nn.Module or a zoo name, got {type(model).__name__}"
        )
    x0 = as_image_batch(images, fn)
    if x0.shape[1] != 3:
        raise ValueError(f"{fn}: expected RGB images (B, 3, H, W), got {list(x0.shape)}")
    dev = torch.device(device) if device is not None else x0.device
    x0 = x0.to(dev).detach()
    net = (Normalized(model) if normalize else model).eval().to(dev)
    with torch.no_grad():
        logits0 = net(x0)
    if logits0.dim() != 2:
        raise ValueError(
            f"{fn}: expected the model to return logits (B, K), got {list(logits0.shape)}"
        )
    B = x0.shape[0]
    t = _targets(target, B, logits0.shape[1], dev, fn)
    p0 = logits0.float().softmax(1)
    x = x0.clone()
    if random_start:
        noise = torch.rand(
            x0.shape,
            generator=generator,
            dtype=x0.dtype,
            device=generator.device if generator is not None else "cpu",
        )
        x = (x0 + project((2 * noise.to(dev) - 1) * eps, eps, norm)).clamp(0, 1)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    iterations = torch.zeros(B, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    for _ in range(steps):
        x.requires_grad_(True)
        logits = net(x)
        if early_stop:
            active &= logits.detach().argmax(1) != t
            if not bool(active.any()):
                break
        objective = logits.log_softmax(1)[rows, t].sum()
        (grad,) = torch.autograd.grad(objective, x)
        if norm == "linf":
            direction = grad.sign()
        else:
            g = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            direction = grad / (g + 1e-10)
        step = active.view(-1, 1, 1, 1).to(x.dtype) * step_size * direction
        x = (x0 + project(x.detach() + step - x0, eps, norm)).clamp(0, 1).detach()
        iterations += active.long()
    x = x.detach()
    with torch.no_grad():
        p = net(x).float().softmax(1)
    prob, cls = p.max(1)
    settings = {
        "eps": float(eps),
        "norm": norm,
        "steps": steps,
        "step_size": float(step_size),
        "early_stop": early_stop,
        "random_start": random_start,
    }
    return FoolResult(
        images=x,
        perturbations=x - x0,
        classes=cls,
        probabilities=prob,
        target=t,
        target_probabilities=p[rows, t],
        original_classes=p0.argmax(1),
        original_probabilities=p0.max(1).values,
        iterations=iterations,
        originals=x0,
        settings=settings,
    )
