"""Dense SIFT: the fused kernels against VLFeat 0.9.21 (ctypes), the pure-PyTorch reference, finite
differences, and the torch.library machinery."""

import inspect
import re

import cv2
import numpy as np
import pytest
import torch

import pyinvert
from pyinvert import data
from pyinvert.features.dsift import DenseSIFT, dsift, keypoints as dsift_keypoints
from pyinvert.reference import dsift as reference_dsift
from tests.conftest import DEVICES, DTYPES

# (step, bin_size): the default, odd sizes, steps that do and do not divide the bin size, and the
# degenerate 1-pixel bins.
PARAMS = [(4, 8), (3, 5), (5, 4), (2, 3), (7, 6), (1, 1), (1, 2), (8, 2)]


def _gray_photo(name, scale):
    image = cv2.imread(str(data.sample_path(name)), cv2.IMREAD_GRAYSCALE)
    return (image.astype(np.float32) * np.float32(scale)).astype(np.float32)


def _vlfeat(image, step, bin_size, flat_window):
    from pyinvert.vlfeat.dsift import vl_dsift

    return vl_dsift(image, step, bin_size, flat_window)


def _ours(image, step, bin_size, flat_window, dtype=torch.float32, device="cpu"):
    x = torch.from_numpy(image).to(dtype=dtype, device=device)[None, None]
    descriptors, keypoints = dsift(x, step=step, bin_size=bin_size, flat_window=flat_window)
    return descriptors[0].cpu().double().numpy(), keypoints.cpu().double().numpy()


def _assert_matches_vlfeat(image, step, bin_size, flat_window, atol=1e-4, dtype=torch.float32):
    expected, expected_keypoints = _vlfeat(image, step, bin_size, flat_window)
    got, keypoints = _ours(image, step, bin_size, flat_window, dtype)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(keypoints, expected_keypoints)
    error = np.abs(got - expected).max()
    assert error <= atol, f"max abs difference to VLFeat {error:.3g} > {atol}"
    return error


# --------------------------------------------------------------------------------- vs VLFeat ---


@pytest.mark.parametrize("name", data.SAMPLE_NAMES)
@pytest.mark.parametrize("scale", [1.0 / 255.0, 1.0], ids=["range1", "range255"])
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_photos_match_vlfeat(vl, name, scale, flat_window):
    image = _gray_photo(name, scale)
    for step, bin_size in PARAMS[:5]:
        _assert_matches_vlfeat(image, step, bin_size, flat_window)


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_float32_bit_identical_to_vlfeat(vl, flat_window):
    """Not only within 1e-4: the float32 kernel repeats VLFeat's float operations, so the bits are
    the same (with the default build flags; a build that fuses multiply-adds may differ in the
    last bits)."""
    for name, scale in [("astronaut", 1.0 / 255.0), ("coffee", 1.0)]:
        image = _gray_photo(name, scale)
        for step, bin_size in [(4, 8), (3, 5)]:
            _assert_matches_vlfeat(image, step, bin_size, flat_window, atol=0.0)


@pytest.mark.parametrize("size", [(25, 25), (26, 31), (47, 33), (64, 97), (101, 58)])
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_random_images_match_vlfeat(vl, size, flat_window):
    rng = np.random.default_rng(sum(size))
    for scale in (1.0, 255.0):
        image = (rng.random(size) * scale).astype(np.float32)
        for step, bin_size in PARAMS + [(3, 12), (40, 3)]:
            if min(size) >= 3 * bin_size + 1:
                _assert_matches_vlfeat(image, step, bin_size, flat_window)


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_nearly_flat_images_match_vlfeat(vl, flat_window):
    """Saturated regions: descriptors whose energy is below VLFeat's 1e-8 threshold are divided by
    its epsilon, which magnifies the last bits of the pooled values (and of the flat window's
    running sums): only VLFeat's exact float operations reproduce them."""
    rng = np.random.default_rng(0)
    image = np.full((70, 90), 0.5, np.float32)
    image[30:34, 40:43] += (rng.random((4, 3)) * 0.01).astype(np.float32)  # a faint blob
    image[5, 5] = 0.50001  # a single tiny step
    image[:, 80:] = np.linspace(0, 1e-3, 10, dtype=np.float32)  # a faint ramp
    for step, bin_size in [(1, 3), (2, 4), (3, 5), (4, 8)]:
        _assert_matches_vlfeat(image, step, bin_size, flat_window)
    # A constant image has all-zero descriptors, in VLFeat too.
    constant = np.full((40, 40), 0.3, np.float32)
    _assert_matches_vlfeat(constant, 2, 4, flat_window, atol=0.0)


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_float64_close_to_vlfeat(vl, flat_window):
    """float64 evaluates VLFeat's formulas in double: equal up to VLFeat's float rounding."""
    rng = np.random.default_rng(1)
    image = (rng.random((53, 61)) * 255).astype(np.float32)
    for step, bin_size in [(4, 8), (3, 4), (1, 2)]:
        _assert_matches_vlfeat(image, step, bin_size, flat_window, dtype=torch.float64)


