"""The fitting and evaluation loop shared by :func:`equivariance` and :func:`equivalence`.

A *problem* is one map to fit: for M_g, the rows of Phi(gx) against g moved onto Phi(x)'s
grid; for a stitch E, Phi_B(x) against Phi_A(x) resampled onto B's grid. Batches arrive as
``{key: Chunk}``; the loop fits every problem's :class:`~pyinvert.analysis.ridge.ChannelMap`
by streaming (``RidgeAccumulator``) or in-memory (``ridge_batch``) ridge regression, optionally
refines it on the task loss (``method="learned"``), then sums the errors and top-1 agreements of
the map and of the baselines over the held-out batches.
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.analysis.completion import complete
from pyinvert.analysis.ridge import (
    RIDGE_GRID,
    ChannelMap,
    RidgeAccumulator,
    identity_prior,
    ridge_batch,
    rows,
)


@dataclass
class Chunk:
    """One batch of one problem.

    Attributes:
        x: the input grid moved onto the output grid, [B, D, h, w] (zeros at invalid cells).
        valid: [h, w] bool, the cells whose source is inside the input grid.
        y: the target grid, [B, D', h, w].
        identity: the unmoved input grid when it has y's shape (the M = I / naive baseline),
            else None.
        labels: the target network's top-1 on the target image, [B] (classifiers), or None.
        image_size: (H, W) of the target images (for the completion).
    """

    x: Tensor
    valid: Tensor
    y: Tensor
    identity: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    image_size: tuple = ()


@dataclass
class Problem:
    """A map to fit and where to complete its output (None: no classifier)."""

    key: tuple
    kernel: int
    completion: Optional[tuple] = None  # (rep, layer)
    prior: str = "identity"  # "identity" (where the shapes agree) or "zero"
    map: Optional[ChannelMap] = None
    mean_y: Optional[Tensor] = None
    acc: Optional[RidgeAccumulator] = None
    stored: List = field(default_factory=list)
    rows_x: List = field(default_factory=list)
    rows_y: List = field(default_factory=list)


def fit(
    problems: Dict[tuple, Problem],
    batches: Iterable[Dict[tuple, Chunk]],
    *,
    ridge,
    streaming: bool,
    keep: bool,
) -> dict:
    """Fit every problem's map by ridge regression; ``keep`` stores the chunks (for the
    learned refinement). ``batches`` yields ``{key: Chunk}`` or ``({key: Chunk}, fold)``.

    With ``ridge="auto"`` the relative ridge of :data:`~pyinvert.analysis.ridge.RIDGE_GRID`
    is chosen by cross-validation over the folds (the photos are dealt into up to five folds
    by :func:`train_batches`; plain batches: chunk i in fold i mod 5): for each ridge, the sum
    over folds of the error on the fold of the map fitted on the others, computed from the
    per-fold sums alone when streaming. The map is then refitted on all folds. Returns timing,
    row counts and the ridges chosen (with their cross-validated relative errors)."""
    auto = ridge == "auto"
    if not auto and (
        isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0
    ):
        raise ValueError(f"fit: expected ridge to be a float >= 0 or 'auto', got {ridge!r}")
    t0 = time.perf_counter()
    n_rows: Dict[tuple, int] = {k: 0 for k in problems}
    folds: Dict[tuple, Dict[int, object]] = {k: {} for k in problems}
    for i, batch in enumerate(batches):
        if isinstance(batch, tuple):
            batch, fold = batch
        else:
            fold = i % 5
        fold = int(fold) if auto else 0
        for key, ch in batch.items():
            p = problems[key]
            X, Y = rows(ch.x.double(), ch.y.double(), ch.valid, p.kernel)
            n_rows[key] += X.shape[0]
            f = folds[key]
            if streaming:
                if fold not in f:
                    f[fold] = RidgeAccumulator(X.shape[1], Y.shape[1], device=X.device)
                f[fold].update(X, Y)
            else:
                f.setdefault(fold, ([], []))
                f[fold][0].append(X)
                f[fold][1].append(Y)
            if keep:
                p.stored.append(
                    Chunk(ch.x.detach(), ch.valid, ch.y.detach(), None, ch.labels, ch.image_size)
                )
    chosen = {}
    for key, p in problems.items():
        if n_rows[key] == 0:
            raise ValueError(
                f"fit: no valid cell to fit {key} (the transformation moves every "
                f"cell off the grid?)"
            )
        f = {
            k: v
            for k, v in folds[key].items()
            if (v.n if streaming else sum(x.shape[0] for x in v[0]))
        }
        any_fold = next(iter(f.values()))
        d_x = any_fold.sx.shape[0] if streaming else any_fold[0][0].shape[1]
        d_out = any_fold.sy.shape[0] if streaming else any_fold[1][0].shape[1]
        d_in = d_x // (p.kernel**2)
        dev = any_fold.sx.device if streaming else any_fold[0][0].device
        P = identity_prior(d_in, d_out, p.kernel) if p.prior == "identity" else None
        P = P.to(dev) if P is not None else None
        r = ridge
        if streaming:
            total = RidgeAccumulator(d_x, d_out, device=dev)
            for acc in f.values():
                total.merge(acc)
            if auto and len(f) >= 2:
                r, curve = _cross_validate_streaming(total, f, P)
                chosen[str(key)] = {"ridge": r, "cv_error": curve, "folds": len(f)}
            elif auto:
                r = 1e-3
            W, b = total.solve(r, P)
            p.mean_y = total.mean_y
        else:
            Xs = {k: torch.cat(v[0]) for k, v in f.items()}
            Ys = {k: torch.cat(v[1]) for k, v in f.items()}
            if auto and len(f) >= 2:
                r, curve = _cross_validate_batch(Xs, Ys, P)
                chosen[str(key)] = {"ridge": r, "cv_error": curve, "folds": len(f)}
            elif auto:
                r = 1e-3
            X, Y = torch.cat(list(Xs.values())), torch.cat(list(Ys.values()))
            W, b = ridge_batch(X, Y, r, P)
            p.mean_y = Y.mean(0)
        chosen.setdefault(str(key), {"ridge": r})
        chosen[str(key)]["prior"] = "identity" if P is not None else "zero"
        p.map = ChannelMap(d_in, W.shape[0], p.kernel).to(W.device).set_linear(W, b)
    return {
        "seconds": time.perf_counter() - t0,
        "rows": {str(k): v for k, v in n_rows.items()},
        "ridge": chosen,
    }


def _cross_validate_streaming(total: RidgeAccumulator, folds: dict, prior):
    errs = {r: 0.0 for r in RIDGE_GRID}
    den = 0.0
    for acc in folds.values():
        rest = total.minus(acc)
        if rest.n == 0:
            continue
        den += acc.error(
            torch.zeros(
                acc.sy.shape[0], acc.sx.shape[0], dtype=torch.float64, device=acc.sx.device
            ),
            rest.mean_y,
        )
        for r in RIDGE_GRID:
            errs[r] += acc.error(*rest.solve(r, prior))
    best = min(errs, key=lambda k: errs[k])
    return best, {f"{r:g}": e / max(den, 1e-300) for r, e in errs.items()}


def _cross_validate_batch(Xs: dict, Ys: dict, prior):
    errs = {r: 0.0 for r in RIDGE_GRID}
    den = 0.0
    for k in Xs:
        Xr = torch.cat([Xs[j] for j in Xs if j != k])
        Yr = torch.cat([Ys[j] for j in Ys if j != k])
        den += float(((Ys[k] - Yr.mean(0)) ** 2).sum())
        for r in RIDGE_GRID:
            W, b = ridge_batch(Xr, Yr, r, prior)
            errs[r] += float(((Xs[k] @ W.T + b - Ys[k]) ** 2).sum())
    best = min(errs, key=lambda k: errs[k])
    return best, {f"{r:g}": e / max(den, 1e-300) for r, e in errs.items()}


def _fill(pred: Tensor, valid: Tensor, mean_y: Tensor) -> Tensor:
    """pred at valid cells, the training mean elsewhere (what the completion is fed)."""
    m = valid.to(pred.device).view(1, 1, *valid.shape)
    return torch.where(m, pred, mean_y.to(pred.dtype).view(1, -1, 1, 1).expand_as(pred))


def learn(
    problems: Dict[tuple, Problem], *, epochs: int, lr: float, generator: torch.Generator
) -> dict:
    """Refine each classifier problem's map on the task loss: the cross-entropy of the network
    completed from the mapped code against the target network's top-1 (Lenc & Vedaldi's
    learned maps; the ridge solution is the initialization)."""
    t0 = time.perf_counter()
    losses = {}
    for key, p in problems.items():
        if p.completion is None:
            raise ValueError(
                f"learn: method='learned' needs a CNN classifier as the target "
                f"representation, {key} has none (use method='ridge')"
            )
        rep, layer = p.completion
        m = p.map.float().requires_grad_(True)
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        hist = []
        for _ in range(epochs):
            order = torch.randperm(len(p.stored), generator=generator).tolist()
            for i in order:
                ch = p.stored[i]
                pred = _fill(m(ch.x.float()), ch.valid, p.mean_y.float())
                loss = F.cross_entropy(complete(rep, layer, pred, ch.image_size), ch.labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
                hist.append(float(loss.detach()))
        m.requires_grad_(False)
        p.stored = []
        losses[str(key)] = {"first": hist[0] if hist else None, "last": hist[-1] if hist else None}
    return {"seconds": time.perf_counter() - t0, "loss": losses}


def evaluate(problems: Dict[tuple, Problem], batches: Iterable[Dict[tuple, Chunk]]) -> dict:
    """{key: metrics}: normalized errors ``sum |pred - y|^2 / sum |y|^2`` over the valid cells
    of the held-out batches for the map, the input moved only ("permutation"), the unmoved input
    ("identity", M = I) and the training mean ("none"), and with a classifier the top-1
    agreement of the completed network with the target network for each."""
    sums: Dict[tuple, Dict[str, float]] = {}
    for batch in batches:
        for key, ch in batch.items():
            p = problems[key]
            s = sums.setdefault(key, {})
            y = ch.y.double()
            v = ch.valid.to(y.device).view(1, 1, *ch.valid.shape).to(y.dtype)
            with torch.no_grad():
                pred = p.map.double()(ch.x.double())
            mean = p.mean_y.double().view(1, -1, 1, 1).expand_as(y)
            cands = {"map": pred, "none": mean}
            if ch.x.shape == y.shape:
                cands["permutation"] = ch.x.double()
            if ch.identity is not None and ch.identity.shape == y.shape:
                cands["identity"] = ch.identity.double()
            _add(s, "den", float((v * y * y).sum()))
            _add(s, "cells", float(v.sum()) * y.shape[0])
            for name, c in cands.items():
                _add(s, f"err_{name}", float((v * (c - y) ** 2).sum()))
            if p.completion is not None and ch.labels is not None:
                rep, layer = p.completion
                with torch.no_grad():
                    for name, c in cands.items():
                        if name == "none":  # one constant code: completed once
                            if "none_label" not in s:
                                s["none_label"] = complete(
                                    rep, layer, c[:1].float(), ch.image_size
                                ).argmax(1)
                            _add(s, "agree_none", float((ch.labels == s["none_label"]).sum()))
                            continue
                        code = c if name == "identity" else _fill(c, ch.valid, p.mean_y.double())
                        top = complete(rep, layer, code.float(), ch.image_size).argmax(1)
                        _add(s, f"agree_{name}", float((top == ch.labels).sum()))
                _add(s, "images", float(y.shape[0]))
    out = {}
    for key, s in sums.items():
        r = {"cells": int(s["cells"])}
        for name in ("map", "permutation", "identity", "none"):
            if f"err_{name}" in s:
                r[f"error_{name}"] = s[f"err_{name}"] / max(s["den"], 1e-300)
            if f"agree_{name}" in s:
                r[f"top1_{name}"] = s[f"agree_{name}"] / s["images"]
        if "images" in s:
            r["images"] = int(s["images"])
        out[key] = r
    return out


def _add(d, k, v):
    d[k] = d.get(k, 0.0) + v


def chunked(n: int, size: int) -> List[int]:
    """Chunk sizes summing to n."""
    return [min(size, n - i) for i in range(0, n, size)]


def run_problems(
    problems,
    train_batches: Callable,
    test_batches: Callable,
    *,
    method: str,
    ridge: float,
    streaming: bool,
    epochs: int,
    lr: float,
    generator: torch.Generator,
) -> dict:
    """fit (+ learn) + evaluate; the batch arguments are callables returning iterables."""
    if method not in ("ridge", "learned"):
        raise ValueError(f"expected method in ('ridge', 'learned'), got {method!r}")
    info = {
        "fit": fit(
            problems, train_batches(), ridge=ridge, streaming=streaming, keep=method == "learned"
        )
    }
    if method == "learned":
        info["learn"] = learn(problems, epochs=epochs, lr=lr, generator=generator)
    t0 = time.perf_counter()
    info["metrics"] = evaluate(problems, test_batches())
    info["evaluate_seconds"] = time.perf_counter() - t0
    return info


def train_batches(
    batches: Callable, train: list, crops: int, ridge, seeds, max_folds: int = 5
) -> Callable:
    """The training batches, as a callable. With ``ridge="auto"`` and at least two training
    photos, the photos are dealt into ``min(max_folds, photos)`` folds (photo i into fold
    i mod F) and each fold's crops (a share of ``crops``) come as ``(chunk, fold)``, so that
    :func:`fit` cross-validates the ridge across photos; ``batches(photos, n, seed)`` yields
    chunks."""

    def gen():
        if ridge != "auto" or len(train) < 2 or crops < 2:
            yield from batches(train, crops, seeds[0])
            return
        F = min(max_folds, len(train), crops)
        for f in range(F):
            n = crops // F + (1 if f < crops % F else 0)
            yield from ((b, f) for b in batches(train[f::F], n, seeds[0] + 7919 * f))

    return gen
