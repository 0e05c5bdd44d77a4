"""Metrics: the normalized feature error, the Table 1 error, PSNR and SSIM."""

import doctest
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyinvert import metrics


def test_feature_error():
    t = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    c = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    assert metrics.feature_error(c, t).tolist() == [16 / 25, 0.0]


def test_table1_error_matches_pairwise_definition():
    gen = torch.Generator().manual_seed(0)
    y0 = torch.rand(5, 3, 4, generator=gen)
    y = y0 + 0.1 * torch.randn(5, 3, 4, generator=gen)
    flat = y0.reshape(5, -1).double().numpy()
    d2 = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    norm = d2.mean()  # all ordered pairs, diagonal included (the authors' mean(pdist2.^2))
    want = ((y - y0).reshape(5, -1).double().numpy() ** 2).sum(1) / norm
    got = metrics.table1_error(y, y0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert float(metrics.pairwise_normalizer(y0)) == pytest.approx(norm, rel=1e-10)


def test_table1_error_needs_two_codes():
    with pytest.raises(ValueError, match="table1_error: expected at least 2 target codes"):
        metrics.table1_error(torch.ones(1, 3), torch.ones(1, 3))


def test_shape_mismatch_errors():
    with pytest.raises(
        ValueError,
        match=r"feature_error: expected code and target of the same "
        r"shape, got \[2, 3\] and \[2, 4\]",
    ):
        metrics.feature_error(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(TypeError, match="psnr: expected x to be a torch.Tensor"):
        metrics.psnr(np.ones((1, 1, 4, 4)), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"ssim: expected x of shape \(B, C, H, W\), got \[4, 4\]"):
        metrics.ssim(torch.ones(4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="ssim: expected H and W >= window_size=11, got H=8"):
        metrics.ssim(torch.ones(1, 1, 8, 20), torch.ones(1, 1, 8, 20))


def test_psnr_values():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1
    y[1] += 0.01
    np.testing.assert_allclose(metrics.psnr(x, y).numpy(), [20.0, 40.0], rtol=1e-6)
    assert torch.isinf(metrics.psnr(x, x)).all()
    assert float(metrics.psnr(x[:1] * 255, y[:1] * 255, data_range=255)) == pytest.approx(20.0)


def _ssim_numpy(x, y, L=1.0):
    """Independent SSIM: explicit loops over valid 11x11 windows with the Gaussian weights."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    H, W = x.shape
    vals = []
    for i in range(H - 10):
        for j in range(W - 10):
            a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va = (w * (a - ma) ** 2).sum()
            vb = (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return np.mean(vals)


def test_ssim_against_direct_definition():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 16, 19, generator=gen, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    got = metrics.ssim(x, y).numpy()
    want = [
        np.mean([_ssim_numpy(x[b, c].numpy(), y[b, c].numpy()) for c in range(2)]) for b in range(2)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_ssim_properties():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 32, 32, generator=gen)
    assert float(metrics.ssim(x, x)) == pytest.approx(1.0)
    small = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    big = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert float(metrics.ssim(small, x)) > float(metrics.ssim(big, x))
    assert float(metrics.ssim(small, x)) == pytest.approx(float(metrics.ssim(x, small)))
    assert metrics.ssim(torch.zeros(0, 1, 16, 16), torch.zeros(0, 1, 16, 16)).shape == (0,)


def test_doctests():
    failures, _ = doctest.testmod(metrics, extraglobs={"torch": torch})
    assert failures == 0


def _ssim_whole(x, y, window_size=11, sigma=1.5, k1=0.01, k2=0.03):
    """SSIM in one pass over whole float64 images (the formula of metrics.ssim before it was
    computed in strips): the oracle of the bounded-memory version."""
    B, C, H, W = x.shape
    r = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    g = torch.exp(-r * r / (2 * sigma * sigma))
    g = g / g.sum()
    x = x.double().reshape(B * C, 1, H, W)
    y = y.double().reshape(B * C, 1, H, W)

    def blur(t):
        return F.conv2d(F.conv2d(t, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + k1**2) * (2 * sxy + k2**2)) / (
        (mx * mx + my * my + k1**2) * (sxx + syy + k2**2)
    )
    return s.reshape(B, C, -1).mean(2).mean(1)


@pytest.mark.parametrize("chunk", [7, 300, 1 << 20])
@pytest.mark.parametrize("shape", [(2, 3, 40, 37), (1, 1, 11, 11), (1, 3, 64, 200)])
def test_strips_equal_one_pass(monkeypatch, chunk, shape):
    """Issue 11.10: psnr and ssim work in bounded chunks; the result is the one-pass one."""
    monkeypatch.setattr(metrics, "_CHUNK", chunk)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)
    torch.testing.assert_close(metrics.ssim(x, y), _ssim_whole(x, y), rtol=1e-12, atol=1e-14)
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    torch.testing.assert_close(
        metrics.psnr(x, y), 10 * torch.log10(1 / mse), rtol=1e-12, atol=1e-12
    )


def test_ssim_of_a_large_image_in_bounded_memory():
    """Issue 11.10: an 8000^2 reconstruction died in SSIM (float64 maps of the whole image).
    A 2500^2 image in a fresh process: the peak memory grows by far less than the one-pass
    version's ~500 MB (ten float64 maps of 50 MB)."""
    code = (
        "import resource, torch\n"
        "from pyinvert import metrics\n"
        "x = torch.rand(1, 1, 2500, 2500); y = x.clone()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "s = float(metrics.ssim(x, y)); p = float(metrics.psnr(x, y + 0.1))\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(s, p, (peak - base) // 1024)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    s, p, grown_mb = proc.stdout.split()
    assert float(s) == pytest.approx(1.0) and float(p) == pytest.approx(20.0, abs=1e-3)
    assert int(grown_mb) < 250, f"ssim/psnr grew the peak memory by {grown_mb} MB"
