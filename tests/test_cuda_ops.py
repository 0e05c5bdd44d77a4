"""The CUDA kernels against the CPU kernels on the same inputs: image_prior and hog /
_hog_backward here, dsift / _dsift_backward in test_cuda_dsift.py (with these helpers); values
and gradients in float32 and float64, float64 gradcheck and opcheck on CUDA, non-contiguous and
empty inputs, determinism, and the device checks.

Every test is marked ``cuda`` (tests/conftest.py skips them without a CUDA device).

Tolerances, from what the kernels promise (csrc/common/*.h):

* HOG with hard orientation bins and dense SIFT (both windows) run, in their forward pass, only
  correctly rounded operations (the rn_* helpers of csrc/common/rounding.h: no FMA contraction,
  no fast-math division or square root), in the same order as the CPU driver: their forward
  outputs must be **bit-identical** to the CPU's, in float32 and float64.
* HOGb (bilinear orientations) also calls acos, whose CUDA and glibc versions differ by an ulp
  or two; the orientation bins and the chosen channels stay bit-identical.
* The backward passes (and the saved HOG Jacobian) use plain arithmetic, which nvcc contracts
  into FMAs and, with --use_fast_math, divides approximately in float32: they are compared
  relative to the largest magnitude, ||cuda - cpu||_inf <= tol * ||cpu||_inf, with tol 1e-5
  (HOG, the prior) or 1e-4 (DSIFT, whose backward sums ~100 products per pixel) in float32 and
  1e-10 in float64.
* The image prior is built with --use_fast_math (powf, sqrt, division approximate in float32):
  CUDA float32 is compared with the float64 CPU computation on the same input (1e-5 relative to
  the largest magnitude, the CPU test's tolerance), CUDA float64 with CPU float64 (1e-10).
"""

import itertools

import pytest
import torch

import pyinvert
from pyinvert import reference

pytestmark = pytest.mark.cuda

CUDA = "cuda"
DTYPES = [torch.float32, torch.float64]
BACKWARD_TOL = {
    "prior": {torch.float32: 1e-5, torch.float64: 1e-10},
    "hog": {torch.float32: 1e-5, torch.float64: 1e-10},
    "dsift": {torch.float32: 1e-4, torch.float64: 1e-10},
}


@pytest.fixture(autouse=True)
def cuda_kernels():
    """A CUDA device without our CUDA kernels is a broken build, not a skip."""
    for op in ("image_prior", "hog", "_hog_backward", "dsift", "_dsift_backward"):
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"pyinvert::{op}", "CUDA"):
            pytest.fail(
                f"pyinvert::{op} has no CUDA kernel: pyinvert was built without CUDA "
                f"(rebuild with a CUDA torch and toolkit, PYINVERT_CUDA=1)"
            )


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel_max(actual, expected):
    """||actual - expected||_inf / ||expected||_inf (0 for empty tensors; NaN never passes)."""
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.numel() == 0:
        return 0.0
    error = (actual - expected).abs().max().item()
    return error / max(expected.abs().max().item(), 1e-300)


def assert_equal(actual, expected, what=""):
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    if not torch.equal(actual, expected):
        diff = (actual.double() - expected.double()).abs()
        raise AssertionError(
            f"{what}: not bit-identical: {int((diff != 0).sum())} of "
            f"{diff.numel()} elements differ, max abs difference "
            f"{diff.max().item():.3g}"
        )


def grad_of(fn, x, weights):
    """(output, d(sum(output * weights))/dx) with x a fresh leaf on its own device."""
    x = x.detach().requires_grad_()
    out = fn(x)
    (grad,) = torch.autograd.grad((out * weights.to(out.device, out.dtype)).sum(), x)
    return out.detach(), grad


def weights_for(fn, x, seed):
    """Random CPU weights of the shape (and dtype) of fn(x)'s output."""
    with torch.no_grad():
        out = fn(x)
    return torch.randn(out.shape, generator=gen(seed), dtype=torch.float64).to(out.dtype)


