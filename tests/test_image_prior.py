"""The fused image prior against its pure-PyTorch definition (pyinvert.reference)."""

import itertools

import pytest
import torch

import pyinvert
from pyinvert import reference
from tests.conftest import DEVICES, DTYPES

SHAPES = [(0, 3, 5, 7), (1, 1, 9, 7), (3, 3, 13, 11), (3, 4, 1, 9), (1, 3, 8, 1), (2, 1, 1, 1)]
SETTINGS = [
    dict(beta=2.0, alpha=6.0, norm_weight=0.0),
    dict(beta=1.0, alpha=2.0, norm_weight=0.5, eps=1e-3),
    dict(beta=1.5, alpha=6.0, norm_weight=1e-3, eps=1e-2),
    dict(beta=3.0, alpha=6.0, norm_weight=1e-3, isotropic=True),
    dict(beta=2.0, alpha=2.0, norm_weight=0.7, isotropic=True),
    dict(beta=1.0, alpha=6.0, norm_weight=1e-2, isotropic=True),  # beta=1, eps=0: kinks at 0
]


def sample_inputs(device="cpu", dtype=torch.float64, requires_grad=True):
    """(x, kwargs) pairs shared by the correctness, gradient and opcheck tests."""
    gen = torch.Generator().manual_seed(0)
    for shape, setting in zip(itertools.cycle(SHAPES), SETTINGS * 2):
        x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        yield x.requires_grad_(requires_grad), dict(setting)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if b.numel() else 0.0


def value_and_grad(fn, x, kwargs):
    x = x.detach().requires_grad_()
    value = fn(x, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), x) if x.numel() else (torch.zeros_like(x),)
    return value.detach(), grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_matches_reference(device, dtype, shape, setting):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(device)
    # The oracle runs in float64 on the same (rounded) input.
    expected_value, expected_grad = value_and_grad(
        reference.image_prior, x.to(dtype).double(), setting
    )
    value, grad = value_and_grad(pyinvert.image_prior, x.to(dtype), setting)
    assert value.dtype == dtype and value.shape == (shape[0],)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert rel_err(value.double(), expected_value) < tol
    assert rel_err(grad.double(), expected_grad) < tol


@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last", "expanded"])
def test_any_strides(layout):
    base = torch.randn(3, 4, 12, 10, dtype=torch.float64)
    x = {
        "transposed": base.transpose(2, 3),
        "sliced": base[:, ::2, 1::2, ::3],
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "expanded": base[:1].expand(3, -1, -1, -1),
    }[layout]
    assert not x.is_contiguous()
    setting = dict(beta=1.5, norm_weight=0.1, alpha=6.0, eps=1e-3)
    value, grad = value_and_grad(pyinvert.image_prior, x, setting)
    expected_value, expected_grad = value_and_grad(reference.image_prior, x.contiguous(), setting)
    assert rel_err(value, expected_value) < 1e-12
    assert rel_err(grad, expected_grad) < 1e-12


def test_per_image_weights_equal_single_image_calls():
    x = torch.randn(4, 3, 9, 11, dtype=torch.float64)
    tv_w = torch.tensor([0.0, 1.0, 2.5, 10.0], dtype=torch.float64)
    norm_w = torch.tensor([1e-3, 0.0, 1.0, 0.5], dtype=torch.float64)
    kw = dict(beta=2.0, alpha=6.0, isotropic=True)
    batched, batched_grad = value_and_grad(
        lambda x, **k: pyinvert.image_prior(x, tv_weight=tv_w, norm_weight=norm_w, **k), x, kw
    )
    for b in range(4):
        single, single_grad = value_and_grad(
            lambda x, **k: pyinvert.image_prior(
                x, tv_weight=float(tv_w[b]), norm_weight=float(norm_w[b]), **k
            ),
            x[b : b + 1],
            kw,
        )
        torch.testing.assert_close(batched[b : b + 1], single, rtol=1e-13, atol=0)
        torch.testing.assert_close(batched_grad[b : b + 1], single_grad, rtol=1e-13, atol=0)


