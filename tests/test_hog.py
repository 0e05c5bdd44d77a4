"""HOG: the fused op against VLFeat 0.9.21 (ctypes), against the pure-PyTorch reference, its
gradient (gradcheck, finite differences), the torch.library registrations, layouts, errors, and
the glyph renderer against vl_hog_render."""

import doctest
import importlib
import inspect
import itertools
import re

import cv2
import numpy as np
import pytest
import torch

import pyinvert
from pyinvert import reference
from pyinvert.data import sample_path, SAMPLE_NAMES
from pyinvert.features.hog import VARIANTS, descriptor_size, num_cells
from tests.conftest import DEVICES, DTYPES

VL_TOL = 1e-4  # the required agreement with VLFeat (float32)


def photo(name, scale=1.0):
    """A bundled photo as float32 [C, H, W] (RGB or gray), values in [0, scale]."""
    image = cv2.imread(str(sample_path(name)), cv2.IMREAD_UNCHANGED)
    image = image[..., ::-1].transpose(2, 0, 1) if image.ndim == 3 else image[None]
    return np.ascontiguousarray(image.astype(np.float32) * np.float32(scale / 255.0))


def ours(image, cs, no, variant, bilinear):
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    return pyinvert.hog(
        x, cell_size=cs, num_orientations=no, variant=variant, bilinear_orientations=bilinear
    )[0].numpy()


def vl_hog(image, cs, no, variant, bilinear):
    from pyinvert.vlfeat.hog import vl_hog as vl

    return vl(image, cs, no, variant, bilinear)


