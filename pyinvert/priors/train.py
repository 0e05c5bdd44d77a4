r"""Training the learned priors by score matching: :func:`train`.

What is done to the data (and why the same is done when the prior is used):

1. **Images** (a folder, a list of paths / [C, H, W] tensors, a [B, C, H, W] tensor, or a dict
   of them) are read as floats in [0, 1] and converted to gray (ITU-R 601 weights, as the
   HOG/DSIFT representations) when the model has one channel; RGB models need 3-channel
   images. Each step draws ``batch_size`` crops of ``patch_size`` x ``patch_size`` pixels at
   uniformly random images and positions, and adds dequantization noise: uniform in
   ``[-noise/2, noise/2]`` (default 1/255: the 8-bit steps, which otherwise give the data a
   lattice structure that score matching fits), drawn like everything else from one seeded
   ``torch.Generator``.
2. **DC removal and whitening** (images): 20,000 random k x k patches (k = the filter size)
   give the covariance of the DC-removed patches (each channel's patch mean subtracted);
   its PCA whitening matrix :math:`V = (\Lambda + \epsilon I)^{-1/2} U^\top` over the
   non-DC eigenvectors (:math:`\epsilon` = ``whiten_eps`` times the mean eigenvalue) becomes
   the model's filter basis (``w = A V``, see :mod:`pyinvert.priors.models`). The training
   crops themselves are not transformed: the filters carry the whitening, and being
   orthogonal to the DC they ignore the patch means. Hence a trained prior applied to raw
   images in [0, 1] sees exactly what it was trained on, with nothing to redo.
3. **Vectors** [N, D] are used as given (no DC removal; the whitening uses
   :math:`E[x x^\top]` over all D directions).

The objective is :func:`pyinvert.priors.score_matching_loss` per pixel of a sample, minimized
with Adam. A checkpoint (:func:`pyinvert.training.save_checkpoint`) every
``checkpoint_every`` steps and at the end holds the model, the optimizer and the generator's
state: a killed run started again with the same arguments resumes there and ends with
bit-for-bit the weights of an uninterrupted run.
"""

import math
import time
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import List, Optional

import torch
from tqdm.auto import tqdm
from torch import Tensor

from pyinvert import io
from pyinvert.priors.models import LearnedModel
from pyinvert.priors.score import score_matching_loss
from pyinvert.representations.base import to_gray
from pyinvert.training import checkpoint as ckpt

