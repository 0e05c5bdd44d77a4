"""``pyinvert.invert``: batched inversion of a representation, and its result.

The engine is made of independent parts: a representation (:mod:`pyinvert.representations`:
image pixels <-> optimized tensor, and Phi), an objective (:mod:`pyinvert.objectives`), the
update loop (:mod:`pyinvert.optim.loop`), transforms (:mod:`pyinvert.optim.jitter`) and a recipe
(:mod:`pyinvert.optim.recipes`, pure data).
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from pyinvert.optim import engine as _engine
from pyinvert import io as _io
from pyinvert.objectives import Inversion, inversion_objective
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import make_representation


@dataclass
class InversionResult:
    """What :func:`invert` returns.

    Attributes:
        images: reconstructions in [0, 1], [B, C, H, W] ([B, R, C, H, W] with restarts > 1).
        feature_error: final |Phi(x) - Phi0|^2 / |Phi0|^2, [B] (or [B, R]).
        loss_history: objective per iteration, [B, T] (or [B, R, T]); NaN after a stop.
        error_history: normalized feature error per iteration, same shape.
        failed: True where the loss became NaN/Inf and that reconstruction was stopped.
        stopped_at: the iteration of the stop, -1 for none.
        codes: Phi of the reconstructions, [B, ...] (or [B, R, ...]).
        targets: Phi0, [B, ...].
        originals: the input images in [0, 1] as the representation sees them
            (postprocess(preprocess(images))), [B, C, H, W], or None for target codes.
        settings: the recipe, representation and run options (JSON-friendly).
        seconds: wall time of the optimization.
    """
    images: Tensor
    feature_error: Tensor
    loss_history: Tensor
    error_history: Tensor
    failed: Tensor
    stopped_at: Tensor
    codes: Tensor
    targets: Tensor
    originals: Optional[Tensor]
    settings: dict
    seconds: float = 0.0
    names: List[str] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return int(self.settings.get("restarts", 1))

    def summary(self) -> dict:
        """Per-image numbers (JSON-friendly)."""
        return {
            "names": self.names,
            "feature_error": self.feature_error.tolist(),
            "final_loss": _io.last_finite(self.loss_history).tolist(),
            "failed": self.failed.tolist(),
            "stopped_at": self.stopped_at.tolist(),
            "seconds": self.seconds,
        }

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """Write every reconstruction as ``<name>.png`` (``<name>-r<k>.png`` with restarts) and
        ``result.json`` (settings, per-image errors, loss histories) into ``directory``, each
        file atomically. Returns the written paths."""
        directory = Path(directory)
        names = list(names) if names is not None else (self.names or
                                                        [f"image{i:03d}" for i in
                                                         range(self.images.shape[0])])
        if len(names) != self.images.shape[0]:
            raise ValueError(f"InversionResult.save: expected {self.images.shape[0]} names, "
                             f"got {len(names)}")
        written = _io.save_image_rows(directory, self.images, names)
        payload = {"settings": self.settings, **self.summary(), "names": names,
                   "loss_history": self.loss_history.tolist(),
                   "error_history": self.error_history.tolist()}
        payload = _io.nan_to_none(payload)
        written.append(_io.write_json(directory / "result.json", payload))
        return written


# ---- inputs ---------------------------------------------------------------------------------

def as_image_batch(images, fn: str = "invert") -> Tensor:
    """Images (Tensor [B, C, H, W] / [C, H, W] in [0, 1], a list of numpy HWC arrays, tensors or
    file paths) as one float Tensor [B, C, H, W]. Mixed gray/RGB lists become RGB."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"{fn}: expected images of shape (B, C, H, W), "
                             f"got {list(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"{fn}: expected floating point images in [0, 1], got {images.dtype}")
        if images.shape[1] not in (1, 3, 4):
            raise ValueError(f"{fn}: expected images with 1, 3 or 4 channels, "
                             f"got C={images.shape[1]}")
        return images
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"{fn}: expected images as a Tensor, a list of arrays or a list of "
                        f"paths, got {type(images).__name__}")
    if not images:
        raise ValueError(f"{fn}: expected at least one image, got an empty list")
    tensors = []
    for i, im in enumerate(images):
        if isinstance(im, (str, os.PathLike)):
            t = _io.load_image(im)
        elif isinstance(im, np.ndarray):
            t = _io.array_to_tensor(im, name=f"images[{i}]")
        elif isinstance(im, Tensor):
            t = im if im.dim() == 3 else None
            if t is None:
                raise ValueError(f"{fn}: expected images[{i}] of shape (C, H, W), "
                                 f"got {list(im.shape)}")
        else:
            raise TypeError(f"{fn}: expected images[{i}] to be a path, numpy array or Tensor, "
                            f"got {type(im).__name__}")
        tensors.append(t.float()[:3])
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"{fn}: expected images of one size to batch them, got sizes "
                         f"{sorted(sizes)}; invert each size separately")
    channels = max(t.shape[0] for t in tensors)
    tensors = [t.expand(channels, -1, -1) if t.shape[0] == 1 else t for t in tensors]
    return torch.stack(tensors)