def test_reference_matches_vlfeat(vl):
    """The pure-PyTorch reference equals VLFeat too (it is the oracle for everything below)."""
    image = _gray_photo("astronaut", 1.0 / 255.0)[60:140, 90:190].copy()  # saturated areas
    for flat_window in (False, True):
        for step, bin_size in [(4, 8), (5, 4), (2, 3)]:
            expected, expected_keypoints = _vlfeat(image, step, bin_size, flat_window)
            x = torch.from_numpy(image)[None, None]
            got, keypoints = reference_dsift(
                x, step=step, bin_size=bin_size, flat_window=flat_window
            )
            np.testing.assert_array_equal(keypoints.double().numpy(), expected_keypoints)
            np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-4)


def test_vlfeat_binding_too_small(vl):
    descriptors, keypoints = _vlfeat(np.zeros((10, 30), np.float32), 4, 8, False)
    assert descriptors.shape == (0, 128) and keypoints.shape == (0, 2)


# ------------------------------------------------------------------------------ vs reference ---


def _layouts(x):
    """x in several memory layouts with the same values."""
    yield "contiguous", x
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)  # column-major images
    yield "transposed", transposed
    wide = torch.zeros(x.shape[0], 1, x.shape[2], 2 * x.shape[3], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_matches_reference(device, dtype, flat_window):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 37, 45, generator=generator, dtype=dtype).to(device)
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    for step, bin_size in [(3, 4), (2, 3), (5, 2)]:
        expected, expected_keypoints = reference_dsift(
            x, step=step, bin_size=bin_size, flat_window=flat_window
        )
        for layout, xl in _layouts(x):
            got, keypoints = dsift(xl, step=step, bin_size=bin_size, flat_window=flat_window)
            assert got.dtype == dtype and got.device == x.device
            assert torch.equal(keypoints, expected_keypoints), layout
            torch.testing.assert_close(got, expected, rtol=0, atol=atol, msg=layout)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_gradient_matches_reference(device, dtype, flat_window):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 30, 34, generator=generator, dtype=dtype).to(device)
    weights = torch.randn(2, 4 * 5, 128, generator=generator, dtype=dtype).to(device)
    atol = 1e-4 if dtype == torch.float32 else 1e-10
    for layout, xl in _layouts(x):
        xl = xl.detach().requires_grad_()
        (dsift(xl, step=4, bin_size=5, flat_window=flat_window)[0] * weights).sum().backward()
        xr = x.detach().requires_grad_()
        (
            reference_dsift(xr, step=4, bin_size=5, flat_window=flat_window)[0] * weights
        ).sum().backward()
        torch.testing.assert_close(xl.grad, xr.grad, rtol=1e-4, atol=atol, msg=layout)


