"""Streaming and in-memory ridge regression, and the channel map (pyinvert.analysis.ridge)."""

import pytest
import torch

from pyinvert.analysis.ridge import (
    ChannelMap,
    RidgeAccumulator,
    identity_prior,
    ridge_batch,
    rows,
    select_ridge,
)


def _data(n=400, d=6, e=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 5  # far from 0: shifts matter
    Y = (
        X @ torch.randn(d, e, generator=g, dtype=torch.float64)
        + 2
        + 0.3 * torch.randn(n, e, generator=g, dtype=torch.float64)
    )
    return X, Y


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 1.0])
@pytest.mark.parametrize("prior", [False, True])
def test_streaming_equals_batch(ridge, prior):
    X, Y = _data(e=6)
    P = identity_prior(6, 6) if prior else None
    acc = RidgeAccumulator(6, 6)
    for i in range(0, 400, 37):  # uneven chunks
        acc.update(X[i : i + 37], Y[i : i + 37])
    acc.update(X[:0], Y[:0])  # an empty chunk is a no-op
    W1, b1 = acc.solve(ridge, P)
    W2, b2 = ridge_batch(X, Y, ridge, P)
    torch.testing.assert_close(W1, W2, rtol=0, atol=1e-9)
    torch.testing.assert_close(b1, b2, rtol=0, atol=1e-8)


def test_ridge_recovers_a_linear_map_and_shrinks_to_the_prior():
    X, _ = _data()
    W0 = torch.randn(4, 6, dtype=torch.float64)
    W, b = ridge_batch(X, X @ W0.T + 1.5, 1e-10)
    torch.testing.assert_close(W, W0, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, torch.full((4,), 1.5, dtype=torch.float64), rtol=0, atol=1e-5)
    Xs, Ys = _data(e=6)
    W_big, _ = ridge_batch(Xs, Ys, 1e8, identity_prior(6, 6))
    torch.testing.assert_close(W_big, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-5)
    W_zero, _ = ridge_batch(Xs, Ys, 1e8)
    assert float(W_zero.abs().max()) < 1e-5


def test_validation_error_from_the_sums_and_ridge_selection():
    X, Y = _data()
    tr, va = RidgeAccumulator(6, 4), RidgeAccumulator(6, 4)
    tr.update(X[:300], Y[:300])
    va.share_shift(tr)
    va.update(X[300:], Y[300:])
    W, b = tr.solve(0.1)
    direct = float(((X[300:] @ W.T + b - Y[300:]) ** 2).sum())
    assert va.error(W, b) == pytest.approx(direct, rel=1e-10)
    best, curve = select_ridge(tr, va)
    assert best <= 1e-2 and curve["100"] > curve["1e-06"]  # a well-posed problem: small ridge
    merged = tr.merge(va)
    torch.testing.assert_close(merged.solve(1e-3)[0], ridge_batch(X, Y, 1e-3)[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("kernel", [1, 3])
def test_channel_map_applies_the_fitted_rows(kernel):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[0, 0] = False
    X, Y = rows(x, y, valid, kernel)
    assert X.shape == (2 * 29, 3 * kernel * kernel) and Y.shape == (58, 4)
    W, b = ridge_batch(X, Y, 1e-3)
    m = ChannelMap(3, 4, kernel).double().set_linear(W, b)
    out = m(x).permute(0, 2, 3, 1)[:, valid].reshape(-1, 4)
    torch.testing.assert_close(out, X @ W.T + b, rtol=0, atol=1e-12)
    # a fresh square map is the identity (also for k x k)
    z = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(ChannelMap(3, 3, kernel)(z), z)


def test_errors():
    with pytest.raises(ValueError, match="ChannelMap: expected an odd kernel >= 1, got 2"):
        ChannelMap(3, 3, 2)
    with pytest.raises(
        ValueError,
        match=r"RidgeAccumulator: the regression input has D k\^2 = "
        r"9000 dimensions",
    ):
        RidgeAccumulator(9000, 3)
    acc = RidgeAccumulator(3, 2)
    with pytest.raises(
        ValueError,
        match=r"RidgeAccumulator.update: expected X \[N, 3\] and Y "
        r"\[N, 2\], got \[4, 2\] and \[4, 2\]",
    ):
        acc.update(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="RidgeAccumulator.solve: no rows were accumulated"):
        acc.solve()
    with pytest.raises(ValueError, match="ridge: expected ridge >= 0, got -1"):
        ridge_batch(torch.rand(5, 2), torch.rand(5, 2), -1)
    with pytest.raises(ValueError, match="ridge_batch: expected at least one row"):
        ridge_batch(torch.zeros(0, 2), torch.zeros(0, 2))


def test_merge_and_minus_with_different_shifts_are_exact():
    X, Y = _data()
    parts = []
    for i in range(0, 400, 100):  # each accumulator has its own shift (its first chunk's mean)
        a = RidgeAccumulator(6, 4)
        a.update(X[i : i + 100] * (1 + i / 100), Y[i : i + 100])
        parts.append(a)
    Xs = torch.cat([X[i : i + 100] * (1 + i / 100) for i in range(0, 400, 100)])
    total = RidgeAccumulator(6, 4)
    for a in parts:
        total.merge(a)
    torch.testing.assert_close(total.solve(1e-3)[0], ridge_batch(Xs, Y, 1e-3)[0], rtol=0, atol=1e-9)
    rest = total.minus(parts[0])
    torch.testing.assert_close(
        rest.solve(1e-3)[0], ridge_batch(Xs[100:], Y[100:], 1e-3)[0], rtol=0, atol=1e-9
    )
    W, b = rest.solve(0.1)
    direct = float(((Xs[:100] @ W.T + b - Y[:100]) ** 2).sum())
    assert parts[0].error(W, b) == pytest.approx(direct, rel=1e-10)