def test_conveniences_and_module_call_the_same_op():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(pyinvert.tv_norm(x, beta=1.5), reference.tv_norm(x, 1.5))
    torch.testing.assert_close(pyinvert.alpha_norm(x, alpha=6.0), reference.alpha_norm(x, 6.0))
    torch.testing.assert_close(pyinvert.isotropic_norm(x, 2.0), reference.isotropic_norm(x, 2.0))
    module = pyinvert.ImagePrior(tv_weight=2.0, norm_weight=0.1, isotropic=True)
    torch.testing.assert_close(
        module(x), reference.image_prior(x, tv_weight=2.0, norm_weight=0.1, isotropic=True)
    )


def test_zero_base_has_zero_gradient():
    # Constant image: every difference is 0, so TV_1 has an undefined derivative everywhere;
    # the rule says 0. Zero pixels do the same for the alpha-norm with alpha <= 1.
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    value = pyinvert.image_prior(x, beta=1.0, norm_weight=1.0, alpha=1.0)
    value.sum().backward()
    assert value.item() == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_nan_stays_in_its_image():
    x = torch.randn(3, 3, 8, 8)
    x[1, 2, 4, 4] = float("nan")
    x.requires_grad_()
    value = pyinvert.image_prior(x, norm_weight=1e-3)
    value.sum().backward()
    assert torch.isnan(value[1]) and torch.isfinite(value[[0, 2]]).all()
    assert torch.isfinite(x.grad[[0, 2]]).all()


def test_value_without_grad_matches():
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64)
    with torch.no_grad():
        value = pyinvert.image_prior(x, norm_weight=0.3, beta=3.0)
    torch.testing.assert_close(value, reference.image_prior(x, norm_weight=0.3, beta=3.0))


def test_deterministic_across_thread_counts():
    x = torch.randn(3, 3, 67, 45)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = value_and_grad(pyinvert.image_prior, x, dict(norm_weight=1e-3))
        torch.set_num_threads(2)
        two = value_and_grad(pyinvert.image_prior, x, dict(norm_weight=1e-3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@pytest.mark.parametrize("index", range(len(SETTINGS)))
def test_gradcheck(index):
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    setting = dict(SETTINGS[index])
    setting["eps"] = max(setting.get("eps", 0.0), 1e-3)  # keep TV smooth for finite differences
    tv_w = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: pyinvert.image_prior(x, tv_weight=tv_w, **setting), (x,)
    )


def _op_args(x, kwargs):
    B = x.shape[0]
    tv = torch.full((B,), kwargs.get("tv_weight", 1.0), dtype=x.dtype, device=x.device)
    norm = torch.full((B,), kwargs.get("norm_weight", 0.0), dtype=x.dtype, device=x.device)
    return (
        x,
        tv,
        norm,
        kwargs["beta"],
        kwargs["alpha"],
        kwargs.get("isotropic", False),
        kwargs.get("eps", 0.0),
        True,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for x, kwargs in sample_inputs(device):
        torch.library.opcheck(torch.ops.pyinvert.image_prior.default, _op_args(x, kwargs))


def test_compile_fullgraph():
    x = torch.randn(2, 3, 12, 10, requires_grad=True)

    def loss(x):
        return (pyinvert.image_prior(x, norm_weight=1e-3, isotropic=True) * 2).sum()

    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(x)
    (grad,) = torch.autograd.grad(value, x)
    (expected,) = torch.autograd.grad(loss(x), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    for x, kwargs in sample_inputs("cpu", dtype, requires_grad=False):
        expected = value_and_grad(pyinvert.image_prior, x, kwargs)
        actual = value_and_grad(pyinvert.image_prior, x.cuda(), kwargs)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        assert rel_err(actual[0].cpu(), expected[0]) < tol
        assert rel_err(actual[1].cpu(), expected[1]) < tol


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: pyinvert.image_prior(torch.zeros(3, 4, 4)),
            ValueError,
            r"image_prior: expected x of shape \(B, C, H, W\), got \[3, 4, 4\]",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(1, 1, 4, 4, dtype=torch.int64)),
            TypeError,
            r"image_prior: expected x of dtype float32 or float64, got torch.int64",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(1, 1, 4, 4, dtype=torch.float16)),
            TypeError,
            r"expected x of dtype float32 or float64, got torch.float16",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(1, 1, 4, 4), beta=0.0),
            ValueError,
            r"image_prior: expected beta > 0, got 0.0",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(1, 1, 4, 4), alpha=-1),
            ValueError,
            r"image_prior: expected alpha > 0, got -1",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(1, 1, 4, 4), eps=-1e-3),
            ValueError,
            r"image_prior: expected eps >= 0, got -0.001",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(2, 1, 4, 4), tv_weight=torch.ones(3)),
            ValueError,
            r"image_prior: expected tv_weight to be a float or of shape \(2,\), got \[3\]",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(2, 1, 4, 4), norm_weight=torch.ones(2, 1)),
            ValueError,
            r"expected norm_weight to be a float or of shape \(2,\), got \[2, 1\]",
        ),
        (
            lambda: pyinvert.image_prior(torch.zeros(2, 1, 4, 4), norm_weight="1"),
            TypeError,
            r"expected norm_weight to be a float or a Tensor, got str",
        ),
        (
            lambda: pyinvert.image_prior([[1.0]]),
            TypeError,
            r"image_prior: expected x to be a torch.Tensor, got list",
        ),
        (
            lambda: pyinvert.ImagePrior(beta=-2),
            ValueError,
            r"ImagePrior: expected beta > 0, got -2",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_op_checks_its_own_arguments():
    # Calling the op directly (bypassing the wrapper) must raise, not crash.
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"image_prior: expected tv_weight of shape \(2,\)"):
        torch.ops.pyinvert.image_prior(x, torch.ones(3), torch.ones(2), 2.0, 6.0, False, 0.0, True)
    with pytest.raises(ValueError, match=r"image_prior: expected beta > 0, got -1"):
        torch.ops.pyinvert.image_prior(x, torch.ones(2), torch.ones(2), -1.0, 6.0, False, 0.0, True)
    with pytest.raises(RuntimeError, match=r"expected tv_weight of dtype Float, got Double"):
        torch.ops.pyinvert.image_prior(
            x, torch.ones(2, dtype=torch.float64), torch.ones(2), 2.0, 6.0, False, 0.0, True
        )