#: Image file suffixes read from a folder.
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Patches drawn to estimate the whitening.
WHITENING_PATCHES = 20000


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (the one passed in, trained in place).
        losses: the loss (J per pixel) of every step of this call, resumed steps excluded.
        steps: the total number of steps done (including resumed ones).
        seconds: wall time of this call.
        metadata: what the checkpoint records (model shape, data hash, settings).
    """

    model: LearnedModel
    losses: List[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    metadata: dict = field(default_factory=dict)


def _count(value, name: str, fn: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{fn}: expected {name} to be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: expected {name} >= {minimum}, got {value}")
    return int(value)


def _number(value, name: str, fn: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{fn}: expected {name} to be a number, got {type(value).__name__}")
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        raise ValueError(f"{fn}: expected {name} {'>=' if allow_zero else '>'} 0, got {value}")
    return float(value)


def load_images(data, channels: int, fn: str = "train"):
    """Training images as a list of [C, H, W] float32 tensors and the items their hash is
    computed from (file paths or tensors)."""
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (str, Path)):
        folder = Path(data)
        if not folder.is_dir():
            raise ValueError(f"{fn}: expected a folder of images, got {str(data)!r}")
        data = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if not data:
            raise ValueError(f"{fn}: no image files ({', '.join(SUFFIXES)}) in {folder}")
    if isinstance(data, Tensor):
        if data.dim() != 4:
            raise ValueError(
                f"{fn}: expected images [B, C, H, W] or patches [N, D], got {list(data.shape)}"
            )
        data = list(data)
    if not isinstance(data, (list, tuple)) or not data:
        raise TypeError(
            f"{fn}: expected a folder, a list of image paths or tensors, or a tensor, got "
            f"{type(data).__name__}"
        )
    images, items = [], []
    for item in data:
        img = io.load_image(item) if isinstance(item, (str, Path)) else item
        if not isinstance(img, Tensor) or img.dim() != 3:
            raise ValueError(f"{fn}: expected each image as [C, H, W], got {_describe(img)}")
        img = img.detach().float().cpu()
        if channels == 1:
            img = to_gray(img[None])[0] if img.shape[0] != 1 else img
        elif img.shape[0] == 1:
            img = img.expand(channels, -1, -1)
        elif img.shape[0] == 4:
            img = img[:3]
        if img.shape[0] != channels:
            raise ValueError(
                f"{fn}: expected images with {channels} channel(s) for this model, got "
                f"{img.shape[0]}"
            )
        images.append(img.contiguous())
        items.append(item if isinstance(item, (str, Path)) else img)
    return images, items


def _describe(v) -> str:
    return list(v.shape).__repr__() if isinstance(v, Tensor) else type(v).__name__


def whitening_basis(patches: Tensor, remove_dc: bool, channels: int, eps: float) -> Tensor:
    r"""The PCA whitening matrix :math:`(\Lambda + \epsilon)^{-1/2} U^\top` [m, D] of patches
    [N, D] (rows), ``eps`` relative to the mean eigenvalue. With ``remove_dc`` each channel's
    mean is subtracted first and the DC directions (one per channel) are dropped: every row
    of the result sums to 0 over each channel."""
    x = patches.double()
    if remove_dc:
        x = x.view(x.shape[0], channels, -1)
        x = (x - x.mean(dim=2, keepdim=True)).flatten(1)
    cov = x.T @ x / x.shape[0]
    lam, U = torch.linalg.eigh(cov)
    lam, U = lam.flip(0), U.flip(1)  # decreasing variance
    keep = x.shape[1] - (channels if remove_dc else 0)
    lam, U = lam[:keep].clamp_min(0), U[:, :keep]
    reg = lam + eps * lam.mean() + 1e-12
    return (U / reg.sqrt()).T.float()


def _sample(images, sizes, count, size, generator):
    """``count`` crops of size x size from random images at random positions: [count, C, s, s]."""
    index = torch.randint(len(images), (count,), generator=generator)
    u = torch.rand(count, 2, generator=generator, dtype=torch.float64)
    crops = []
    for i, (a, b) in zip(index.tolist(), u.tolist()):
        H, W = sizes[i]
        y, x = int(a * (H - size + 1)), int(b * (W - size + 1))
        crops.append(images[i][:, y : y + size, x : x + size])
    return torch.stack(crops)


def train(
    model: LearnedModel,
    data,
    *,
    patch_size: Optional[int] = None,
    steps: int = 1000,
    batch_size: Optional[int] = 64,
    lr: float = 0.01,
    seed: int = 0,
    noise: float = 1.0 / 255.0,
    remove_dc: Optional[bool] = None,
    whiten: bool = True,
    whiten_eps: float = 0.1,
    schedule: str = "cosine",
    checkpoint=None,
    checkpoint_every: int = 100,
    progress: bool = True,
) -> TrainResult:
    r"""Fit ``model`` to natural images (or vectors) by score matching (module docstring).

    Args:
        model: an :class:`pyinvert.priors.ICA`, :class:`~pyinvert.priors.FoE` or
            :class:`~pyinvert.priors.SeparableFoE`; trained in place.
        data: a folder of images, a list of image paths or [C, H, W] tensors, a dict of them
            (e.g. :func:`pyinvert.data.photos.training_photos`), images [B, C, H, W] in [0, 1],
            or patches [N, C k^2] (vectors: used as given).
        patch_size: side of the training crops; None: the filter size k for ICA (a patch
            model), 3 k + 1 for the fields (each crop has (2k+2)^2 overlapping patches).
            Default: None.
        steps: the total number of Adam steps (a resumed run goes on to this many).
            Default: 1000.
        batch_size: crops (or vectors) per step; None: all vectors each step (vector data
            only). Default: 64.
        lr: Adam's learning rate. Default: 0.01.
        seed: seeds the one ``torch.Generator`` of every random choice (initial filters,
            whitening patches, crops, noise). Default: 0.
        noise: the width of the uniform dequantization noise added to image crops (0: none).
            Default: 1/255.
        remove_dc: remove each channel's patch mean (filters sum to 0); None: True for
            images, False for vectors. Default: None.
        whiten: use the PCA whitening matrix as the filter basis. Default: True.
        whiten_eps: regularizer of the whitening, relative to the mean eigenvalue.
            Default: 0.1.
        schedule: "cosine" (the learning rate of step t is ``lr (1 + cos(pi t / steps)) / 2``)
            or "constant". Default: "cosine".
        checkpoint: a file to save the training state to and resume from (None: no
            checkpoint). Default: None.
        checkpoint_every: steps between checkpoints. Default: 100.
        progress: show a tqdm progress bar. Default: True.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad data or settings, or a checkpoint made with other metadata.

    Example:
        >>> from pyinvert.priors import ICA
        >>> g = torch.Generator().manual_seed(0)
        >>> res = train(ICA(2, 4), torch.randn(500, 4, generator=g), steps=5,
        ...             batch_size=None, progress=False)
        >>> res.steps
        5
    """
    fn = "train"
    if not isinstance(model, LearnedModel):
        raise TypeError(
            f"{fn}: expected an ICA, FoE or SeparableFoE model, got {type(model).__name__}"
        )
    steps = _count(steps, "steps", fn, minimum=0)
    seed = _count(seed, "seed", fn, minimum=0)
    every = _count(checkpoint_every, "checkpoint_every", fn)
    lr = _number(lr, "lr", fn)
    noise = _number(noise, "noise", fn, allow_zero=True)
    whiten_eps = _number(whiten_eps, "whiten_eps", fn, allow_zero=True)
    if batch_size is not None:
        batch_size = _count(batch_size, "batch_size", fn)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"{fn}: expected schedule in ('cosine', 'constant'), got {schedule!r}")
    vectors = isinstance(data, Tensor) and data.dim() == 2
    k = model.size
    if vectors:
        model.as_images(data[:0], fn)  # the shape check
        if data.shape[0] == 0:
            raise ValueError(f"{fn}: expected at least one vector, got {list(data.shape)}")
        pool = data.detach().float().cpu().contiguous()
        items, crop = [pool], k
        remove_dc = False if remove_dc is None else bool(remove_dc)
    else:
        if batch_size is None:
            raise ValueError(f"{fn}: expected an int batch_size for image data, got None")
        images, items = load_images(data, model.channels, fn)
        crop = (k if model.kind == "ica" else 3 * k + 1) if patch_size is None else patch_size
        crop = _count(crop, "patch_size", fn)
        if crop < k:
            raise ValueError(f"{fn}: expected patch_size >= the filter size {k}, got {crop}")
        sizes = [tuple(t.shape[-2:]) for t in images]
        small = [s for s in sizes if min(s) < crop]
        if small:
            raise ValueError(f"{fn}: expected images of at least {crop}x{crop}, got {small[0]}")
        remove_dc = True if remove_dc is None else bool(remove_dc)
    metadata = {
        **model.config(),
        "data_hash": ckpt.data_hash(items),
        "patch_size": crop,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "noise": noise if not vectors else 0.0,
        "remove_dc": remove_dc,
        "whiten": bool(whiten),
        "whiten_eps": whiten_eps,
        "schedule": schedule,
    }
    generator = torch.Generator().manual_seed(seed)

    def batch():
        if vectors:
            if batch_size is None or batch_size >= pool.shape[0]:
                return pool
            return pool[torch.randint(pool.shape[0], (batch_size,), generator=generator)]
        x = _sample(images, sizes, batch_size, crop, generator)
        if noise > 0:
            x = x + (torch.rand(x.shape, generator=generator) - 0.5) * noise
        return x

    start, path = 0, None if checkpoint is None else Path(checkpoint)
    if path is not None and path.is_file():
        saved = ckpt.load_checkpoint(path, expect=metadata, caller=fn)
        model.set_basis(saved["state"]["model"]["basis"])
        model.load_state_dict(saved["state"]["model"])
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        optimizer.load_state_dict(saved["state"]["optimizer"])
        ckpt.set_rng_state(saved["rng"], generator)
        start = saved["step"]
    else:
        basis = None
        if whiten:
            if vectors:
                sample = pool
            else:
                n = WHITENING_PATCHES
                sample = _sample(images, sizes, n, k, generator)
                if noise > 0:
                    sample = sample + (torch.rand(sample.shape, generator=generator) - 0.5) * noise
                if model.kind == "separable":
                    sample = sample.mean(dim=1, keepdim=True)  # its basis is spatial
            chans = 1 if model.kind == "separable" else model.channels
            basis = whitening_basis(sample.flatten(1), remove_dc, chans, whiten_eps)
        elif remove_dc:
            chans = 1 if model.kind == "separable" else model.channels
            basis = whitening_basis(torch.eye(model.basis_dim), True, chans, 0.0)
        if basis is not None:
            model.set_basis(basis, generator)
        else:
            model.reset_parameters(generator)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses: List[float] = []
    started = time.perf_counter()
    bar = _progress(progress, steps, start)
    for step in range(start, steps):
        if schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        x = batch()
        loss = score_matching_loss(model, x) / x[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if value != value:
            raise RuntimeError(f"{fn}: the loss became NaN at step {step + 1} (try a smaller lr)")
        losses.append(value)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        done = step + 1
        if path is not None and (done % every == 0 or done == steps):
            _save(path, done, metadata, model, optimizer, generator)
    if bar is not None:
        bar.close()
    return TrainResult(
        model=model,
        losses=losses,
        steps=max(steps, start),
        seconds=time.perf_counter() - started,
        metadata=metadata,
    )


def _progress(progress: bool, steps: int, start: int):
    if not progress:
        return None
    return tqdm(total=steps, initial=start, desc="train-prior", leave=False)


def _save(path, step, metadata, model, optimizer, generator):
    ckpt.save_checkpoint(
        path,
        step=step,
        metadata=metadata,
        state={"model": model.state_dict(), "optimizer": optimizer.state_dict()},
        rng=ckpt.rng_state(generator),
    )