# ---- the engine -----------------------------------------------------------------------------

def invert(images=None, *, targets: Optional[Tensor] = None, representation="hog",
           recipe="cvpr2015", steps: Optional[int] = None, restarts: int = 1,
           batch_size: Optional[int] = None, generator: Optional[torch.Generator] = None,
           seeds: Optional[Sequence[int]] = None,
           device=None, dtype: torch.dtype = torch.float32, backend: str = "fused",
           image_size=None, progress: bool = True, callback: Optional[Callable] = None,
           names: Optional[Sequence[str]] = None, mask: Optional[Tensor] = None,
           weights="imagenet", **overrides) -> InversionResult:
    r"""Find images x with Phi(x) close to Phi0 = Phi(images) (or given target codes).

    All images (times ``restarts``) are optimized together in one tensor, in chunks of
    ``batch_size`` rows. The data term is normalized per image, the recipe's weights may
    differ per image (Tensor[B] overrides: a sweep in one batch), and a row whose loss becomes
    NaN/Inf is frozen and reported in ``failed`` while the others go on.

    Args:
        images: Tensor [B, C, H, W] in [0, 1], a list of numpy HWC arrays (uint8, uint16 or
            float in [0, 1]) or a list of file paths; all of one size. Default: None.
        targets: codes Phi0 [B, ...] to invert instead of images (needs ``image_size``).
            Default: None.
        representation: "hog", "hogb", "dsift", "cnn:MODEL:LAYER[,LAYER...]" or a
            representation module (e.g. :class:`pyinvert.representations.cnn.CNN`; see
            :mod:`pyinvert.representations`). Several CNN layers: the data term is the sum of
            the per-layer normalized terms. Default: "hog".
        recipe: "cvpr2015", "ijcv2016" or a :class:`pyinvert.optim.recipes.Recipe`; a CNN
            representation gets the CNN variant of the named recipe (see
            :func:`pyinvert.optim.recipes.get_recipe`). Default: "cvpr2015".
        steps: None runs the recipe's schedule; an int stretches/shortens it to that many
            iterations, stages keeping their shares. Default: None.
        restarts: independent reconstructions per image (R). Default: 1.
        batch_size: rows per optimized chunk; None: all at once. Default: None.
        generator: torch.Generator seeding the initializations and jitter (a seeded run on
            the CPU is reproducible; a row's result does not depend on the batch size).
            Default: None (a fresh seed from torch's global generator).
        seeds: one int per image (overrides ``generator``): image b's restarts are seeded from
            ``seeds[b]`` alone, so its result does not depend on which other images share the
            batch (what a sharded batch job needs). Default: None.
        device: where to optimize; None: the images' (or targets') device. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        backend: "fused" (our kernels) or "reference" (pure PyTorch). Default: "fused".
        image_size: (H, W) of the images to find, needed with ``targets``. Default: None.
        progress: show a tqdm progress bar. Default: True.
        callback: ``callback(iteration, x, loss, error, active)`` after every step; returning
            True stops that chunk. Default: None.
        names: names of the images (used by :meth:`InversionResult.save`). Default: None.
        mask: 0/1 weights over the code (one code's shape, e.g. from
            :meth:`pyinvert.representations.cnn.CNN.code_mask`): only the kept neurons are matched, normalized
            by the masked target (the "neuron subset" reconstructions). Default: None.
        weights: the weights of a "cnn:MODEL:LAYER" representation ("imagenet", None for
            random, or a path). Default: "imagenet".
        **overrides: any :class:`pyinvert.optim.recipes.Recipe` field (e.g. ``tv_weight=2.0``,
            ``norm_weight=torch.tensor([...])``, ``bound=None``, ``jitter=1``).

    Returns:
        An :class:`InversionResult`.

    Shape:
        - images: :math:`(B, C, H, W)`; targets: :math:`(B, ...)`.
        - result.images: :math:`(B, C', H, W)`, or :math:`(B, R, C', H, W)` when restarts > 1
          (C' = 1 for the gray HOG/DSIFT representations).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> res = invert(x, representation="hog", steps=20, progress=False,
        ...              generator=torch.Generator().manual_seed(0))
        >>> res.images.shape, res.feature_error.shape
        (torch.Size([2, 1, 32, 32]), torch.Size([2]))

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015, eq. (1); "Visualizing Deep Convolutional Neural Networks Using
        Natural Pre-Images", IJCV 2016, eq. (3).
    """
    fn = "invert"
    if (images is None) == (targets is None):
        raise ValueError(f"{fn}: expected exactly one of images or targets, got "
                         f"{'both' if images is not None else 'neither'}")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"{fn}: expected restarts to be an int >= 1, got {restarts!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"{fn}: expected batch_size to be None or an int >= 1, "
                         f"got {batch_size!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: expected dtype float32 or float64, got {dtype}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{fn}: expected generator to be a torch.Generator, "
                        f"got {type(generator).__name__}")
    rec = get_recipe(recipe, **overrides)
    rep = make_representation(representation, backend=backend, recipe=rec, weights=weights)
    if getattr(rep, "kind", None) == "cnn":
        rec = get_recipe(recipe, representation=rep, **overrides)
    if steps is not None:
        rec = rec.scaled(steps)

    originals = None
    if images is not None:
        batch = as_image_batch(images, fn)
        dev = torch.device(device) if device is not None else batch.device
        batch = batch.to(device=dev, dtype=dtype)
        H, W = batch.shape[-2:]
        if H < rep.min_size or W < rep.min_size:
            raise ValueError(f"{fn}: expected images of at least {rep.min_size}x{rep.min_size} "
                             f"pixels for {getattr(rep, 'name', 'the representation')}, "
                             f"got {H}x{W}")
        x0 = rep.preprocess(batch)
        with torch.no_grad():
            tgt = rep(x0)
        originals = rep.postprocess(x0)
    else:
        if not isinstance(targets, Tensor):
            raise TypeError(f"{fn}: expected targets to be a torch.Tensor, "
                            f"got {type(targets).__name__}")
        if image_size is None:
            raise ValueError(f"{fn}: expected image_size=(H, W) with targets, got None")
        H, W = (int(v) for v in image_size)
        dev = torch.device(device) if device is not None else targets.device
        tgt = targets.detach().to(device=dev, dtype=dtype)
    B = tgt.shape[0]
    R = restarts
    N = B * R
    C = rep.channels
    sc = _engine.recipe_scales(rec, C, H, W)
    sigma, prior_scale = sc["sigma"], sc["prior_scale"]

    data_w = _engine.per_row(rec.data_weight, B, 1, "data_weight", dev, dtype)
    tv_w = _engine.per_row(rec.tv_weight, B, 1, "tv_weight", dev, dtype) * prior_scale
    norm_w = _engine.per_row(rec.norm_weight, B, 1, "norm_weight", dev, dtype) * prior_scale
    segments = None
    if getattr(rep, "kind", None) == "cnn" and len(rep.layers) > 1:
        segments = [(sg.start, sg.stop) for sg in rep.segments((H, W))]
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{fn}: expected mask to be a Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) not in (tuple(tgt.shape[1:]), tuple(tgt.shape)):
            raise ValueError(f"{fn}: expected mask of shape {list(tgt.shape[1:])} (one code), "
                             f"got {list(mask.shape)}")
    objective = inversion_objective(tgt, data_weight=data_w, tv_weight=tv_w,
                                    norm_weight=norm_w, beta=rec.beta, alpha=rec.alpha,
                                    isotropic=rec.isotropic_norm, backend=backend, mask=mask,
                                    segments=segments)
    seeds = _engine.row_seeds(B, R, seeds, generator, fn)
    out = _engine.run(objective, rep, rec, B=B, R=R, image_size=(H, W), channels=C,
                      seeds=seeds, device=dev, dtype=dtype, batch_size=batch_size,
                      progress=progress,
                      callback=callback, desc=f"invert {getattr(rep, 'name', '')} ({rec.name})")
    seconds = out.seconds
    targets_rows = tgt.repeat_interleave(R, dim=0) if R > 1 else tgt
    x_all, code_all = out.x, (out.codes if N else tgt)
    hist_all, err_all = out.loss_history, out.measure_history
    fail_all, stop_all = out.failed, out.stopped_at
    if N:
        with torch.no_grad():
            fe = Inversion(targets_rows.double(), mask=None if mask is None else mask.double(),
                           segments=segments).evaluate(code_all.double(), None)[0]
    else:
        fe = torch.zeros(0, dtype=torch.float64)
    fe = torch.where(fail_all.to(fe.device), torch.full_like(fe, float("nan")), fe).cpu()
    recon = torch.nan_to_num(rep.postprocess(torch.nan_to_num(x_all, nan=0.0)))

    def shape_rows(t):
        return t.reshape(B, R, *t.shape[1:]) if R > 1 else t

    settings = {
        "representation": rep.config() if hasattr(rep, "config") else str(rep),
        "recipe": rec.to_dict(), "restarts": R, "batch_size": batch_size,
        "image_size": [H, W], "device": str(dev), "dtype": str(dtype).replace("torch.", ""),
        "backend": backend, "sigma": sigma, "iterations": rec.iterations,
    }
    return InversionResult(
        images=shape_rows(recon.detach()), feature_error=shape_rows(fe),
        loss_history=shape_rows(hist_all), error_history=shape_rows(err_all),
        failed=shape_rows(fail_all), stopped_at=shape_rows(stop_all),
        codes=shape_rows(code_all.detach()), targets=tgt, originals=originals,
        settings=settings, seconds=seconds, names=list(names) if names is not None else [])
