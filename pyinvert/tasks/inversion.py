"""``pyinvert.invert``: the engine run on an :class:`pyinvert.objectives.Inversion` objective.

The engine is made of independent parts: a representation (:mod:`pyinvert.representations`:
image pixels <-> optimized tensor, and Phi), an objective (:mod:`pyinvert.objectives`), a
parameterization (:mod:`pyinvert.optim.parameterizations`), the update loop
(:mod:`pyinvert.optim.loop`), jitter (:mod:`pyinvert.optim.jitter`) and a recipe
(:mod:`pyinvert.optim.recipes`, pure data); :mod:`pyinvert.tasks.common` and
:mod:`pyinvert.tasks.inputs` are the preparation every task shares.
"""

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from pyinvert.priors.objective import inversion_prior
from pyinvert import io as _io
from pyinvert.objectives import Inversion
from pyinvert.optim import engine as _engine
from pyinvert.optim.options import RunOptions
from pyinvert.tasks import common
from pyinvert.tasks.inputs import as_image_batch, prepare_images  # noqa: F401 (re-exported)
from pyinvert.tasks.result import Result, per_image
from pyinvert.decoders import inversion as _decoders


@dataclass
class InversionResult(Result):
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

    HISTORIES = ("loss_history", "error_history")

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


def invert(
    images=None,
    *,
    targets: Optional[Tensor] = None,
    representation="hog",
    recipe="cvpr2015",
    steps: Optional[int] = None,
    restarts: int = 1,
    batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    seeds: Optional[Sequence[int]] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    backend: str = "fused",
    image_size=None,
    progress: bool = True,
    callback: Optional[Callable] = None,
    names: Optional[Sequence[str]] = None,
    mask: Optional[Tensor] = None,
    weights="imagenet",
    options: Optional[RunOptions] = None,
    parameterization=None,
    prior="tv",
    method: str = "optimization",
    decoder=None,
    **overrides,
) -> InversionResult:
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
        representation: "hog", "hogb", "dsift", "cnn:MODEL:LAYER[,LAYER...]", a registered
            name, a :class:`pyinvert.CNN`, a :class:`pyinvert.HOG` / :class:`pyinvert.DenseSIFT`
            module, any ``nn.Module`` or callable ``images -> code`` (see
            :func:`pyinvert.representations.as_representation`). Several CNN layers: the data term is the sum of
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
        options: a :class:`pyinvert.optim.options.RunOptions` (steps, restarts, batch_size,
            generator, seeds, device, dtype, backend, progress, callback in one value; a
            keyword left at its default takes its value from here). Default: None.
        parameterization: what is optimized (:mod:`pyinvert.optim.parameterizations`); None:
            the pixels (the papers). Default: None.
        prior: the image prior: "tv" (the recipe's TV_beta, the papers), or a learned prior
            ("foe", "ica", a path, a model: :func:`pyinvert.priors.objective.inversion_prior`),
            added to the TV term at its tuned weight; or a
            :class:`pyinvert.priors.LearnedPrior` / ``FeaturePrior``, added as given. Default: "tv".
        method: "optimization" (the papers) or "decoder": the result is a trained decoder's
            reconstruction (:mod:`pyinvert.decoders`; one forward pass, no iterations, empty
            histories). Default: "optimization".
        decoder: the decoder of ``method="decoder"`` and of ``init="decoder"``: a name
            (:func:`pyinvert.decoders.load`), a file or a :class:`pyinvert.decoders.Decoder`;
            None: the shipped one named after the representation ("hog"). Default: None.
        **overrides: any :class:`pyinvert.optim.recipes.Recipe` field (e.g. ``tv_weight=2.0``,
            ``norm_weight=torch.tensor([...])``, ``bound=None``, ``jitter=1``);
            ``init="decoder"`` starts the optimization from ``decoder``'s reconstruction (with
            cvpr2015: mean-free, half its contrast, dithered, and the warm schedule
            :func:`pyinvert.decoders.inversion.warm_stages`; see
            :func:`pyinvert.decoders.inversion.warm_start`).

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
    method = _decoders.check_method(method, fn)
    warm = overrides.get("init") == "decoder"
    if warm:
        overrides = {k: v for k, v in overrides.items() if k != "init"}
    if (images is None) == (targets is None):
        raise ValueError(
            f"{fn}: expected exactly one of images or targets, got "
            f"{'both' if images is not None else 'neither'}"
        )
    opts = RunOptions.resolve(
        fn,
        options,
        steps=steps,
        restarts=restarts,
        batch_size=batch_size,
        generator=generator,
        seeds=seeds,
        device=device,
        dtype=dtype,
        backend=backend,
        progress=progress,
        callback=callback,
    )
    dtype = opts.dtype
    rep, rec = common.resolve(
        fn, representation, recipe, opts, weights, overrides, dsift_from_recipe=True
    )
    originals = None
    if images is not None:
        prep = prepare_images(images, rep, fn, opts.device, dtype)
        with torch.no_grad():
            tgt = rep(prep.x)
        originals, (H, W), dev = prep.originals, prep.size, prep.device
    else:
        if not isinstance(targets, Tensor):
            raise TypeError(
                f"{fn}: expected targets to be a torch.Tensor, got {type(targets).__name__}"
            )
        if image_size is None:
            raise ValueError(f"{fn}: expected image_size=(H, W) with targets, got None")
        H, W = (int(v) for v in image_size)
        dev = torch.device(opts.device) if opts.device is not None else targets.device
        tgt = targets.detach().to(device=dev, dtype=dtype)
    B, R = tgt.shape[0], opts.restarts
    C = rep.channels
    if method == "decoder":
        return _decoder_result(decoder, rep, rec, opts, tgt, (H, W), dev, originals, names, fn)
    start, dither = None, 0.0
    if warm:
        # A warm start skips the noise-escaping schedule (pyinvert.decoders.inversion.warm_start);
        # stages given as an override are kept.
        start, warm_rec, dither = _decoders.warm_start(
            decoder, rep, tgt, (H, W), dev, dtype, rec, fn
        )
        if "stages" not in overrides:
            rec = warm_rec
    slices = rep.as_code(tgt, (H, W)).slices
    segments = slices if len(slices) > 1 else None
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{fn}: expected mask to be a Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) not in (tuple(tgt.shape[1:]), tuple(tgt.shape)):
            raise ValueError(
                f"{fn}: expected mask of shape {list(tgt.shape[1:])} (one code), "
                f"got {list(mask.shape)}"
            )
    data_w = _engine.per_row(rec.data_weight, B, 1, "data_weight", dev, dtype, fn)
    priors = common.recipe_priors(rec, B, C, (H, W), dev, dtype, opts.backend, fn)
    learned = not (isinstance(prior, str) and prior == "tv")
    if learned:
        priors = inversion_prior(prior, rec, rep, priors, fn)
    objective = Inversion(tgt, mask=mask, segments=segments) * data_w + priors
    out = common.run(
        fn,
        objective,
        rep,
        rec,
        opts,
        B=B,
        image_size=(H, W),
        device=dev,
        init=start,
        init_noise=dither,
        parameterization=parameterization,
    )
    code_all = out.codes if B * R else tgt
    if B * R:
        targets_rows = tgt.repeat_interleave(R, dim=0) if R > 1 else tgt
        with torch.no_grad():
            fe = Inversion(
                targets_rows.double(),
                mask=None if mask is None else mask.double(),
                segments=segments,
            ).evaluate(code_all.double(), None)[0]
    else:
        fe = torch.zeros(0, dtype=torch.float64)
    fe = torch.where(out.failed.to(fe.device), torch.full_like(fe, float("nan")), fe).cpu()
    settings = {
        "representation": rep.config(),
        "recipe": rec.to_dict(),
        "restarts": R,
        "batch_size": opts.batch_size,
        "image_size": [H, W],
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "backend": opts.backend,
        "sigma": _engine.recipe_scales(rec, C, H, W)["sigma"],
        "iterations": rec.iterations,
        **common.parameterization_settings(parameterization),
    }
    if learned:
        settings["prior"] = priors.describe()
    if warm:
        settings["init"] = "decoder"
    return InversionResult(
        images=per_image(common.images_of(out, rep), B, R),
        feature_error=per_image(fe, B, R),
        loss_history=per_image(out.loss_history, B, R),
        error_history=per_image(out.measure_history, B, R),
        failed=per_image(out.failed, B, R),
        stopped_at=per_image(out.stopped_at, B, R),
        codes=per_image(code_all.detach(), B, R),
        targets=tgt,
        originals=originals,
        settings=settings,
        seconds=out.seconds,
        names=list(names) if names is not None else [],
    )