def layouts(x):
    """x with the same values in non-contiguous layouts."""
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    yield "transposed", x.transpose(2, 3).contiguous().transpose(2, 3)
    wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]


# ---- image prior ------------------------------------------------------------------------------

PRIOR_SHAPES = [
    (0, 3, 5, 7),
    (1, 1, 9, 7),
    (3, 3, 13, 11),
    (3, 4, 1, 9),
    (1, 3, 8, 1),
    (2, 1, 1, 1),
    (2, 3, 67, 45),
]  # the last one spans 12 thread blocks per image
PRIOR_SETTINGS = [
    dict(beta=2.0, alpha=6.0, norm_weight=0.0),
    dict(beta=1.0, alpha=2.0, norm_weight=0.5, eps=1e-3),
    dict(beta=1.5, alpha=6.0, norm_weight=1e-3, eps=1e-2),  # general exponent: powf
    dict(beta=3.0, alpha=6.0, norm_weight=1e-3, isotropic=True),
    dict(beta=2.0, alpha=2.0, norm_weight=0.7, isotropic=True),
    dict(beta=1.0, alpha=6.0, norm_weight=1e-2, isotropic=True),  # beta=1, eps=0: kinks at 0
    dict(beta=2.5, alpha=1.5, norm_weight=0.3),  # two general exponents
]


def prior_fn(setting, B, device, dtype):
    # Per-image weights, one of them 0 (the term is switched off for that image).
    tv = torch.tensor([1.0, 0.0, 2.5][:B] + [1.0] * max(B - 3, 0), dtype=dtype, device=device)
    return lambda x: pyinvert.image_prior(x, tv_weight=tv, **setting)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", PRIOR_SHAPES)
@pytest.mark.parametrize("index", range(len(PRIOR_SETTINGS)))
def test_prior_matches_cpu(dtype, shape, index):
    setting = PRIOR_SETTINGS[index]
    x = (torch.randn(shape, generator=gen(index), dtype=torch.float64) * 3).to(dtype)
    weights = torch.randn(shape[0], generator=gen(7), dtype=torch.float64)
    # The CPU oracle runs in float64 on the same (rounded) input.
    value, grad = grad_of(prior_fn(setting, shape[0], CUDA, dtype), x.to(CUDA), weights.to(dtype))
    expected_value, expected_grad = grad_of(
        prior_fn(setting, shape[0], "cpu", torch.float64), x.double(), weights
    )
    assert value.device.type == CUDA and value.dtype == dtype and value.shape == (shape[0],)
    assert grad.device.type == CUDA and grad.dtype == dtype
    tol = BACKWARD_TOL["prior"][dtype]
    assert rel_max(value, expected_value) <= tol
    assert rel_max(grad, expected_grad) <= tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_prior_non_contiguous_equals_contiguous(dtype):
    base = torch.randn(3, 4, 24, 20, generator=gen(1), dtype=dtype).to(CUDA)
    setting = dict(beta=1.5, norm_weight=0.1, alpha=6.0, eps=1e-3)
    weights = torch.ones(3, dtype=dtype)
    fn = prior_fn(setting, 3, CUDA, dtype)
    expected = grad_of(fn, base, weights)
    for name, x in layouts(base):
        value, grad = grad_of(fn, x, weights)
        assert_equal(value, expected[0], f"{name} value")
        assert_equal(grad, expected[1], f"{name} grad")
    # An expanded batch (stride 0): every image gets the first image's prior.
    x = base[:1].expand(3, -1, -1, -1)
    value, _ = grad_of(lambda t: pyinvert.image_prior(t, **setting), x, weights)
    assert_equal(value, value[:1].expand(3), "expanded")


def test_prior_empty_inputs():
    for shape in [(0, 3, 5, 7), (2, 0, 4, 4)]:
        x = torch.zeros(shape, device=CUDA, requires_grad=True)
        value = pyinvert.image_prior(x, norm_weight=1e-3)
        assert value.shape == (shape[0],) and value.device.type == CUDA
        assert not value.any()
        value.sum().backward()
        assert x.grad.shape == x.shape and not x.grad.any()