# ---------------------------------------------------------------------------------- gradients ---


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
@pytest.mark.parametrize(
    "shape,step,bin_size", [((13, 15), 2, 3), ((11, 9), 1, 2), ((17, 20), 3, 4), ((6, 5), 1, 1)]
)
def test_gradcheck(flat_window, shape, step, bin_size):
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, *shape, generator=generator, dtype=torch.float64, requires_grad=True)
    # The full Jacobian for the smallest input, random projections of it for the others.
    assert torch.autograd.gradcheck(
        lambda x: dsift(x, step=step, bin_size=bin_size, flat_window=flat_window)[0],
        (x,),
        eps=1e-6,
        atol=1e-6,
        rtol=1e-4,
        fast_mode=shape != (6, 5),
    )


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_gradient_finite_differences_photo(flat_window):
    """Directional derivative on a natural image (clamped entries and all) vs central differences.

    A little noise is added: on an 8-bit photo many gradient components are exactly 0, where
    VLFeat's fast atan2 jumps by ~4e-6 rad (its two branches and its sign flip do not meet
    exactly), which central differences would see as a huge slope.
    """
    generator = torch.Generator().manual_seed(3)
    image = torch.from_numpy(_gray_photo("camera", 1.0 / 255.0)[80:136, 70:130]).double()
    x = image + 1e-3 * torch.rand(image.shape, generator=generator, dtype=torch.float64)
    x = x[None, None].requires_grad_()
    weights = torch.randn(1, 10 * 11, 128, generator=generator, dtype=torch.float64)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)

    def loss(x):
        return (dsift(x, step=4, bin_size=6, flat_window=flat_window)[0] * weights).sum()

    (grad,) = torch.autograd.grad(loss(x), x)
    # The loss is piecewise smooth with many kinks (clamping, orientation-bin boundaries), so the
    # step must be small enough not to cross one.
    eps = 1e-8
    with torch.no_grad():
        numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    analytic = (grad * direction).sum()
    assert torch.isclose(analytic, numeric, rtol=1e-6, atol=0), (analytic, numeric)


def test_gradient_of_clamped_and_flat_entries_is_zero():
    """Entries clamped at 0.2 are locally constant; a constant image has a zero gradient (its
    moduli are below VLFeat's 1e-8 threshold)."""
    x = torch.full((1, 1, 30, 30), 0.25, dtype=torch.float64, requires_grad=True)
    d, _ = dsift(x, step=2, bin_size=3)
    assert torch.count_nonzero(d) == 0
    d.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


# ----------------------------------------------------------------------- batching and layout ---


