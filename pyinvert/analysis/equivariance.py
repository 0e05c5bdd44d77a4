"""Equivariance of a representation: Phi(gx) ~ M_g Phi(x), fitted empirically.

M_g is the spatial part of g moved onto the feature grid (:func:`pyinvert.analysis.grids.
warp_grid`: a permutation of cells for flips and rot90, a bilinear resampling otherwise)
followed by a 1 x 1 or k x k channel map with a bias (:class:`~pyinvert.analysis.ridge.
ChannelMap`), fitted by ridge regression over crops of the training photos, and for a CNN
classifier optionally refined on the task loss. Invariance is M_g = I.
"""

from typing import Optional

import torch

from pyinvert.analysis import engine
from pyinvert.analysis.completion import is_classifier, logits
from pyinvert.analysis.features import (
    crop_pairs,
    layer_outputs,
    layers_of,
    load_sources,
    split_sources,
)
from pyinvert.analysis.grids import geometry, warp_grid
from pyinvert.analysis.results import EquivarianceResult
from pyinvert.analysis.transforms import parse_transforms
from pyinvert.representations import make_representation


def prepare(rep, images, size, holdout, device, weights):
    """(rep on device, train photos, test photos, split info, crop size)."""
    rep = make_representation(rep, weights=weights)
    rep = rep.to(device) if device is not None else rep
    sources, names = load_sources(images)
    train, test, split = split_sources(sources, names, holdout)
    stride = max(1, int(round(geometry_stride(rep))))
    if size is None:
        side = min(min(s.shape[-2:]) for s in sources)
        size = max(stride, min(128, int(side / 1.5)) // stride * stride)
    if isinstance(size, bool) or not isinstance(size, int) or size < rep.min_size:
        raise ValueError(
            f"equivariance: expected size to be an int >= {rep.min_size} for "
            f"{getattr(rep, 'name', 'the representation')}, got {size!r}"
        )
    return rep, train, test, split, size


def geometry_stride(rep) -> float:
    """The representation's (deepest) stride in pixels."""
    if getattr(rep, "kind", None) == "cnn":
        return rep.stride
    return getattr(rep, "cell_size", None) or getattr(rep, "step", 1)


def equivariance(
    rep,
    images,
    transforms=("hflip",),
    *,
    method: str = "ridge",
    kernel: int = 1,
    ridge="auto",
    crops: int = 128,
    test_crops: Optional[int] = None,
    size: Optional[int] = None,
    holdout: float = 0.25,
    chunk: int = 16,
    streaming: bool = True,
    epochs: int = 2,
    lr: float = 1e-4,
    generator: Optional[torch.Generator] = None,
    device=None,
    weights="imagenet",
    prior: str = "identity",
) -> EquivarianceResult:
    r"""Fit M_g with Phi(gx) ~ M_g Phi(x) for every layer of ``rep`` and every transformation.

    Args:
        rep: "hog", "hogb", "dsift", "cnn:MODEL:LAYER[,LAYER...]" or a representation module.
        images: a folder of photos, a list of paths, a Tensor [B, C, H, W] in [0, 1] or a list
            of [C, H, W] tensors; crops are drawn from them (see
            :func:`pyinvert.analysis.features.crop_pairs`).
        transforms: names ("hflip", "rot90", "rot45", "scale0.71", "translate0.1,0", "g*h") or
            :class:`~pyinvert.analysis.transforms.Transform`\ s. Default: ('hflip',).
        method: "ridge" (closed form) or "learned" (the ridge map refined by Adam on the
            cross-entropy of the completed network against the network's top-1 on gx; CNN
            classifiers only). Default: "ridge".
        kernel: k of the k x k channel map (1: per cell). Default: 1.
        ridge: regularization relative to the mean feature variance, or "auto" (picked from
            :data:`~pyinvert.analysis.ridge.RIDGE_GRID` by cross-validation over up to five
            folds of the training photos, then a refit on all). Default: "auto".
        crops: training crops. Default: 128.
        test_crops: held-out crops; None: crops // 2. Default: None.
        size: crop side in pixels; None: min(128, smallest side / 1.5) rounded down to a
            multiple of the representation's stride. Default: None.
        holdout: share of the photos held out for testing (at least one; with a single photo
            the test crops are other draws from it). Default: 0.25.
        chunk: crops per batch (the memory bound of the streaming fit). Default: 16.
        streaming: accumulate X^T X per chunk (True) or solve on all rows at once. Default: True.
        epochs: passes of the learned refinement. Default: 2.
        lr: Adam's learning rate of the learned refinement. Default: 0.0001.
        generator: seeds the crops (a seeded run on the CPU is reproducible). Default: None.
        device: where to compute; None: the representation's. Default: None.
        weights: a "cnn:..." representation's weights ("imagenet", None, or a path).
            Default: "imagenet".
        prior: what the ridge penalty pulls the channel map towards: "identity" (M_g = the
            permutation alone) or "zero" (M_g = the training mean). Default: "identity".

    Returns:
        An :class:`~pyinvert.analysis.results.EquivarianceResult`: per layer x transform the
        held-out errors of M_g and of the baselines, top-1 agreements for classifiers, and the
        fitted maps.

    Example:
        >>> res = equivariance("hog", torch.rand(2, 3, 64, 64), ["hflip"], crops=4, size=32,
        ...                    ridge=1e-8, generator=torch.Generator().manual_seed(0))
        >>> res.error("hog", "hflip") < 1e-6
        True

    References:
        K. Lenc and A. Vedaldi, "Understanding image representations by measuring their
        equivariance and equivalence", CVPR 2015, Sec. 2 and 3.
    """
    gen = (
        generator
        if generator is not None
        else torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    )
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"equivariance: expected an odd kernel >= 1, got {kernel!r}")
    _check_count("crops", crops)
    test_crops = max(1, crops // 2) if test_crops is None else test_crops
    _check_count("test_crops", test_crops)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"equivariance: expected chunk to be an int >= 1, got {chunk!r}")
    gs = parse_transforms(transforms)
    if method not in ("ridge", "learned"):
        raise ValueError(f"equivariance: expected method in ('ridge', 'learned'), got {method!r}")
    rep, train, test, split, size = prepare(rep, images, size, holdout, device, weights)
    if method == "learned" and not is_classifier(rep):
        raise ValueError(
            f"equivariance: method='learned' needs a CNN classifier "
            f"representation, got {getattr(rep, 'name', type(rep).__name__)}"
        )
    p = next(rep.parameters(), None)
    dev = p.device if p is not None else torch.device(device or "cpu")
    layers = layers_of(rep)
    classifier = is_classifier(rep)
    geos = {ly: geometry(rep, ly, (size, size)) for ly in layers}
    if prior not in ("identity", "zero"):
        raise ValueError(f"equivariance: expected prior in ('identity', 'zero'), got {prior!r}")
    problems = {
        (ly, g.name): engine.Problem((ly, g.name), kernel, (rep, ly) if classifier else None, prior)
        for ly in layers
        for g in gs
    }

    def batches(sources, n, seed):
        g_local = torch.Generator().manual_seed(seed)
        for b in engine.chunked(n, chunk):
            x, gx = crop_pairs(sources, gs, b, size, g_local)
            with torch.no_grad():
                fx = layer_outputs(rep, rep.preprocess(x.to(dev)))
                out = {}
                for g in gs:
                    xg = rep.preprocess(gx[g.name].to(dev))
                    fg = layer_outputs(rep, xg)
                    labels = logits(rep, xg).argmax(1) if classifier else None
                    for ly in layers:
                        warped, valid = warp_grid(
                            fx[ly], g, geos[ly], (size, size), fg[ly].shape[-2:]
                        )
                        out[(ly, g.name)] = engine.Chunk(
                            warped, valid, fg[ly], fx[ly], labels, (size, size)
                        )
            yield out

    seeds = torch.randint(0, 2**31, (3,), generator=gen).tolist()

    info = engine.run_problems(
        problems,
        engine.train_batches(batches, train, crops, ridge, seeds),
        lambda: batches(test, test_crops, seeds[1]),
        method=method,
        ridge=ridge,
        streaming=streaming,
        epochs=epochs,
        lr=lr,
        generator=gen,
    )
    rows = []
    for ly in layers:
        for g in gs:
            m = info["metrics"][(ly, g.name)]
            rows.append({"layer": ly, "transform": g.name, "exact": g.exact, **m})
    settings = {
        "representation": rep.config() if hasattr(rep, "config") else str(rep),
        "transforms": [g.name for g in gs],
        "method": method,
        "kernel": kernel,
        "ridge": ridge,
        "prior": prior,
        "crops": crops,
        "test_crops": test_crops,
        "size": size,
        "chunk": chunk,
        "streaming": streaming,
        **split,
        "geometry": {ly: geos[ly].to_dict() for ly in layers},
        "fit_seconds": info["fit"]["seconds"],
        "ridge_chosen": info["fit"]["ridge"],
        "rows": info["fit"]["rows"],
        "learn": info.get("learn"),
        "evaluate_seconds": info["evaluate_seconds"],
    }
    if method == "learned":
        settings.update(epochs=epochs, lr=lr)
    maps = {k: p.map for k, p in problems.items()}
    return EquivarianceResult(
        rows=rows,
        maps=maps,
        settings=settings,
        representation=rep,
        geometry=geos,
        transforms={g.name: g for g in gs},
    )


def _check_count(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"equivariance: expected {name} to be an int >= 1, got {v!r}")
