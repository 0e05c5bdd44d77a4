"""The "different random seeds" experiment: two small CNNs trained here, from two seeds, on a
procedurally generated data set, then stitched.

The data set (:func:`shapes`): 32 x 32 RGB images of one of five shapes (disk, ring, cross,
horizontal stripes, vertical stripes; the cross randomly rotated), random position, size,
foreground and background colours, plus Gaussian noise; the class is the shape. Nothing is downloaded or shipped: an
image is a function of the generator's state.

The network (:class:`SmallNet`): ``features`` = three conv 3x3 - BatchNorm - ReLU stages (8,
16, 32 channels; max pooling after the first two), global average pooling, ``classifier`` a
linear layer; a few hundred Adam steps (:func:`train_small_cnn`) reach > 90% held-out accuracy
in seconds on one CPU thread.

Example:
    >>> x, y = shapes(4, generator=torch.Generator().manual_seed(0))
    >>> x.shape, y.shape, bool((y >= 0).all() and (y < len(SHAPES)).all())
    (torch.Size([4, 3, 32, 32]), torch.Size([4]), True)
"""

import math
import time
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyinvert.analysis.equivalence import equivalence
from pyinvert.representations.cnn import CNN

#: The shape classes of :func:`shapes`, in label order.
SHAPES = ("disk", "ring", "cross", "hstripes", "vstripes")


def shapes(
    n: int, size: int = 32, generator: Optional[torch.Generator] = None, noise: float = 0.05
) -> Tuple[Tensor, Tensor]:
    """n images [n, 3, size, size] in [0, 1] and their labels [n] (see the module docstring)."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(SHAPES), (n,), generator=g)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    r = (0.22 + 0.16 * u(n)).view(n, 1, 1)
    cx = (0.5 + (u(n) - 0.5) * 0.4).view(n, 1, 1)
    cy = (0.5 + (u(n) - 0.5) * 0.4).view(n, 1, 1)
    ang = (u(n) * 2 * math.pi).view(n, 1, 1)
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    dx, dy = xx - cx, yy - cy
    d = torch.sqrt(dx**2 + dy**2)
    # rotated coordinates for the cross
    rx = dx * torch.cos(ang) + dy * torch.sin(ang)
    ry = -dx * torch.sin(ang) + dy * torch.cos(ang)
    masks = torch.stack(
        [
            d < r,  # disk
            (d < r) & (d > r * 0.55),  # ring
            ((rx.abs() < r * 0.3) | (ry.abs() < r * 0.3)) & (d < r),  # cross
            (torch.remainder(yy * size / 4, 2) < 1) & (dx.abs() < r) & (dy.abs() < r),  # hstripes
            (torch.remainder(xx * size / 4, 2) < 1) & (dx.abs() < r) & (dy.abs() < r),  # vstripes
        ],
        1,
    )  # [n, 5, H, W]
    mask = masks[torch.arange(n), labels].float().unsqueeze(1)
    fg, bg = u(n, 3, 1, 1), u(n, 3, 1, 1)
    # keep foreground and background apart
    fg = torch.where((fg - bg).abs().sum(1, keepdim=True) < 0.6, 1 - bg, fg)
    img = mask * fg + (1 - mask) * bg + noise * torch.randn(n, 3, size, size, generator=g)
    return img.clamp(0, 1), labels


class SmallNet(nn.Module):
    """conv-BN-ReLU (8) - maxpool - conv-BN-ReLU (16) - maxpool - conv-BN-ReLU (32) - global
    average pooling - linear; layers ``features.0`` ... ``features.10``, ``classifier``.

    Shape:
        - Input: (B, 3, H, W), normalized images; output (B, classes).
    """

    def __init__(self, classes: int = len(SHAPES), width: int = 8):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(4 * w, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


#: The normalization SmallNet is trained with (images in [0, 1]).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def train_small_cnn(
    seed: int,
    steps: int = 300,
    batch: int = 32,
    lr: float = 3e-3,
    data_seed: int = 1234,
    test: int = 512,
):
    """Train a :class:`SmallNet` from ``seed`` (its initialization and batch order) on
    :func:`shapes` (images drawn from ``data_seed``, the same for every seed).

    Returns:
        (the model in eval mode, frozen; {"accuracy": held-out accuracy, "seconds": ...,
        "loss": last loss}).
    """
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallNet()
    gen = torch.Generator().manual_seed(seed)
    data = torch.Generator().manual_seed(data_seed)
    x_all, y_all = shapes(steps * batch // 4 + test, generator=data)
    x_test, y_test = x_all[:test], y_all[:test]
    x_train, y_train = x_all[test:], y_all[test:]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.zeros(())
    for step in range(steps):
        idx = torch.randint(0, x_train.shape[0], (batch,), generator=gen)
        xb = x_train[idx]
        if step % 2:  # flips as augmentation (the shapes are flip-symmetric classes)
            xb = torch.flip(xb, [-1])
        loss = F.cross_entropy(model((xb - mean) / std), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine decay
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
    model.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((model((x_test - mean) / std).argmax(1) == y_test).float().mean())
    return model, {
        "accuracy": acc,
        "seconds": time.perf_counter() - t0,
        "loss": float(loss.detach()),
        "seed": seed,
        "steps": steps,
    }


def small_cnn_rep(model: nn.Module, layer: str, name: str):
    """A :class:`pyinvert.CNN` of a SmallNet layer, with its training normalization."""
    return CNN(model, layer, mean=MEAN, std=STD, model_name=name)


def seed_experiment(
    layer: str = "features.6",
    seeds=(0, 1),
    steps: int = 300,
    images: int = 384,
    method: str = "ridge",
    generator=None,
) -> dict:
    """Train two SmallNets from two seeds and stitch A's ``layer`` into B's.

    Returns:
        {"training": [A's and B's training records], "result": the EquivalenceResult (rows
        "trained": A into B, "untrained": an untrained SmallNet into B), "self": A into A}.
    """
    a, info_a = train_small_cnn(seeds[0], steps=steps)
    b, info_b = train_small_cnn(seeds[1], steps=steps)
    rep_a = small_cnn_rep(a, layer, f"smallnet-seed{seeds[0]}")
    rep_b = small_cnn_rep(b, layer, f"smallnet-seed{seeds[1]}")
    x, _ = shapes(images, generator=torch.Generator().manual_seed(99))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    kw = dict(
        crops=images * 3 // 4,
        test_crops=images // 4,
        size=32,
        holdout=0.25,
        chunk=64,
        method=method,
        generator=gen,
    )
    res = equivalence(rep_a, rep_b, x, **kw)
    return {"training": [info_a, info_b], "result": res}
