"""Equivalence of two representations and stitching: Phi_B(x) ~ E Phi_A(x).

E is A's grid resampled onto B's (bilinear by the two grids' geometry; the identity when they
coincide) followed by a 1 x 1 (or k x k) channel map, fitted by ridge regression, or refined on
the task loss (the cross-entropy of B's network completed from E Phi_A(x) against B's top-1 on
x: the stitched network A-then-B). Baselines: the naive stitch (Phi_A(x) fed to B unchanged,
where the shapes agree) and the stitch from an untrained network.
"""

from typing import Optional

import torch

from pyinvert.analysis import engine
from pyinvert.analysis.completion import is_classifier, logits, untrained_copy
from pyinvert.analysis.equivariance import geometry_stride, _check_count
from pyinvert.analysis.features import (
    crop_pairs,
    layer_outputs,
    layers_of,
    load_sources,
    split_sources,
)
from pyinvert.analysis.grids import geometry, warp_grid
from pyinvert.analysis.results import EquivalenceResult
from pyinvert.analysis.ridge import identity_prior
from pyinvert.analysis.transforms import IDENTITY
from pyinvert.representations import make_representation


def equivalence(
    rep_a,
    rep_b,
    images,
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
    untrained: bool = True,
    generator: Optional[torch.Generator] = None,
    device=None,
    weights="imagenet",
    prior: str = "identity",
) -> EquivalenceResult:
    """Fit the stitch E with Phi_B(x) ~ E Phi_A(x) (one layer each) and measure it.

    Args:
        rep_a: the source representation (a name, e.g. "hog" or "cnn:mobilenet_v2:features.6",
            or a module with one layer).
        rep_b: the target representation.
        images: photos, as :func:`~pyinvert.analysis.equivariance.equivariance` takes them.
        method: "ridge" or "learned" (B must be a CNN classifier). Default: "ridge".
        kernel: k of the k x k channel map. Default: 1.
        ridge: relative ridge, or "auto" (cross-validated over folds of the training
            photos). Default: "auto".
        crops: training crops. Default: 128.
        test_crops: held-out crops; None: crops // 2. Default: None.
        size: crop side; None: as equivariance's, for the larger of the two strides.
            Default: None.
        holdout: share of the photos held out. Default: 0.25.
        chunk: crops per batch. Default: 16.
        streaming: streaming (True) or in-memory ridge. Default: True.
        epochs: passes of the learned refinement. Default: 2.
        lr: its Adam learning rate. Default: 0.0001.
        untrained: also fit the stitch from an untrained copy of A's network (of B's when A is
            not a CNN). Default: True.
        generator: seeds the crops and the untrained copy. Default: None.
        device: where to compute. Default: None.
        weights: weights of "cnn:..." names. Default: "imagenet".
        prior: the ridge penalty's target, "identity" (the naive stitch, where the channels
            agree) or "zero". Default: "identity".

    Returns:
        An :class:`~pyinvert.analysis.results.EquivalenceResult` (rows "trained" and
        "untrained").

    Example:
        >>> res = equivalence("hog", "hog", torch.rand(2, 3, 64, 64), crops=4, size=32,
        ...                   untrained=False, generator=torch.Generator().manual_seed(0))
        >>> res.row()["error_map"] < 1e-6
        True

    References:
        K. Lenc and A. Vedaldi, "Understanding image representations by measuring their
        equivariance and equivalence", CVPR 2015, Sec. 2.2 and 4 (stitching, Tab. 4).
    """
    gen = (
        generator
        if generator is not None
        else torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    )
    _check_count("crops", crops)
    test_crops = max(1, crops // 2) if test_crops is None else test_crops
    _check_count("test_crops", test_crops)
    if method not in ("ridge", "learned"):
        raise ValueError(f"equivalence: expected method in ('ridge', 'learned'), got {method!r}")
    if prior not in ("identity", "zero"):
        raise ValueError(f"equivalence: expected prior in ('identity', 'zero'), got {prior!r}")
    rep_a = make_representation(rep_a, weights=weights)
    rep_b = make_representation(rep_b, weights=weights)
    if device is not None:
        rep_a, rep_b = rep_a.to(device), rep_b.to(device)
    for name, r in (("rep_a", rep_a), ("rep_b", rep_b)):
        if len(layers_of(r)) != 1:
            raise ValueError(
                f"equivalence: expected {name} with one layer, got {list(layers_of(r))}"
            )
    (la,), (lb,) = layers_of(rep_a), layers_of(rep_b)
    classifier = is_classifier(rep_b)
    if method == "learned" and not classifier:
        raise ValueError(
            f"equivalence: method='learned' needs a CNN classifier as rep_b, got "
            f"{getattr(rep_b, 'name', type(rep_b).__name__)}"
        )
    sources, names = load_sources(images)
    train, test, split = split_sources(sources, names, holdout)
    stride = max(1, int(round(max(geometry_stride(rep_a), geometry_stride(rep_b)))))
    if size is None:
        side = min(min(s.shape[-2:]) for s in sources)
        size = max(stride, min(128, int(side / 1.5)) // stride * stride)
    min_size = max(rep_a.min_size, rep_b.min_size)
    if isinstance(size, bool) or not isinstance(size, int) or size < min_size:
        raise ValueError(f"equivalence: expected size to be an int >= {min_size}, got {size!r}")
    sources_of = {"trained": rep_a}
    base = rep_a if getattr(rep_a, "kind", None) == "cnn" else rep_b
    if untrained and getattr(base, "kind", None) == "cnn":
        seed = int(torch.randint(0, 2**31, (), generator=gen))
        calib, _ = crop_pairs(train, [], min(crops, 32), size, torch.Generator().manual_seed(seed))
        p = next(base.parameters(), None)
        sources_of["untrained"] = untrained_copy(
            base, seed=seed, calibration=calib.to(p.device if p is not None else "cpu")
        )
    dev = next((p.device for p in rep_b.parameters()), torch.device(device or "cpu"))
    geo_b = geometry(rep_b, lb, (size, size))
    geos = {k: geometry(r, layers_of(r)[0], (size, size)) for k, r in sources_of.items()}
    problems = {
        (k,): engine.Problem((k,), kernel, (rep_b, lb) if classifier else None, prior)
        for k in sources_of
    }

    def batches(srcs, n, seed):
        g_local = torch.Generator().manual_seed(seed)
        for b in engine.chunked(n, chunk):
            x, _ = crop_pairs(srcs, [], b, size, g_local)
            with torch.no_grad():
                xb = rep_b.preprocess(x.to(dev))
                fb = layer_outputs(rep_b, xb)[lb]
                labels = logits(rep_b, xb).argmax(1) if classifier else None
                out = {}
                for k, r in sources_of.items():
                    fa = layer_outputs(r, r.preprocess(x.to(dev)))[layers_of(r)[0]]
                    warped, valid = warp_grid(
                        fa, IDENTITY, geos[k], (size, size), fb.shape[-2:], geo_out=geo_b
                    )
                    out[(k,)] = engine.Chunk(
                        warped,
                        valid,
                        fb,
                        fa if fa.shape == fb.shape else None,
                        labels,
                        (size, size),
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
    for k, r in sources_of.items():
        rows.append(
            {
                "stitch": k,
                "layer_a": f"{getattr(r, 'name', la)}",
                "layer_b": getattr(rep_b, "name", lb),
                **info["metrics"][(k,)],
            }
        )
    W = problems[("trained",)].map.linear()[0]
    d = min(W.shape)
    settings = {
        "rep_a": rep_a.config() if hasattr(rep_a, "config") else str(rep_a),
        "rep_b": rep_b.config() if hasattr(rep_b, "config") else str(rep_b),
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
        "geometry": {"a": geos["trained"].to_dict(), "b": geo_b.to_dict()},
        "fit_seconds": info["fit"]["seconds"],
        "ridge_chosen": info["fit"]["ridge"],
        "rows": info["fit"]["rows"],
        "learn": info.get("learn"),
        "evaluate_seconds": info["evaluate_seconds"],
        "identity_distance": _identity_distance(W, kernel)
        if W.shape[0] == W.shape[1] // (kernel * kernel)
        else None,
        "map_shape": list(W.shape),
        "rank_bound": d,
    }
    if "untrained" in sources_of:
        settings["untrained_source"] = sources_of["untrained"].name
    return EquivalenceResult(
        rows=rows,
        maps={k: p.map for k, p in problems.items()},
        settings=settings,
        rep_a=rep_a,
        rep_b=rep_b,
        geometry=(geos["trained"], geo_b),
    )


def _identity_distance(W, kernel) -> float:
    """|W - I|_F / |I|_F of a square stitch (centre tap)."""
    P = identity_prior(W.shape[0], W.shape[0], kernel).to(W)
    return float((W - P).norm() / P.norm())