@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_single(flat_window, threads):
    """Both CPU schedules (parallel over images, parallel over rows) give identical bits."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(4)
        x = torch.rand(3, 1, 40, 33, generator=generator, requires_grad=True)
        d, _ = dsift(x, step=3, bin_size=4, flat_window=flat_window)
        weights = torch.randn(d.shape, generator=generator)
        (grad,) = torch.autograd.grad((d * weights).sum(), x)
        for b in range(3):
            xb = x[b : b + 1].detach().requires_grad_()
            db, _ = dsift(xb, step=3, bin_size=4, flat_window=flat_window)
            assert torch.equal(db, d[b : b + 1])
            (gb,) = torch.autograd.grad((db * weights[b : b + 1]).sum(), xb)
            assert torch.equal(gb, grad[b : b + 1])
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 48, 52, generator=generator).to(device).requires_grad_()
    results = []
    for _ in range(2):
        d, _ = dsift(x, step=3, bin_size=5)
        (g,) = torch.autograd.grad(d.square().sum(), x)
        results.append((d, g))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(device, dtype):
    x = torch.zeros(0, 1, 30, 41, dtype=dtype, device=device, requires_grad=True)
    d, keypoints = dsift(x, step=2, bin_size=5)
    frames = ((30 - 1 - 15) // 2 + 1) * ((41 - 1 - 15) // 2 + 1)
    assert d.shape == (0, frames, 128) and keypoints.shape == (frames, 2)
    d.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0
    r, rk = reference_dsift(x, step=2, bin_size=5)
    assert r.shape == d.shape and torch.equal(rk, keypoints)


def test_shapes_and_keypoints():
    x = torch.rand(2, 1, 50, 61)
    d, keypoints = dsift(x, step=5, bin_size=4)
    ny, nx = (50 - 1 - 12) // 5 + 1, (61 - 1 - 12) // 5 + 1
    assert d.shape == (2, ny * nx, 128) and keypoints.shape == (ny * nx, 2)
    assert keypoints[0].tolist() == [6.0, 6.0] and keypoints[1].tolist() == [11.0, 6.0]
    assert keypoints[nx].tolist() == [6.0, 11.0]
    norms = d.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-4)


def test_module():
    x = torch.rand(2, 1, 33, 29)
    module = DenseSIFT(step=3, bin_size=4, flat_window=True)
    d, k = module(x)
    e, l_ = dsift(x, step=3, bin_size=4, flat_window=True)
    assert torch.equal(d, e) and torch.equal(k, l_)
    assert "step=3, bin_size=4, flat_window=True" in repr(module)
    assert pyinvert.DenseSIFT is DenseSIFT and pyinvert.dsift is dsift
    with pytest.raises(ValueError, match=r"DenseSIFT: expected step >= 1, got 0"):
        DenseSIFT(step=0)


# ------------------------------------------------------------------------- torch.library ops ---


def _sample_inputs(device):
    generator = torch.Generator().manual_seed(6)
    for dtype in DTYPES:
        for requires_grad in (False, True):
            for flat_window in (False, True):
                x = torch.rand(2, 1, 21, 26, generator=generator, dtype=dtype).to(device)
                yield (x.requires_grad_(requires_grad), 3, 4, flat_window, requires_grad)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args in _sample_inputs(device):
        torch.library.opcheck(torch.ops.pyinvert.dsift.default, args)
    x = torch.rand(2, 1, 21, 26, dtype=torch.float64, device=device)
    _, histograms = torch.ops.pyinvert.dsift(x, 3, 4, True, True)
    grad = torch.randn(histograms.shape, dtype=torch.float64, device=device)
    torch.library.opcheck(
        torch.ops.pyinvert._dsift_backward.default, (grad, x, histograms, 3, 4, True)
    )


def test_histograms_only_when_needed():
    """The forward keeps the pre-normalization histograms only for a backward pass."""
    x = torch.rand(1, 1, 30, 30)
    descriptors, histograms = torch.ops.pyinvert.dsift(x, 4, 8, False, False)
    assert histograms.numel() == 0
    descriptors2, histograms = torch.ops.pyinvert.dsift(x, 4, 8, False, True)
    assert torch.equal(descriptors, descriptors2) and histograms.shape == descriptors.shape
    u = torch.clamp(histograms / histograms.norm(dim=-1, keepdim=True), max=0.2)
    torch.testing.assert_close(u / u.norm(dim=-1, keepdim=True), descriptors, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"dsift: backward needs the histograms"):
        xr = x.clone().requires_grad_()
        torch.ops.pyinvert.dsift(xr, 4, 8, False, False)[0].sum().backward()


def test_torch_compile_fullgraph():
    x = torch.rand(2, 1, 30, 30, requires_grad=True)
    compiled = torch.compile(
        lambda x: dsift(x, step=3, bin_size=4)[0].square().sum(),
        fullgraph=True,
        backend="aot_eager",
    )
    value = compiled(x)
    (grad,) = torch.autograd.grad(value, x)
    expected = dsift(x, step=3, bin_size=4)[0].square().sum()
    (expected_grad,) = torch.autograd.grad(expected, x)
    assert torch.equal(value, expected) and torch.equal(grad, expected_grad)


# --------------------------------------------------------------------------------------- CUDA ---


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flat_window", [False, True], ids=["gaussian", "flat"])
def test_cuda_matches_cpu(dtype, flat_window):
    generator = torch.Generator().manual_seed(7)
    for shape, step, bin_size in [((3, 1, 64, 75), 4, 8), ((2, 1, 31, 40), 1, 2)]:
        x = torch.rand(shape, generator=generator, dtype=dtype)
        weights = torch.randn(shape[0], 1, 128, generator=generator, dtype=dtype)
        results = []
        for device in ("cpu", "cuda"):
            xd = x.to(device).requires_grad_()
            d, k = dsift(xd, step=step, bin_size=bin_size, flat_window=flat_window)
            (g,) = torch.autograd.grad((d * weights.to(device)).sum(), xd)
            results.append((d.cpu(), k.cpu(), g.cpu()))
        (dc, kc, gc), (dg, kg, gg) = results
        atol = 1e-5 if dtype == torch.float32 else 1e-12
        assert torch.equal(kc, kg)
        torch.testing.assert_close(dg, dc, rtol=0, atol=atol)
        torch.testing.assert_close(gg, gc, rtol=1e-4, atol=atol * 10)


@pytest.mark.cuda
def test_cuda_photo_matches_vlfeat(vl):
    image = _gray_photo("coffee", 1.0)
    for flat_window in (False, True):
        expected, _ = _vlfeat(image, 4, 8, flat_window)
        got, _ = _ours(image, 4, 8, flat_window, device="cuda")
        assert np.abs(got - expected).max() <= 1e-4


def _cuda_source_on_host(source):
    """csrc/cuda/dsift_kernel.cu as host C++: with PYI_CUDA_ON_HOST, cuda/launch.cuh makes the
    kernels functions whose grid-stride loops run in one thread; launches become calls, and the
    ops are registered as dsift_on_host::* (CPU)."""
    source = re.sub(r"<<<.*?>>>", "", source, flags=re.S)
    source = source.replace(
        "TORCH_LIBRARY_IMPL(pyinvert, CUDA, m)",
        """