def test_prior_deterministic():
    x = torch.randn(4, 3, 300, 300, generator=gen(2)).to(CUDA)
    setting = dict(norm_weight=1e-3, beta=1.5, eps=1e-3, isotropic=True)
    weights = torch.randn(4, generator=gen(3))
    runs = [grad_of(lambda t: pyinvert.image_prior(t, **setting), x, weights) for _ in range(2)]
    assert_equal(runs[0][0], runs[1][0], "value")
    assert_equal(runs[0][1], runs[1][1], "grad")


@pytest.mark.parametrize("index", range(len(PRIOR_SETTINGS)))
def test_prior_gradcheck(index):
    x = torch.randn(2, 3, 5, 4, generator=gen(index), dtype=torch.float64).to(CUDA)
    setting = dict(PRIOR_SETTINGS[index])
    setting["eps"] = max(setting.get("eps", 0.0), 1e-3)  # keep TV smooth for finite differences
    tv = torch.tensor([1.0, 0.5], dtype=torch.float64, device=CUDA)
    assert torch.autograd.gradcheck(
        lambda t: pyinvert.image_prior(t, tv_weight=tv, **setting), (x.requires_grad_(),)
    )


def test_prior_opcheck():
    for shape, setting in zip(PRIOR_SHAPES, PRIOR_SETTINGS):
        x = torch.randn(shape, generator=gen(4), dtype=torch.float64).to(CUDA)
        B = shape[0]
        tv = torch.full((B,), 1.0, dtype=x.dtype, device=CUDA)
        norm = torch.full((B,), setting["norm_weight"], dtype=x.dtype, device=CUDA)
        for compute_grad in (True, False):
            torch.library.opcheck(
                torch.ops.pyinvert.image_prior.default,
                (
                    x.requires_grad_(compute_grad),
                    tv,
                    norm,
                    setting["beta"],
                    setting["alpha"],
                    setting.get("isotropic", False),
                    setting.get("eps", 0.0),
                    compute_grad,
                ),
            )


def test_prior_compile_fullgraph():
    x = torch.randn(2, 3, 12, 10, generator=gen(5)).to(CUDA).requires_grad_()

    def loss(t):
        return (pyinvert.image_prior(t, norm_weight=1e-3, isotropic=True) * 2).sum()

    (grad,) = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(x), x)
    (expected,) = torch.autograd.grad(loss(x), x)
    assert_equal(grad, expected, "compiled grad")


def test_prior_device_errors():
    x = torch.zeros(2, 1, 4, 4, device=CUDA)
    with pytest.raises(RuntimeError, match=r"image_prior: expected tv_weight on cuda:0, got cpu"):
        torch.ops.pyinvert.image_prior(
            x, torch.ones(2), torch.ones(2, device=CUDA), 2.0, 6.0, False, 0.0, True
        )


# ---- HOG --------------------------------------------------------------------------------------

HOG_SETTINGS = [
    dict(cell_size=4, num_orientations=9, variant="uoctti"),
    dict(cell_size=3, num_orientations=4, variant="dalaltriggs"),
    dict(cell_size=5, num_orientations=2, variant="uoctti"),
    dict(cell_size=4, num_orientations=1, variant="dalaltriggs"),
    dict(cell_size=8, num_orientations=9, variant="uoctti"),
]
HOG_SHAPES = [(2, 3, 13, 11), (1, 1, 16, 16), (3, 2, 9, 14), (1, 4, 12, 7), (2, 3, 224, 224)]


def hog_images(shape, seed, dtype, kind):
    """ "noise", or "quantised" noise: flat areas, exact ties between channels and bins."""
    x = torch.rand(shape, generator=gen(seed), dtype=torch.float64)
    if kind == "quantised":
        x = torch.round(x * 3) / 3 * 255
    return x.to(dtype)


def hog_op_args(setting, bilinear):
    code = 0 if setting["variant"] == "uoctti" else 1
    return setting["cell_size"], setting["num_orientations"], code, bilinear


