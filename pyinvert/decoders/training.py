"""``pyinvert.decoders.train``: a decoder trained to invert a representation on random crops of
photos, resumable, data-parallel under ``torchrun``.

Each step's global batch is a function of ``(seed, step)`` (:mod:`pyinvert.decoders.data`),
so a resumed run and a run over several processes see the same batches as one uninterrupted
process. Under ``torchrun --nproc_per_node N`` each rank takes ``batch_size / N`` samples of
the step's global batch and the gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel` (gloo on the CPU, nccl on CUDA).
"""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pyinvert.decoders import data as _data
from pyinvert.decoders.architecture import Decoder, code_map
from pyinvert.decoders.store import KIND, load, save_decoder
from pyinvert.representations import as_representation
from pyinvert.training import distributed, load_checkpoint

LOSSES = ("pixel", "pixel+feature")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        decoder: the trained :class:`Decoder` (eval mode, on the CPU).
        losses: this run's training loss per step (the global batch's mean), from the first
            step it ran (after a resume: from the checkpoint's step).
        start_step: the step this run started from (0, or the checkpoint's).
        steps: the steps done in all.
        seconds: this run's wall time.
        metadata: what the checkpoint and decoder file record.
        images_per_second: training throughput of this run (all processes).
    """

    decoder: Decoder
    losses: List[float]
    start_step: int
    steps: int
    seconds: float
    metadata: dict
    images_per_second: float = 0.0
    extra: dict = field(default_factory=dict)


def _check_int(fn, key, v, lo):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{fn}: expected {key} to be an int >= {lo}, got {v!r}")


def feature_error(rep, images: Tensor, target: Tensor) -> Tensor:
    """|Phi(images) - Phi0|^2 / |Phi0|^2 per image (differentiable in ``images``)."""
    code = rep(rep.preprocess(images)).flatten(1)
    t = target.flatten(1)
    return (code - t).square().sum(1) / t.square().sum(1).clamp_min(1e-12)


def pixel_target(rep, images: Tensor) -> Tensor:
    """What the decoder should output: the images as the representation sees them (gray for
    HOG / DSIFT)."""
    return rep.postprocess(rep.preprocess(images))


def train(
    rep,
    data="builtin",
    *,
    steps: int = 1000,
    batch_size: int = 8,
    loss: str = "pixel+feature",
    lr: float = 2e-3,
    seed: int = 0,
    crop: int = 64,
    scales=(0.5, 1.0),
    width: int = 8,
    feature_weight: float = 1.0,
    checkpoint=None,
    checkpoint_every: int = 100,
    workers: int = 0,
    progress: bool = True,
    device=None,
    out=None,
    callback: Optional[Callable[[int, float], None]] = None,
    command: Optional[str] = None,
) -> TrainResult:
    """Train a decoder that inverts ``rep``: minimize the mean squared error between its
    output and the crops (``loss="pixel"``), plus ``feature_weight`` times the normalized
    feature error of its output (``"pixel+feature"``), with Adam and a cosine learning rate.

    Args:
        rep: a representation (anything :func:`pyinvert.representations.as_representation`
            accepts, with one spatial code map: "hog", "dsift", "cnn:MODEL:LAYER").
        data: a folder of images (recursively), a list of files or [3, H, W] tensors in
            [0, 1], or "builtin" (:func:`pyinvert.data.photos.training_photos`). Default:
            "builtin".
        steps: optimizer steps in all (a resumed run continues to this). Default: 1000.
        batch_size: the global batch (over all torchrun processes). Default: 8.
        loss: "pixel" or "pixel+feature". Default: "pixel+feature".
        lr: Adam's peak learning rate. Default: 2e-3.
        seed: seeds the weights and every batch. Default: 0.
        crop: the crops' side in pixels. Default: 64.
        scales: (lo, hi) resize factors of the photos before cropping. Default: (0.5, 1.0).
        width: the decoder's width (:class:`Decoder`). Default: 8.
        feature_weight: the feature term's weight. Default: 1.0.
        checkpoint: a checkpoint file: resumed from when it exists (its metadata must match:
            representation, architecture, recipe, data), written every ``checkpoint_every``
            steps and at the end. Default: None.
        checkpoint_every: steps between checkpoints. Default: 100.
        workers: DataLoader worker processes (the batches do not depend on it). Default: 0.
        progress: a tqdm progress bar (rank 0). Default: True.
        device: "cpu" or "cuda". Default: None (CPU).
        out: also write the decoder file here (no optimizer state). Default: None.
        callback: ``callback(step, loss)`` after each step (step counts from 1). Default: None.
        command: the command line, recorded in the metadata. Default: None.

    Returns:
        A :class:`TrainResult`.

    Example:
        >>> import torch
        >>> photos = [torch.rand(3, 40, 40) for _ in range(2)]
        >>> res = train("hog", photos, steps=2, batch_size=2, crop=32, width=4, progress=False)
        >>> res.steps, len(res.losses)
        (2, 2)
    """
    fn = "decoders.train"
    _check_int(fn, "steps", steps, 0)
    _check_int(fn, "batch_size", batch_size, 1)
    _check_int(fn, "crop", crop, 1)
    _check_int(fn, "checkpoint_every", checkpoint_every, 1)
    _check_int(fn, "workers", workers, 0)
    if loss not in LOSSES:
        raise ValueError(f"{fn}: expected loss in {LOSSES}, got {loss!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{fn}: expected lr > 0, got {lr!r}")
    rep = as_representation(rep, fn=fn)
    if crop < rep.min_size:
        raise ValueError(
            f"{fn}: expected crop >= {rep.min_size} ({rep.name}'s minimum), got {crop}"
        )
    world = distributed.setup(device, fn)
    try:
        return _train(
            fn,
            rep,
            data,
            world,
            steps,
            batch_size,
            loss,
            float(lr),
            int(seed),
            crop,
            tuple(float(s) for s in scales),
            width,
            float(feature_weight),
            checkpoint,
            checkpoint_every,
            workers,
            progress,
            out,
            callback,
            command,
        )
    finally:
        distributed.teardown(world)


def _train(
    fn,
    rep,
    data,
    world,
    steps,
    batch_size,
    loss,
    lr,
    seed,
    crop,
    scales,
    width,
    feature_weight,
    checkpoint,
    checkpoint_every,
    workers,
    progress,
    out,
    callback,
    command,
) -> TrainResult:
    dev = world.device
    rep = rep.to(dev).requires_grad_(False)
    photos, description, digest = _data.resolve_photos(data)
    local = distributed.share(batch_size, world, fn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = Decoder.for_representation(rep, width=width).to(dev)
    recipe = {
        "loss": loss,
        "feature_weight": feature_weight if loss == "pixel+feature" else 0.0,
        "lr": lr,
        "schedule": "cosine",
        "steps": steps,
        "batch_size": batch_size,
        "crop": crop,
        "scales": list(scales),
        "seed": seed,
    }
    metadata = {
        "kind": KIND,
        "representation": rep.config(),
        "architecture": dict(decoder.config),
        "recipe": recipe,
        "data": description,
        "data_hash": digest,
    }
    dataset = _data.CropDataset(photos, crop, batch_size, seed, scales)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        expect = {
            k: metadata[k]
            for k in ("kind", "representation", "architecture", "recipe", "data_hash")
        }
        ck = load_checkpoint(checkpoint, expect=expect, caller=fn)
        decoder.load_state_dict(ck["state"]["decoder"])
        optimizer.load_state_dict(ck["state"]["optimizer"])
        start = int(ck["step"])
    else:  # the code scale from the first global batch (the same on every rank)
        first = torch.stack([dataset[j] for j in range(batch_size)]).to(dev)
        with torch.no_grad():
            decoder.calibrate(code_map(rep, rep(rep.preprocess(first)), (crop, crop)))
    model = decoder
    if world.distributed:
        model = DistributedDataParallel(decoder, device_ids=[dev] if dev.type == "cuda" else None)
    schedule = lambda t: lr * 0.5 * (1 + math.cos(math.pi * t / max(steps, 1)))  # noqa: E731
    losses: List[float] = []
    t0 = time.perf_counter()
    bar = tqdm(
        total=steps,
        initial=start,
        desc=f"train-decoder {rep.name}",
        disable=not (progress and world.main),
        leave=False,
    )
    step = start
    batches = _data.loader(dataset, start, steps, local, world.rank, world.size, workers)
    model.train()
    for images in batches:
        images = images.to(dev)
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        with torch.no_grad():
            target_code = rep(rep.preprocess(images))
            target = pixel_target(rep, images)
        m = code_map(rep, target_code, (crop, crop))
        y = model(m, (crop, crop))
        value = (y - target).square().mean()
        if loss == "pixel+feature":
            value = value + feature_weight * feature_error(rep, y, target_code).mean()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        step += 1
        losses.append(float(distributed.mean(value.detach(), world)))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
            if world.main:
                save_decoder(checkpoint, decoder, metadata, step, optimizer)
            distributed.barrier(world)
        if callback is not None:
            callback(step, losses[-1])
    bar.close()
    seconds = time.perf_counter() - t0
    metadata = {**metadata, "seconds": seconds, "steps_done": step}
    if command is not None:
        metadata["command"] = command
    if out is not None and world.main:
        save_decoder(out, decoder, metadata, step)
    distributed.barrier(world)
    decoder = decoder.cpu().eval()
    decoder.metadata = metadata
    done = (step - start) * batch_size
    return TrainResult(
        decoder=decoder,
        losses=losses,
        start_step=start,
        steps=step,
        seconds=seconds,
        metadata=metadata,
        images_per_second=done / seconds if seconds > 0 else 0.0,
    )


__all__ = ["train", "TrainResult", "load", "LOSSES"]