TORCH_LIBRARY(dsift_on_host, m) {
  m.def("dsift(Tensor x, int step, int bin_size, bool flat_window, bool return_histograms) "
        "-> (Tensor, Tensor)");
  m.def("_dsift_backward(Tensor grad, Tensor x, Tensor histograms, int step, int bin_size, "
        "bool flat_window) -> Tensor");
}
TORCH_LIBRARY_IMPL(dsift_on_host, CPU, m)""",
    )
    assert "dsift_on_host, CPU" in source
    return "#define PYI_CUDA_ON_HOST\n" + source


@pytest.mark.slow
def test_cuda_kernels_emulated_on_host(tmp_path):
    """Without a GPU the CUDA tests above are skipped; this compiles the CUDA source as host C++
    (every grid-stride loop in one thread) and checks it gives the CPU kernel's bits, forward and
    backward: the CUDA indexing, buffer layouts, scratch sizes and launch sequence are exercised."""
    from pathlib import Path

    from torch.utils.cpp_extension import load

    csrc = Path(pyinvert.__file__).resolve().parent.parent / "csrc"
    if not (csrc / "cuda" / "dsift_kernel.cu").exists():
        pytest.skip("needs a source checkout (csrc/)")
    host = tmp_path / "dsift_cuda_on_host.cpp"
    host.write_text(_cuda_source_on_host((csrc / "cuda" / "dsift_kernel.cu").read_text()))
    load(
        name="dsift_cuda_on_host",
        sources=[str(host)],
        extra_include_paths=[str(csrc)],
        extra_cflags=["-O1"],
        is_python_module=False,
        build_directory=str(tmp_path),
    )
    generator = torch.Generator().manual_seed(8)
    for dtype in DTYPES:
        for flat_window in (False, True):
            for shape, step, bin_size in [
                ((2, 1, 37, 45), 3, 4),
                ((1, 1, 50, 41), 4, 8),
                ((3, 1, 13, 14), 1, 2),
                ((1, 1, 30, 28), 5, 1),
            ]:
                x = torch.rand(shape, generator=generator, dtype=dtype)
                args = (step, bin_size, flat_window)
                expected, histograms = torch.ops.pyinvert.dsift(x, *args, True)
                got, got_histograms = torch.ops.dsift_on_host.dsift(x, *args, True)
                assert torch.equal(got, expected) and torch.equal(got_histograms, histograms)
                grad = torch.randn(expected.shape, generator=generator, dtype=dtype)
                assert torch.equal(
                    torch.ops.dsift_on_host._dsift_backward(grad, x, histograms, *args),
                    torch.ops.pyinvert._dsift_backward(grad, x, histograms, *args),
                )


# ------------------------------------------------------------------------------------- errors ---


def test_errors():
    x = torch.rand(1, 1, 30, 30)
    with pytest.raises(
        ValueError, match=re.escape("dsift: expected x of shape (B, 1, H, W), got [30, 30]")
    ):
        dsift(x[0, 0])
    with pytest.raises(
        ValueError,
        match=r"dsift: expected x of shape \(B, 1, H, W\) \(grayscale\)"
        r", got \[1, 3, 30, 30\]; convert RGB with "
        r"x.mean\(1, keepdim=True\) or a luminance weighting",
    ):
        dsift(torch.rand(1, 3, 30, 30))
    with pytest.raises(
        TypeError,
        match=r"dsift: expected x of dtype float32 or float64, got "
        r"torch.float16",
    ):
        dsift(x.half())
    with pytest.raises(
        TypeError,
        match=r"dsift: expected x of dtype float32 or float64, got "
        r"torch.int64",
    ):
        dsift(torch.zeros(1, 1, 30, 30, dtype=torch.long))
    with pytest.raises(TypeError, match=r"dsift: expected x to be a torch.Tensor, got ndarray"):
        dsift(np.zeros((1, 1, 30, 30), np.float32))
    with pytest.raises(ValueError, match=r"dsift: expected step >= 1, got 0"):
        dsift(x, step=0)
    with pytest.raises(ValueError, match=r"dsift: expected bin_size >= 1, got -2"):
        dsift(x, bin_size=-2)
    with pytest.raises(TypeError, match=r"dsift: expected step to be an int, got float"):
        dsift(x, step=2.5)
    with pytest.raises(TypeError, match=r"dsift: expected bin_size to be an int, got bool"):
        dsift(x, bin_size=True)
    with pytest.raises(TypeError, match=r"dsift: expected flat_window to be a bool, got int"):
        dsift(x, flat_window=1)
    with pytest.raises(
        ValueError,
        match=r"dsift: expected x of at least 25x25 pixels \(3 \* "
        r"bin_size \+ 1\) for one descriptor, got 30x24",
    ):
        dsift(torch.rand(2, 1, 30, 24))
    with pytest.raises(ValueError, match=r"dsift: expected x of at least 13x13 pixels"):
        dsift(torch.rand(0, 1, 12, 40), bin_size=4)
    with pytest.raises(ValueError, match=r"dsift: expected x on a CPU or CUDA device, got meta"):
        dsift(torch.empty(1, 1, 30, 30, device="meta"))
    with pytest.raises(ValueError, match=r"dsift: expected x at least 25x25"):
        reference_dsift(torch.rand(1, 1, 24, 40))


def test_op_errors():
    """The ops check their inputs too (RuntimeError from TORCH_CHECK) when called directly."""
    op = torch.ops.pyinvert.dsift
    with pytest.raises(
        RuntimeError,
        match=r"dsift: expected x of shape \(B, C, H, W\), got "
        r"\[30, 30\]",
    ):
        op(torch.rand(30, 30), 4, 8, False, False)
    with pytest.raises(
        RuntimeError,
        match=r"dsift: expected x of shape \(B, 1, H, W\) "
        r"\(grayscale\), got \[1, 3, 30, 30\]; convert RGB",
    ):
        op(torch.rand(1, 3, 30, 30), 4, 8, False, False)
    with pytest.raises(
        RuntimeError,
        match=r"dsift: expected x of dtype float32 or float64, got "
        r"Half",
    ):
        op(torch.rand(1, 1, 30, 30).half(), 4, 8, False, False)
    with pytest.raises(RuntimeError, match=r"dsift: expected step >= 1, got 0"):
        op(torch.rand(1, 1, 30, 30), 0, 8, False, False)
    with pytest.raises(RuntimeError, match=r"dsift: expected bin_size >= 1, got 0"):
        op(torch.rand(1, 1, 30, 30), 4, 0, False, False)
    with pytest.raises(
        RuntimeError,
        match=r"dsift: expected x of at least 25x25 pixels \(3 \* "
        r"bin_size \+ 1\) for one descriptor, got 24x30",
    ):
        op(torch.rand(1, 1, 24, 30), 4, 8, False, False)
    backward = torch.ops.pyinvert._dsift_backward
    x = torch.rand(1, 1, 30, 30)
    h = torch.rand(1, 4, 128)
    with pytest.raises(
        RuntimeError,
        match=r"_dsift_backward: expected grad of shape \(1, 4, 128\)"
        r", got \[1, 5, 128\]",
    ):
        backward(torch.rand(1, 5, 128), x, h, 4, 8, False)
    with pytest.raises(
        RuntimeError,
        match=r"_dsift_backward: expected grad of dtype Float, got "
        r"Double",
    ):
        backward(torch.rand(1, 4, 128, dtype=torch.float64), x, h, 4, 8, False)
    with pytest.raises(
        RuntimeError,
        match=r"_dsift_backward: expected histograms of shape "
        r"\[1, 4, 128\] \(the forward's, with "
        r"return_histograms=True\), got \[0\]",
    ):
        backward(torch.rand(1, 4, 128), x, torch.empty(0), 4, 8, False)


# ------------------------------------------------------------------------------------- docs ---


@pytest.mark.parametrize("function", [dsift, DenseSIFT, reference_dsift, dsift_keypoints])
def test_documented_defaults_match_signature(function):
    doc = inspect.getdoc(function)
    signature = inspect.signature(function)
    documented = {
        name: value.rstrip(".")
        for name, value in re.findall(
            r"^\s*(\w+): .*?Default: (\S+)", _join_arg_lines(doc), flags=re.M
        )
    }
    defaults = {
        name: p.default
        for name, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert documented.keys() == defaults.keys()
    for name, value in defaults.items():
        assert documented[name] == str(value), name


def _join_arg_lines(doc):
    """The Args section with each argument's description on one line."""
    args = doc.split("Args:")[1].split("\n\n")[0]
    return re.sub(r"\n\s{8,}", " ", args)