def _decoder_result(decoder, rep, rec, opts, tgt, size, dev, originals, names, fn):
    """``invert(method="decoder")``: the decoder's reconstruction as an InversionResult."""
    if opts.restarts != 1:
        raise ValueError(
            f"{fn}: method='decoder' gives one reconstruction, got restarts={opts.restarts}"
        )
    images, seconds, source = _decoders.decoder_images(decoder, rep, tgt, size, dev, opts.dtype, fn)
    B = tgt.shape[0]
    with torch.no_grad():
        codes = rep(rep.preprocess(images))
        fe = (
            Inversion(tgt.double()).evaluate(codes.double(), None)[0].cpu() if B else torch.zeros(0)
        )
    empty = torch.zeros(B, 0, dtype=torch.float64)
    settings = {
        "method": "decoder",
        "decoder": source,
        "representation": rep.config(),
        "image_size": list(size),
        "device": str(dev),
        "dtype": str(opts.dtype).replace("torch.", ""),
    }
    return InversionResult(
        images=images.detach(),
        feature_error=fe,
        loss_history=empty,
        error_history=empty.clone(),
        failed=torch.zeros(B, dtype=torch.bool),
        stopped_at=torch.full((B,), -1, dtype=torch.long),
        codes=codes.detach(),
        targets=tgt,
        originals=originals,
        settings=settings,
        seconds=seconds,
        names=list(names) if names is not None else [],
    )