def hog_cases():
    for (shape, setting), bilinear, kind in itertools.product(
        zip(HOG_SHAPES, HOG_SETTINGS), (False, True), ("noise", "quantised")
    ):
        yield shape, setting, bilinear, kind


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bilinear", [False, True], ids=["hard", "bilinear"])
def test_hog_forward_matches_cpu(dtype, bilinear):
    for index, (shape, setting, _, kind) in enumerate(c for c in hog_cases() if c[2] == bilinear):
        x = hog_images(shape, index, dtype, kind)
        args = hog_op_args(setting, bilinear)
        cpu = torch.ops.pyinvert.hog(x, *args, True)
        cuda = torch.ops.pyinvert.hog(x.to(CUDA), *args, True)
        what = f"{shape} {setting} {kind}"
        assert all(t.device.type == CUDA for t in cuda)
        # The chosen channel and orientation bins of every pixel: always the same.
        assert_equal(cuda[2], cpu[2], f"pixels {what}")
        if not bilinear:
            assert_equal(cuda[0], cpu[0], f"features {what}")
            assert_equal(cuda[1], cpu[1], f"hist {what}")
        else:  # acos differs by an ulp or two
            tol = 2e-6 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=0, atol=tol, msg=what)
            assert rel_max(cuda[1], cpu[1]) <= tol, what
        # The saved Jacobian has plain (contractible, fast-math) arithmetic; HOGb's has a kink on
        # each bin centre, which quantised images hit exactly.
        if not (bilinear and kind == "quantised"):
            assert rel_max(cuda[3], cpu[3]) <= BACKWARD_TOL["hog"][dtype], what
        # And the public function returns the same features.
        kwargs = dict(setting, bilinear_orientations=bilinear)
        assert_equal(pyinvert.hog(x.to(CUDA), **kwargs), cuda[0], f"pyinvert.hog {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bilinear", [False, True], ids=["hard", "bilinear"])
def test_hog_backward_matches_cpu(dtype, bilinear):
    for index, (shape, setting, _, kind) in enumerate(c for c in hog_cases() if c[2] == bilinear):
        # HOGb's derivative has a kink on each bin centre, which quantised images hit exactly
        # and where CPU (exact products) and CUDA (FMA) may take different sides.
        if bilinear and kind == "quantised":
            continue
        x = hog_images(shape, 100 + index, dtype, kind)
        kwargs = dict(setting, bilinear_orientations=bilinear)
        fn = lambda t: pyinvert.hog(t, **kwargs)  # noqa: E731
        weights = weights_for(fn, x, index)
        _, grad = grad_of(fn, x.to(CUDA), weights)
        _, expected = grad_of(fn, x, weights)
        assert grad.device.type == CUDA
        assert rel_max(grad, expected) <= BACKWARD_TOL["hog"][dtype], (shape, kwargs, kind)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hog_tiny_and_empty(dtype):
    # Fewer than 3 pixels per side: no interior pixel, all-zero features and gradient.
    for shape, cs in [
        ((1, 1, 2, 2), 2),
        ((2, 3, 1, 5), 1),
        ((1, 2, 3, 3), 4),
        ((0, 3, 20, 17), 8),
        ((0, 1, 2, 2), 2),
    ]:
        x = torch.rand(shape, generator=gen(6), dtype=dtype)
        fn = lambda t: pyinvert.hog(t, cell_size=cs)  # noqa: E731
        weights = weights_for(fn, x, 7)
        out, grad = grad_of(fn, x.to(CUDA), weights)
        expected, expected_grad = grad_of(fn, x, weights)
        assert_equal(out, expected, f"features {shape}")
        assert grad.shape == x.shape and torch.isfinite(grad).all()
        assert rel_max(grad, expected_grad) <= BACKWARD_TOL["hog"][dtype], shape


def test_hog_non_contiguous_equals_contiguous():
    x = torch.rand(3, 3, 40, 36, generator=gen(8)).to(CUDA)
    for kwargs in [dict(), dict(variant="dalaltriggs", bilinear_orientations=True)]:
        fn = lambda t: pyinvert.hog(t, **kwargs)  # noqa: E731
        w = weights_for(fn, x, 9)
        expected = grad_of(fn, x, w)
        for name, xl in itertools.chain(layouts(x), [("flipped", x.flip(-1).flip(-1))]):
            out, grad = grad_of(fn, xl, w)
            assert_equal(out, expected[0], f"{name} features")
            assert_equal(grad, expected[1], f"{name} grad")


