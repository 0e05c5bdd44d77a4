"""Dense SIFT on CUDA against the CPU kernels on the same inputs (see test_cuda_ops.py for the
tolerances and the helpers): descriptors and histograms bit-identical in both precisions and both
windows, nearly flat images included; gradients; gradcheck and opcheck; layouts, empty batches,
determinism; the device checks. Marked ``cuda``: skipped without a CUDA device."""

import itertools

import numpy as np
import pytest
import torch

import pyinvert
from pyinvert import reference
from tests.test_cuda_ops import (
    BACKWARD_TOL,
    DTYPES,
    assert_equal,
    cuda_kernels,  # noqa: F401 (a fixture)
    gen,  # noqa: F401
    grad_of,
    layouts,
    rel_max,
    weights_for,
)

pytestmark = pytest.mark.cuda

CUDA = "cuda"


DSIFT_CASES = [
    ((3, 1, 64, 75), 4, 8),
    ((2, 1, 31, 40), 1, 2),
    ((2, 1, 37, 45), 3, 4),
    ((1, 1, 30, 28), 5, 1),
    ((2, 1, 224, 224), 4, 8),
]


def nearly_flat(dtype):
    """Saturated regions with faint structure: descriptors below VLFeat's 1e-8 energy threshold,
    divided by its epsilon (this magnifies the last bits)."""
    rng = np.random.default_rng(0)
    image = np.full((70, 90), 0.5, np.float32)
    image[30:34, 40:43] += (rng.random((4, 3)) * 0.01).astype(np.float32)
    image[5, 5] = 0.50001
    image[:, 80:] = np.linspace(0, 1e-3, 10, dtype=np.float32)
    return torch.from_numpy(image)[None, None].to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_dsift_forward_matches_cpu(dtype, flat_window):
    cases = [
        (torch.rand(shape, generator=gen(i), dtype=dtype), step, bs)
        for i, (shape, step, bs) in enumerate(DSIFT_CASES)
    ]
    cases += [
        (torch.rand(2, 1, 50, 61, generator=gen(20), dtype=dtype) * 255, 3, 5),
        (nearly_flat(dtype), 2, 4),
        (nearly_flat(dtype), 1, 3),
    ]
    for x, step, bs in cases:
        args = (step, bs, flat_window)
        cpu = torch.ops.pyinvert.dsift(x, *args, True)
        cuda = torch.ops.pyinvert.dsift(x.to(CUDA), *args, True)
        what = f"{list(x.shape)} step={step} bin_size={bs}"
        assert_equal(cuda[0], cpu[0], f"descriptors {what}")
        assert_equal(cuda[1], cpu[1], f"histograms {what}")
        d, keypoints = pyinvert.dsift(x.to(CUDA), step=step, bin_size=bs, flat_window=flat_window)
        assert_equal(d, cpu[0], f"pyinvert.dsift {what}")
        assert keypoints.device.type == CUDA
        assert_equal(keypoints, pyinvert.dsift(x, step=step, bin_size=bs)[1], f"keypoints {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_dsift_backward_matches_cpu(dtype, flat_window):
    for i, (shape, step, bs) in enumerate(DSIFT_CASES):
        x = torch.rand(shape, generator=gen(30 + i), dtype=dtype)
        fn = lambda t: pyinvert.dsift(
            t,
            step=step,
            bin_size=bs,  # noqa: E731
            flat_window=flat_window,
        )[0]
        weights = weights_for(fn, x, 40 + i)
        _, grad = grad_of(fn, x.to(CUDA), weights)
        _, expected = grad_of(fn, x, weights)
        assert rel_max(grad, expected) <= BACKWARD_TOL["dsift"][dtype], (shape, step, bs)


def test_dsift_non_contiguous_equals_contiguous():
    x = torch.rand(3, 1, 37, 45, generator=gen(50)).to(CUDA)
    for flat_window in (False, True):
        fn = lambda t: pyinvert.dsift(
            t,
            step=3,
            bin_size=4,  # noqa: E731
            flat_window=flat_window,
        )[0]
        weights = weights_for(fn, x, 51)
        expected = grad_of(fn, x, weights)
        for name, xl in layouts(x):
            out, grad = grad_of(fn, xl, weights)
            assert_equal(out, expected[0], f"{name} descriptors")
            assert_equal(grad, expected[1], f"{name} grad")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dsift_empty_batch(dtype):
    x = torch.zeros(0, 1, 30, 41, dtype=dtype, device=CUDA, requires_grad=True)
    d, keypoints = pyinvert.dsift(x, step=2, bin_size=5)
    frames = ((30 - 1 - 15) // 2 + 1) * ((41 - 1 - 15) // 2 + 1)
    assert d.shape == (0, frames, 128) and keypoints.shape == (frames, 2)
    assert d.device.type == CUDA and keypoints.device.type == CUDA
    d.sum().backward()
    assert x.grad.shape == x.shape


def test_dsift_deterministic_and_batch_equals_single():
    x = torch.rand(4, 1, 224, 224, generator=gen(52)).to(CUDA)
    for flat_window in (False, True):
        fn = lambda t: pyinvert.dsift(
            t,
            step=4,
            bin_size=8,  # noqa: E731
            flat_window=flat_window,
        )[0]
        weights = weights_for(fn, x, 53)
        runs = [grad_of(fn, x, weights) for _ in range(2)]
        assert_equal(runs[0][0], runs[1][0], f"second run descriptors (flat={flat_window})")
        assert_equal(runs[0][1], runs[1][1], f"second run grad (flat={flat_window})")
        for b in (0, 3):
            single, single_grad = grad_of(fn, x[b : b + 1], weights[b : b + 1])
            assert_equal(single, runs[0][0][b : b + 1], f"image {b} descriptors")
            assert_equal(single_grad, runs[0][1][b : b + 1], f"image {b} grad")


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
@pytest.mark.parametrize(
    "shape,step,bin_size", [((13, 15), 2, 3), ((11, 9), 1, 2), ((17, 20), 3, 4), ((6, 5), 1, 1)]
)
def test_dsift_gradcheck(flat_window, shape, step, bin_size):
    # The CPU suite's inputs (tests/test_dsift.py test_gradcheck), on CUDA.
    x = torch.rand(2, 1, *shape, generator=gen(2), dtype=torch.float64).to(CUDA)
    assert torch.autograd.gradcheck(
        lambda t: pyinvert.dsift(t, step=step, bin_size=bin_size, flat_window=flat_window)[0],
        (x.requires_grad_(),),
        eps=1e-6,
        atol=1e-6,
        rtol=1e-4,
        fast_mode=shape != (6, 5),
    )


def test_dsift_opcheck():
    g = gen(6)
    for dtype, requires_grad, flat_window in itertools.product(
        DTYPES, (False, True), (False, True)
    ):
        x = torch.rand(2, 1, 21, 26, generator=g, dtype=dtype).to(CUDA)
        torch.library.opcheck(
            torch.ops.pyinvert.dsift.default,
            (x.requires_grad_(requires_grad), 3, 4, flat_window, requires_grad),
        )
    x = torch.rand(2, 1, 21, 26, generator=g, dtype=torch.float64).to(CUDA)
    for flat_window in (False, True):
        _, histograms = torch.ops.pyinvert.dsift(x, 3, 4, flat_window, True)
        grad = torch.randn(histograms.shape, generator=g, dtype=torch.float64).to(CUDA)
        torch.library.opcheck(
            torch.ops.pyinvert._dsift_backward.default, (grad, x, histograms, 3, 4, flat_window)
        )


def test_dsift_device_errors():
    x = torch.rand(1, 1, 30, 30, device=CUDA)
    _, histograms = torch.ops.pyinvert.dsift(x, 4, 8, False, True)
    with pytest.raises(RuntimeError, match=r"_dsift_backward: expected grad on cuda:0, got cpu"):
        torch.ops.pyinvert._dsift_backward(torch.rand(histograms.shape), x, histograms, 4, 8, False)


def test_dsift_matches_reference_on_cuda():
    x = torch.rand(2, 1, 37, 45, generator=gen(54)).to(CUDA)
    for flat_window in (False, True):
        fn = lambda t: pyinvert.dsift(
            t,
            step=3,
            bin_size=4,  # noqa: E731
            flat_window=flat_window,
        )[0]
        weights = weights_for(fn, x, 55)
        out, grad = grad_of(fn, x, weights)
        ref, ref_grad = grad_of(
            lambda t: reference.dsift(t, step=3, bin_size=4, flat_window=flat_window)[0], x, weights
        )
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        assert rel_max(grad, ref_grad) <= 1e-4