def sample_inputs(device="cpu", dtype=torch.float64, requires_grad=True):
    """(x, kwargs) pairs shared by the reference, gradient and opcheck tests: both variants,
    hard and bilinear orientations, 1..4 channels, sizes not divisible by the cell."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 13, 11), (1, 1, 16, 16), (3, 2, 9, 14), (1, 4, 12, 7)]
    settings = [
        dict(cell_size=4, num_orientations=9, variant="uoctti"),
        dict(cell_size=3, num_orientations=4, variant="dalaltriggs"),
        dict(cell_size=5, num_orientations=2, variant="uoctti"),
        dict(cell_size=4, num_orientations=1, variant="dalaltriggs"),
    ]
    for (shape, setting), bilinear in itertools.product(zip(shapes, settings), (False, True)):
        x = torch.rand(shape, generator=gen, dtype=dtype).to(device)
        yield x.requires_grad_(requires_grad), dict(setting, bilinear_orientations=bilinear)


# ---- VLFeat -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_matches_vlfeat_on_photos(vl, variant, bilinear, scale):
    worst = 0.0
    for name in SAMPLE_NAMES:  # camera is gray, the others RGB
        image = photo(name, scale)
        for cs, no in [(4, 4), (6, 9), (8, 9), (8, 12), (5, 7)]:
            expected = vl_hog(image, cs, no, variant, bilinear)
            got = ours(image, cs, no, variant, bilinear)
            assert got.shape == expected.shape
            worst = max(worst, float(np.abs(got - expected).max()))
        # A crop whose sides are odd and not multiples of the cell size.
        crop = image[:, 31 : 31 + 61, 17 : 17 + 45]
        for cs, no in [(4, 9), (6, 12), (8, 4)]:
            expected = vl_hog(crop, cs, no, variant, bilinear)
            worst = max(
                worst, float(np.abs(ours(crop, cs, no, variant, bilinear) - expected).max())
            )
    assert worst <= VL_TOL


def random_images(rng):
    """Noise, quantised noise (flat areas, exact ties between channels and bins), steps."""
    for C, H, W in [(3, 37, 45), (1, 31, 17), (2, 8, 8), (4, 5, 9), (3, 4, 4), (1, 50, 61)]:
        noise = rng.random((C, H, W), dtype=np.float32)
        yield noise
        yield np.round(noise * 3) / 3 * 255
        step = np.zeros((C, H, W), np.float32)
        step[:, H // 2 :] = 1
        step[:, :, W // 3] = 0.5
        yield step


def test_matches_vlfeat_on_random_images(vl):
    rng = np.random.default_rng(0)
    worst = 0.0
    for image in random_images(rng):
        for cs, no, variant, bilinear in itertools.product(
            [1, 2, 3, 4, 6, 8], [1, 2, 3, 9], VARIANTS, [False, True]
        ):
            H, W = image.shape[1:]
            if num_cells(H, cs) < 1 or num_cells(W, cs) < 1:
                continue
            expected = vl_hog(image, cs, no, variant, bilinear)
            worst = max(
                worst, float(np.abs(ours(image, cs, no, variant, bilinear) - expected).max())
            )
    assert worst <= VL_TOL


def test_batch_matches_vlfeat_per_image(vl):
    images = np.stack([photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket")])
    for variant, bilinear in itertools.product(VARIANTS, [False, True]):
        out = pyinvert.hog(
            torch.from_numpy(images), variant=variant, bilinear_orientations=bilinear
        ).numpy()
        for b in range(len(images)):
            expected = vl_hog(images[b], 8, 9, variant, bilinear)
            assert np.abs(out[b] - expected).max() <= VL_TOL


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bilinear", [False, True])
def test_reference_matches_vlfeat(vl, variant, bilinear):
    rng = np.random.default_rng(1)
    images = [photo("camera"), photo("coffee", 255.0)[:, :101, :77]]
    images += [next(random_images(rng)), rng.random((1, 23, 29), dtype=np.float32)]
    for image, (cs, no) in itertools.product(images, [(4, 9), (8, 12), (3, 5)]):
        x = torch.from_numpy(image)[None]
        got = reference.hog(
            x, cell_size=cs, num_orientations=no, variant=variant, bilinear_orientations=bilinear
        )[0].numpy()
        assert np.abs(got - vl_hog(image, cs, no, variant, bilinear)).max() <= VL_TOL


def test_render_matches_vlfeat(vl):
    from pyinvert.vlfeat.hog import vl_hog_render

    image = photo("astronaut")
    for variant, no in itertools.product(VARIANTS, [4, 9, 11]):
        features = ours(image, 8, no, variant, False)
        expected = vl_hog_render(features, variant, no)
        got = pyinvert.render_hog(torch.from_numpy(features), variant=variant)
        assert got.shape == (1, *expected.shape)
        np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-6)
        # The batched form stacks the same pictures.
        batch = pyinvert.render_hog(
            torch.from_numpy(np.stack([features, 2 * features])),
            variant=variant,
            num_orientations=no,
        )
        assert batch.shape == (2, 1, *expected.shape)
        np.testing.assert_allclose(batch[1, 0].numpy(), 2 * expected, rtol=1e-6, atol=1e-6)


def test_render_shape_and_glyph_size():
    features = pyinvert.hog(torch.rand(1, 1, 24, 40))
    assert pyinvert.render_hog(features, glyph_size=7).shape == (1, 1, 3 * 7, 5 * 7)
    assert pyinvert.render_hog(features[0], glyph_size=5).shape == (1, 15, 25)
    # A single vertical edge renders as a bright vertical bar in the cells around it.
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16:] = 1
    picture = pyinvert.render_hog(pyinvert.hog(x), glyph_size=21)[0, 0]
    column = picture[:, 2 * 21 : 2 * 21 + 21].sum(0)
    assert column.argmax().item() == 10  # the bar runs through the middle of the glyph


# ---- reference, layouts, batches ------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_matches_reference(device, dtype, layout):
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for x, kwargs in sample_inputs(device, dtype, requires_grad=False):
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":  # every other column of a wider buffer
            wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=dtype, device=device)
            wide[..., ::2] = x
            x = wide[..., ::2]
        x = x.detach().requires_grad_()
        out = pyinvert.hog(x, **kwargs)
        expected = reference.hog(x, **kwargs)
        torch.testing.assert_close(out, expected, rtol=0, atol=tol)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype).to(
            device
        )
        (grad,) = torch.autograd.grad(out, x, g)
        (grad_expected,) = torch.autograd.grad(expected, x, g)
        torch.testing.assert_close(
            grad, grad_expected, rtol=1e-4 if dtype == torch.float32 else 1e-8, atol=tol * 10
        )


def test_non_contiguous_equals_contiguous():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 40, 36, generator=gen)
    for kwargs in [dict(), dict(variant="dalaltriggs", bilinear_orientations=True)]:
        base = pyinvert.hog(x, **kwargs)
        assert torch.equal(
            pyinvert.hog(x.contiguous(memory_format=torch.channels_last), **kwargs), base
        )
        assert torch.equal(pyinvert.hog(x.flip(-1).flip(-1), **kwargs), base)
        wide = torch.zeros(3, 3, 40, 72)
        wide[..., ::2] = x
        assert torch.equal(pyinvert.hog(wide[..., ::2], **kwargs), base)


def test_batch_equals_single():
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(4, 3, 33, 47, generator=gen, requires_grad=True)
    out = pyinvert.hog(x, bilinear_orientations=True)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    for b in range(4):
        xb = x[b : b + 1].detach().requires_grad_()
        single = pyinvert.hog(xb, bilinear_orientations=True)
        assert torch.equal(single, out[b : b + 1])
        (gb,) = torch.autograd.grad(single.square().sum(), xb)
        assert torch.equal(gb, grad[b : b + 1])


@pytest.mark.parametrize("shape", [(3, 3, 64, 48), (1, 3, 400, 600)])
def test_deterministic_across_thread_counts(shape):
    # With 2 threads the second shape is split into several tasks of cell rows (pixel rows at
    # task boundaries are shared): results must not depend on the split.
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(shape, generator=gen)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            saved = torch.ops.pyinvert.hog(x, 8, 9, 0, True, True)
            grad = torch.ops.pyinvert._hog_backward(
                torch.ones_like(saved[0]), x, *saved[1:], 8, 9, 0, True
            )
            results.append((*saved, grad))
    finally:
        torch.set_num_threads(threads)
    for result in results[1:]:
        for a, b in zip(result, results[0]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(device, dtype):
    x = torch.rand(0, 3, 20, 17, dtype=dtype, device=device, requires_grad=True)
    for kwargs in [dict(), dict(cell_size=4, variant="dalaltriggs")]:
        out = pyinvert.hog(x, **kwargs)
        D = descriptor_size(9, kwargs.get("variant", "uoctti"))
        cs = kwargs.get("cell_size", 8)
        assert out.shape == (0, D, num_cells(20, cs), num_cells(17, cs))
        assert reference.hog(x, **kwargs).shape == out.shape
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.shape == x.shape


def test_tiny_images():
    # Images of fewer than 3 pixels per side have no interior pixel: all-zero features.
    for shape, cs in [((1, 1, 2, 2), 2), ((2, 3, 1, 5), 1), ((1, 2, 3, 3), 4)]:
        x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
        out = pyinvert.hog(x, cell_size=cs)
        torch.testing.assert_close(out, reference.hog(x, cell_size=cs))
        if shape[2] < 3 or shape[3] < 3:
            assert not out.any()
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all()


def test_flat_image_has_zero_gradient():
    x = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64, requires_grad=True)
    for bilinear in (False, True):
        out = pyinvert.hog(x, cell_size=4, bilinear_orientations=bilinear)
        assert not out.any()
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert not grad.any()
        (grad_ref,) = torch.autograd.grad(
            reference.hog(x, cell_size=4, bilinear_orientations=bilinear).sum(), x
        )
        assert not grad_ref.any()


def test_module_equals_function():
    phi = pyinvert.HOG(
        cell_size=4, num_orientations=6, variant="DalalTriggs", bilinear_orientations=True
    )
    assert phi.descriptor_size == 24
    assert "cell_size=4" in repr(phi) and "'dalaltriggs'" in repr(phi)
    x = torch.rand(2, 3, 20, 24)
    assert torch.equal(
        phi(x),
        pyinvert.hog(
            x, cell_size=4, num_orientations=6, variant="dalaltriggs", bilinear_orientations=True
        ),
    )


# ---- gradient ---------------------------------------------------------------------------


def test_gradcheck():
    for x, kwargs in sample_inputs():
        assert torch.autograd.gradcheck(
            lambda t: pyinvert.hog(t, **kwargs), (x,), eps=1e-7, atol=1e-6, rtol=1e-4
        ), kwargs


def test_gradient_matches_finite_differences_on_a_photo():
    # Directional derivatives on a natural image crop (float64), against central differences.
    # 8-bit photos are full of exact ties (zero differences, gray pixels, gradients on a hard
    # bin boundary) where HOG jumps; a little noise moves the pixels off them.
    gen = torch.Generator().manual_seed(11)
    image = torch.from_numpy(photo("chelsea")[:, 60:124, 80:140]).double()[None]
    image = image + 1e-3 * torch.rand(image.shape, generator=gen, dtype=torch.float64)
    for kwargs in [
        dict(cell_size=8),
        dict(cell_size=6, bilinear_orientations=True),
        dict(cell_size=4, num_orientations=12, variant="dalaltriggs"),
    ]:
        x = image.clone().requires_grad_()
        weights = torch.randn(pyinvert.hog(x, **kwargs).shape, generator=gen, dtype=torch.float64)

        def loss(t):
            return (pyinvert.hog(t, **kwargs) * weights).sum()

        (grad,) = torch.autograd.grad(loss(x), x)
        for _ in range(3):
            v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            eps = 1e-7
            numeric = (loss(x.detach() + eps * v) - loss(x.detach() - eps * v)) / (2 * eps)
            analytic = (grad * v).sum()
            assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(analytic)), kwargs


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for (x, kwargs), save in zip(sample_inputs(device), itertools.cycle([True, False])):
        code = 0 if kwargs["variant"] == "uoctti" else 1
        params = (
            kwargs["cell_size"],
            kwargs["num_orientations"],
            code,
            kwargs["bilinear_orientations"],
        )
        torch.library.opcheck(
            torch.ops.pyinvert.hog.default, (x.detach().requires_grad_(save), *params, save)
        )
        features, hist, pixels, jacobian = torch.ops.pyinvert.hog(x.detach(), *params, True)
        torch.library.opcheck(
            torch.ops.pyinvert._hog_backward.default,
            (torch.randn_like(features), x.detach(), hist, pixels, jacobian, *params),
        )


def test_saves_pixels_only_when_needed():
    x = torch.rand(2, 3, 20, 17)
    _, _, pixels, jacobian = torch.ops.pyinvert.hog(x, 4, 9, 0, False, False)
    assert pixels.shape == (0,) and jacobian.shape == (0,)
    _, _, pixels, jacobian = torch.ops.pyinvert.hog(x, 4, 9, 0, True, True)
    assert pixels.shape == (2, 3, 18, 15) and pixels.dtype == torch.int32
    assert jacobian.shape == (2, 4, 18, 15) and jacobian.dtype == x.dtype
    # No gradient needed (no_grad, or an input that does not require it): nothing saved, and
    # the features are the same.
    with torch.no_grad():
        a = pyinvert.hog(x.requires_grad_())
    assert torch.equal(a, pyinvert.hog(x.detach()))


# ---- errors -----------------------------------------------------------------------------


def test_errors():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(
        ValueError, match=r"hog: expected x of shape \(B, C, H, W\), got \[3, 224\]"
    ):
        pyinvert.hog(torch.rand(3, 224))
    with pytest.raises(TypeError, match="hog: expected x to be a torch.Tensor, got ndarray"):
        pyinvert.hog(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(
        TypeError, match="hog: expected x of dtype float32 or float64, got torch.int64"
    ):
        pyinvert.hog(torch.zeros(1, 1, 8, 8, dtype=torch.long))
    with pytest.raises(
        TypeError, match="hog: expected x of dtype float32 or float64, got torch.float16"
    ):
        pyinvert.hog(x.half())
    with pytest.raises(ValueError, match="hog: expected x with at least 1 channel, got C=0"):
        pyinvert.hog(torch.rand(1, 0, 8, 8))
    with pytest.raises(ValueError, match="hog: expected cell_size >= 1, got 0"):
        pyinvert.hog(x, cell_size=0)
    with pytest.raises(TypeError, match="hog: expected cell_size to be an int, got float"):
        pyinvert.hog(x, cell_size=8.0)
    with pytest.raises(ValueError, match="hog: expected num_orientations >= 1, got 0"):
        pyinvert.hog(x, num_orientations=0)
    with pytest.raises(
        ValueError, match="hog: expected num_orientations <= 16777216, got 16777217"
    ):
        pyinvert.hog(x, num_orientations=2**24 + 1)
    with pytest.raises(
        ValueError, match=r"hog: expected variant in \('uoctti', 'dalaltriggs'\), got 'dpm'"
    ):
        pyinvert.hog(x, variant="dpm")
    with pytest.raises(TypeError, match="hog: expected variant to be a str, got int"):
        pyinvert.hog(x, variant=0)
    with pytest.raises(
        TypeError, match="hog: expected bilinear_orientations to be a bool, got int"
    ):
        pyinvert.hog(x, bilinear_orientations=1)
    with pytest.raises(
        ValueError,
        match=r"hog: expected H and W >= 4 \(at least half a cell of "
        r"cell_size=8\), got H=3, W=32",
    ):
        pyinvert.hog(torch.rand(1, 1, 3, 32))
    with pytest.raises(ValueError, match=r"hog: expected H and W >= 3 .* got H=9, W=2"):
        reference.hog(torch.rand(1, 1, 9, 2), cell_size=5)
    with pytest.raises(ValueError, match="HOG: expected cell_size >= 1, got -1"):
        pyinvert.HOG(cell_size=-1)
    with pytest.raises(ValueError, match=r"HOG: expected variant in \('uoctti', 'dalaltriggs'\)"):
        pyinvert.HOG(variant="sift")


def test_op_errors():
    # The C++ checks behind the Python ones (for direct torch.ops callers).
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(
        RuntimeError, match=r"hog: expected variant 0 \(uoctti\) or 1 \(dalaltriggs\), got 5"
    ):
        torch.ops.pyinvert.hog(x, 8, 9, 5, False, False)
    with pytest.raises(
        RuntimeError, match=r"hog: expected x of shape \(B, C, H, W\), got \[32, 32\]"
    ):
        torch.ops.pyinvert.hog(x[0, 0], 8, 9, 0, False, False)
    with pytest.raises(RuntimeError, match="hog: expected H and W >= 4"):
        torch.ops.pyinvert.hog(x[..., :3], 8, 9, 0, False, False)
    with pytest.raises(
        RuntimeError, match=r"hog: expected 1 <= num_orientations <= 16777216, got 0"
    ):
        torch.ops.pyinvert.hog(x, 8, 0, 0, False, False)
    features, hist, pixels, jac = torch.ops.pyinvert.hog(x, 8, 9, 0, False, True)
    with pytest.raises(
        RuntimeError,
        match=r"_hog_backward: expected grad of shape \[1, 31, 4, 4\], got \[1, 30, 4, 4\]",
    ):
        torch.ops.pyinvert._hog_backward(features[:, 1:], x, hist, pixels, jac, 8, 9, 0, False)
    with pytest.raises(
        RuntimeError, match=r"_hog_backward: expected hist of shape \[1, 18, 4, 4\]"
    ):
        torch.ops.pyinvert._hog_backward(features, x, hist[:, 1:], pixels, jac, 8, 9, 0, False)
    with pytest.raises(
        RuntimeError, match="_hog_backward: expected grad of dtype Float, got Double"
    ):
        torch.ops.pyinvert._hog_backward(features.double(), x, hist, pixels, jac, 8, 9, 0, False)
    empty = torch.ops.pyinvert.hog(x, 8, 9, 0, False, False)
    with pytest.raises(
        RuntimeError,
        match=r"_hog_backward: expected pixels of shape \[1, 3, 30, 30\], got \[0\] \(was the forward called with save_for_backward=True\?\)",
    ):
        torch.ops.pyinvert._hog_backward(features, x, hist, empty[2], empty[3], 8, 9, 0, False)


def test_render_errors():
    features = torch.rand(31, 2, 2)
    with pytest.raises(
        ValueError,
        match=r"render_hog: expected features of shape \(D, Hc, Wc\) or \(B, D, Hc, Wc\), got \[31, 2\]",
    ):
        pyinvert.render_hog(features[:, 0])
    with pytest.raises(
        ValueError, match=r"render_hog: expected D = 4\*no for variant 'dalaltriggs', got D=31"
    ):
        pyinvert.render_hog(features, variant="dalaltriggs")
    with pytest.raises(
        TypeError, match="render_hog: expected floating point features, got torch.int64"
    ):
        pyinvert.render_hog(features.long())
    with pytest.raises(ValueError, match="render_hog: expected glyph_size >= 1, got 0"):
        pyinvert.render_hog(features, glyph_size=0)


# ---- documentation ------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [pyinvert.hog, pyinvert.HOG, pyinvert.render_hog, reference.hog])
def test_documented_defaults_match_signature(fn):
    doc = inspect.getdoc(fn) or ""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = [
        p
        for p in inspect.signature(target).parameters.values()
        if p.default is not inspect.Parameter.empty
    ]
    if fn is reference.hog:
        assert inspect.signature(fn) == inspect.signature(pyinvert.hog)
    for p in params:
        match = re.search(rf"^\s*{p.name}:.*?Default: (.+?)\.\s*$", doc, re.M | re.S)
        assert match, f"{fn.__name__}: {p.name} has no documented default"
        documented = match.group(1).split("Default:")[-1].strip()
        assert documented == (
            f'"{p.default}"' if isinstance(p.default, str) else repr(p.default)
        ), (p.name, documented)


def test_docstring_examples():
    module = importlib.import_module("pyinvert.features.hog")
    results = doctest.testmod(module, verbose=False)
    assert results.attempted > 0 and results.failed == 0


# ---- CUDA -------------------------------------------------------------------------------


def _cuda_source_as_host_cpp(source):
    """csrc/cuda/hog_kernel.cu rewritten as host C++: with PYI_CUDA_ON_HOST, cuda/launch.cuh
    makes __global__ kernels plain functions whose grid-stride loops run in one thread (blockIdx
    0, blockDim 1, gridDim 1); launches become calls, and the ops register as hog_on_host::* for
    CPU tensors. The argument checks are the shared ones (common/hog_math.h), compiled in."""
    source = re.sub(r"<<<.*?>>>", "", source, flags=re.S)
    source = source.replace(
        "TORCH_LIBRARY_IMPL(pyinvert, CUDA, m)",
        """