def test_hog_deterministic_and_batch_equals_single():
    x = torch.rand(4, 3, 224, 224, generator=gen(10)).to(CUDA)
    for bilinear in (False, True):
        runs = []
        for _ in range(2):
            saved = torch.ops.pyinvert.hog(x, 8, 9, 0, bilinear, True)
            grad = torch.ops.pyinvert._hog_backward(
                torch.ones_like(saved[0]), x, *saved[1:], 8, 9, 0, bilinear
            )
            runs.append((*saved, grad))
        for a, b, name in zip(runs[0], runs[1], ("features", "hist", "pixels", "jacobian", "grad")):
            assert_equal(a, b, f"second run {name} (bilinear={bilinear})")
        fn = lambda t: pyinvert.hog(t, bilinear_orientations=bilinear)  # noqa: E731
        weights = weights_for(fn, x, 11)
        out, grad = grad_of(fn, x, weights)
        for b in (0, 3):
            single, single_grad = grad_of(fn, x[b : b + 1], weights[b : b + 1])
            assert_equal(single, out[b : b + 1], f"image {b} features")
            assert_equal(single_grad, grad[b : b + 1], f"image {b} grad")


def test_hog_gradcheck():
    # The CPU suite's inputs (tests/test_hog.py sample_inputs), on CUDA.
    g = gen(0)
    shapes = HOG_SHAPES[:4]
    for (shape, setting), bilinear in itertools.product(zip(shapes, HOG_SETTINGS), (False, True)):
        x = torch.rand(shape, generator=g, dtype=torch.float64).to(CUDA).requires_grad_()
        kwargs = dict(setting, bilinear_orientations=bilinear)
        assert torch.autograd.gradcheck(
            lambda t: pyinvert.hog(t, **kwargs), (x,), eps=1e-7, atol=1e-6, rtol=1e-4
        ), kwargs


def test_hog_opcheck():
    for index, (shape, setting) in enumerate(zip(HOG_SHAPES[:4], HOG_SETTINGS)):
        for bilinear, save in itertools.product((False, True), (True, False)):
            x = torch.rand(shape, generator=gen(index), dtype=torch.float64).to(CUDA)
            args = hog_op_args(setting, bilinear)
            torch.library.opcheck(
                torch.ops.pyinvert.hog.default, (x.requires_grad_(save), *args, save)
            )
            features, hist, pixels, jacobian = torch.ops.pyinvert.hog(x.detach(), *args, True)
            torch.library.opcheck(
                torch.ops.pyinvert._hog_backward.default,
                (torch.randn_like(features), x.detach(), hist, pixels, jacobian, *args),
            )


def test_hog_device_errors():
    x = torch.rand(1, 3, 32, 32, device=CUDA)
    features, hist, pixels, jacobian = torch.ops.pyinvert.hog(x, 8, 9, 0, False, True)
    with pytest.raises(RuntimeError, match=r"_hog_backward: expected grad on cuda:0, got cpu"):
        torch.ops.pyinvert._hog_backward(features.cpu(), x, hist, pixels, jacobian, 8, 9, 0, False)


def test_hog_matches_reference_on_cuda():
    # The pure-PyTorch reference on the same device (the benchmark's baseline computes this).
    x = torch.rand(2, 3, 64, 48, generator=gen(12)).to(CUDA)
    for bilinear in (False, True):
        fn = lambda t: pyinvert.hog(t, bilinear_orientations=bilinear)  # noqa: E731
        weights = weights_for(fn, x, 13)
        out, grad = grad_of(fn, x, weights)
        ref, ref_grad = grad_of(
            lambda t: reference.hog(t, bilinear_orientations=bilinear), x, weights
        )
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        assert rel_max(grad, ref_grad) <= 1e-4