def test_backward_scales_and_refuses_a_reused_gradient_that_was_modified():
    x = torch.randn(2, 3, 40, 40, dtype=torch.float64, requires_grad=True)  # > 1 MB: recycled
    expected = value_and_grad(reference.image_prior, x, dict(norm_weight=1e-3))[1]
    value = pyinvert.image_prior(x, norm_weight=1e-3)
    (value * torch.tensor([2.0, -3.0], dtype=torch.float64)).sum().backward(retain_graph=True)
    torch.testing.assert_close(
        x.grad, expected * torch.tensor([2.0, -3.0]).view(2, 1, 1, 1).double()
    )
    x.grad = None
    value = pyinvert.image_prior(x, norm_weight=1e-3)
    for k in (1, 2, 3):  # scale 1: the stored gradient is handed over; accumulation is correct
        value.sum().backward(retain_graph=True)
        torch.testing.assert_close(x.grad, k * expected)
    # A gradient handed over and then changed in place cannot be handed over again.
    value = pyinvert.image_prior(x, norm_weight=1e-3)
    (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
    grad.mul_(0)
    with pytest.raises(RuntimeError, match="image_prior: a second backward through the same"):
        torch.autograd.grad(value.sum(), x)


def test_recycled_outputs_are_independent():
    # Gradients of successive calls may reuse freed buffers, never live ones.
    x = torch.randn(2, 3, 300, 300, dtype=torch.float64, requires_grad=True)
    grads = []
    for scale in (1.0, 2.0, 3.0):
        (grad,) = torch.autograd.grad(pyinvert.image_prior(x * scale).sum(), x)
        grads.append(grad)
    torch.testing.assert_close(grads[1], 4 * grads[0])
    torch.testing.assert_close(grads[2], 9 * grads[0])