TORCH_LIBRARY(hog_on_host, m) {
  m.def("hog(Tensor x, int cell_size, int num_orientations, int variant, "
        "bool bilinear_orientations, bool save_for_backward) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("_hog_backward(Tensor grad, Tensor x, Tensor hist, Tensor pixels, Tensor jacobian, "
        "int cell_size, int num_orientations, int variant, bool bilinear_orientations) -> Tensor");
}
TORCH_LIBRARY_IMPL(hog_on_host, CPU, m)""",
    )
    assert "hog_on_host, CPU" in source
    return "#define PYI_CUDA_ON_HOST\n" + source


@pytest.mark.slow
def test_cuda_kernels_emulated_on_host(tmp_path):
    """The CUDA tests below need a GPU; this one compiles csrc/cuda/hog_kernel.cu as host C++
    (each grid-stride loop in one thread) and checks that it gives the CPU kernel's results:
    the CUDA drivers' indexing, gathers, buffer layouts and launch sequence are exercised."""
    from pathlib import Path

    from torch.utils.cpp_extension import load

    csrc = Path(pyinvert.__file__).resolve().parent.parent / "csrc"
    if not (csrc / "cuda" / "hog_kernel.cu").exists():
        pytest.skip("needs a source checkout (csrc/)")
    host = tmp_path / "hog_cuda_on_host.cpp"
    host.write_text(_cuda_source_as_host_cpp((csrc / "cuda" / "hog_kernel.cu").read_text()))
    load(
        name="hog_cuda_on_host",
        sources=[str(host)],
        extra_include_paths=[str(csrc)],
        extra_cflags=["-O1"],
        is_python_module=False,
        build_directory=str(tmp_path),
    )
    for x, kwargs in sample_inputs(requires_grad=False):
        for dtype in DTYPES:
            xd = x.to(dtype)
            code = 0 if kwargs["variant"] == "uoctti" else 1
            params = (
                kwargs["cell_size"],
                kwargs["num_orientations"],
                code,
                kwargs["bilinear_orientations"],
            )
            expected = torch.ops.pyinvert.hog(xd, *params, True)
            got = torch.ops.hog_on_host.hog(xd, *params, True)
            for e, g in zip(expected, got):
                assert torch.equal(e, g)
            grad = torch.randn(
                expected[0].shape, generator=torch.Generator().manual_seed(2), dtype=dtype
            )
            dx = torch.ops.pyinvert._hog_backward(grad, xd, *expected[1:], *params)
            dx_host = torch.ops.hog_on_host._hog_backward(grad, xd, *got[1:], *params)
            torch.testing.assert_close(
                dx_host,
                dx,
                rtol=1e-5 if dtype == torch.float32 else 1e-12,
                atol=1e-6 if dtype == torch.float32 else 1e-14,
            )
    # And VLFeat's numbers on a photo.
    image = torch.from_numpy(photo("coffee"))[None]
    for variant, bilinear in itertools.product((0, 1), (False, True)):
        assert torch.equal(
            torch.ops.hog_on_host.hog(image, 8, 9, variant, bilinear, False)[0],
            torch.ops.pyinvert.hog(image, 8, 9, variant, bilinear, False)[0],
        )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    for x, kwargs in sample_inputs(dtype=dtype, requires_grad=False):
        xc = x.cuda().requires_grad_()
        x = x.detach().requires_grad_()
        out, out_cuda = pyinvert.hog(x, **kwargs), pyinvert.hog(xc, **kwargs)
        torch.testing.assert_close(out_cuda.cpu(), out, rtol=0, atol=1e-6)
        g = torch.randn_like(out)
        (grad,) = torch.autograd.grad(out, x, g)
        (grad_cuda,) = torch.autograd.grad(out_cuda, xc, g.cuda())
        torch.testing.assert_close(grad_cuda.cpu(), grad, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_matches_vlfeat(vl):
    image = photo("astronaut")
    x = torch.from_numpy(image)[None].cuda()
    for variant, bilinear in itertools.product(VARIANTS, [False, True]):
        got = pyinvert.hog(x, variant=variant, bilinear_orientations=bilinear)[0].cpu().numpy()
        assert np.abs(got - vl_hog(image, 8, 9, variant, bilinear)).max() <= VL_TOL
