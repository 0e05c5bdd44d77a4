"""The fused Fields-of-Experts op (pyinvert.priors.foe_op) against the pure-PyTorch conv2d
formulation (pyinvert.reference.foe): energy, grad_x, Laplacian and the parameter gradients,
float64 (tight) and float32 (1e-5 relative to the largest magnitude; the CPU float path uses
its own log1p / exp polynomials), every filter size, C = 1 and 3, odd sizes, batches,
non-contiguous inputs, empty batches and images smaller than the filters; float64 gradcheck and
gradgradcheck, opcheck, the Laplacian against autograd's exact Hessian trace, the errors; and
CUDA against CPU (skipped without a GPU).
"""

import pytest
import torch

from pyinvert.priors.foe_op import foe_energy, foe_energy_grad, foe_laplacian
from pyinvert.reference import foe as reference

EXPERTS = ["student_t", "logcosh"]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sample(B=2, C=1, H=11, W=13, n=4, k=3, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    filters = torch.randn(n, C, k, k, generator=g, dtype=torch.float64) / k
    alphas = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    return (t.to(device=device, dtype=dtype) for t in (x, filters, alphas))


def rel(actual, expected):
    scale = expected.abs().max().clamp_min(1e-30)
    return ((actual.double() - expected.double()).abs().max() / scale).item()


def reference_all(x, filters, alphas, expert):
    """Energy, grad_x, Laplacian and the parameter gradients for weights ge, in float64."""
    x, filters, alphas = (t.detach().double().requires_grad_() for t in (x, filters, alphas))
    energy = reference.foe_energy(x, filters, alphas, expert)
    ge = torch.linspace(-1.0, 2.0, x.shape[0], dtype=torch.float64)
    (gx,) = torch.autograd.grad(energy.sum(), x, retain_graph=True)
    gf, ga = torch.autograd.grad((energy * ge).sum(), (filters, alphas))
    lap = reference.foe_laplacian(x.detach(), filters.detach(), alphas.detach(), expert)
    return energy.detach(), gx, lap, ge, gf, ga


def check_against_reference(x, filters, alphas, expert):
    tol = TOL[x.dtype]
    energy, grad, lap = foe_energy_grad(x, filters, alphas, expert, with_laplacian=True)
    ref_e, ref_g, ref_l, ge, ref_gf, ref_ga = reference_all(x, filters, alphas, expert)
    assert energy.dtype == grad.dtype == lap.dtype == x.dtype
    assert grad.shape == x.shape and energy.shape == lap.shape == (x.shape[0],)
    assert rel(energy, ref_e) < tol
    assert rel(grad, ref_g) < tol
    assert rel(lap, ref_l) < tol
    gf, ga = torch.ops.pyinvert.foe_param_grad(
        x, filters, alphas, expert, ge.to(device=x.device, dtype=x.dtype)
    )
    assert rel(gf, ref_gf) < tol
    assert rel(ga, ref_ga) < tol


@pytest.mark.parametrize("expert", EXPERTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("C", [1, 3])
def test_matches_reference(expert, dtype, k, C):
    x, filters, alphas = sample(B=2, C=C, H=15, W=17, n=5, k=k, dtype=dtype, seed=k + 10 * C)
    check_against_reference(x, filters, alphas, expert)


@pytest.mark.parametrize("expert", EXPERTS)
def test_shipped_shape_and_tasks(expert):
    # The shipped model's shape (24 experts, 5x5, gray), over more rows than one task holds
    # (32), so that tasks meet at a seam and recompute their halo.
    x, filters, alphas = sample(B=2, C=1, H=70, W=41, n=24, k=5, dtype=torch.float32)
    check_against_reference(x, filters, alphas, expert)


@pytest.mark.parametrize("expert", EXPERTS)
def test_large_responses(expert):
    # Responses far into the tails (|s| up to ~1e3): the polynomials' range reduction.
    x, filters, alphas = sample(B=1, C=1, H=9, W=9, n=3, k=3, dtype=torch.float32)
    check_against_reference(300 * x, filters, alphas, expert)


@pytest.mark.parametrize("expert", EXPERTS)
def test_laplacian_is_the_hessian_trace(expert):
    x, filters, alphas = sample(B=2, C=2, H=5, W=6, n=3, k=3, seed=3)
    lap = foe_laplacian(x, filters, alphas, expert)
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        hessian = torch.autograd.functional.hessian(
            lambda v: reference.foe_energy(v.view_as(xb), filters, alphas, expert).sum(),
            xb.reshape(-1),
        )
        assert abs(lap[b].item() - hessian.trace().item()) < 1e-10 * hessian.trace().abs().item()


@pytest.mark.parametrize("expert", EXPERTS)
def test_gradcheck(expert):
    x, filters, alphas = sample(B=2, C=2, H=6, W=7, n=3, k=3, seed=5)
    inputs = tuple(t.requires_grad_() for t in (x, filters, alphas))

    def energy(x, f, a):
        return foe_energy(x, f, a, expert)

    assert torch.autograd.gradcheck(energy, inputs)
    # Second derivatives (score matching's 1/2 ||score||^2) go through the reference.
    assert torch.autograd.gradgradcheck(energy, inputs)
    assert torch.autograd.gradcheck(lambda x, f, a: foe_laplacian(x, f, a, expert), inputs)


def test_backward_uses_the_fused_gradient():
    x, filters, alphas = sample(B=3, C=1, H=9, W=10, n=4, k=3)
    x.requires_grad_()
    filters.requires_grad_()
    alphas.requires_grad_()
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (foe_energy(x, filters, alphas) * w).sum().backward()
    ref_e, ref_g, _, _, _, _ = reference_all(x, filters, alphas, "student_t")
    xr, fr, ar = (t.detach().clone().requires_grad_() for t in (x, filters, alphas))
    (reference.foe_energy(xr, fr, ar) * w).sum().backward()
    for ours, theirs in ((x.grad, xr.grad), (filters.grad, fr.grad), (alphas.grad, ar.grad)):
        assert rel(ours, theirs) < 1e-12


@pytest.mark.parametrize("expert", EXPERTS)
@pytest.mark.parametrize("with_laplacian", [True, False])
def test_opcheck(expert, with_laplacian):
    x, filters, alphas = sample(B=2, C=1, H=7, W=8, n=3, k=3)
    torch.library.opcheck(
        torch.ops.pyinvert.foe_energy_grad.default, (x, filters, alphas, expert, with_laplacian)
    )
    args = tuple(t.requires_grad_() for t in (x.clone(), filters.clone(), alphas.clone()))
    torch.library.opcheck(
        torch.ops.pyinvert.foe_energy_grad.default, (*args, expert, with_laplacian)
    )
    ge = torch.tensor([0.5, -1.0], dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.pyinvert.foe_param_grad.default, (x, filters, alphas, expert, ge)
    )


def test_compile_fullgraph():
    x, filters, alphas = sample(B=2, C=1, H=9, W=9, n=3, k=3)
    x.requires_grad_()
    compiled = torch.compile(foe_energy, fullgraph=True, backend="aot_eager")
    energy = compiled(x, filters, alphas)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    ref_e, ref_g, _, _, _, _ = reference_all(x, filters, alphas, "student_t")
    assert rel(energy, ref_e) < 1e-12 and rel(grad, ref_g) < 1e-12


def test_batch_equals_single_images():
    x, filters, alphas = sample(B=4, C=3, H=12, W=9, n=6, k=5, dtype=torch.float32)
    energy, grad, lap = foe_energy_grad(x, filters, alphas, with_laplacian=True)
    for b in range(4):
        e1, g1, l1 = foe_energy_grad(x[b : b + 1], filters, alphas, with_laplacian=True)
        # The split into tasks depends only on the image's shape: bit-identical.
        assert torch.equal(e1[0], energy[b]) and torch.equal(g1[0], grad[b])
        assert torch.equal(l1[0], lap[b])


def test_threads_do_not_change_the_result():
    x, filters, alphas = sample(B=2, C=1, H=80, W=20, n=8, k=5, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = foe_energy_grad(x, filters, alphas, with_laplacian=True)
        torch.set_num_threads(2)
        two = foe_energy_grad(x, filters, alphas, with_laplacian=True)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_non_contiguous_inputs():
    x, filters, alphas = sample(B=2, C=3, H=10, W=12, n=4, k=3)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    f_nc = filters.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    a_nc = torch.stack([alphas, alphas], 1)[:, 0]
    assert not (x_nc.is_contiguous() or f_nc.is_contiguous() or a_nc.is_contiguous())
    check_against_reference(x_nc, f_nc, a_nc, "student_t")
    sliced = torch.randn(2, 3, 10, 24, dtype=torch.float64)[..., ::2]
    check_against_reference(sliced, filters, alphas, "logcosh")


@pytest.mark.parametrize("shape", [(0, 1, 8, 8), (2, 1, 4, 9), (2, 1, 9, 4), (1, 2, 0, 6)])
def test_no_positions(shape):
    # Empty batch, and images smaller than the 5x5 filters: energy 0, gradient 0.
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    filters = torch.randn(3, shape[1], 5, 5, dtype=torch.float64, requires_grad=True)
    alphas = torch.rand(3, dtype=torch.float64, requires_grad=True)
    energy, grad, lap = foe_energy_grad(x, filters, alphas, with_laplacian=True)
    assert energy.shape == lap.shape == (shape[0],) and grad.shape == x.shape
    assert not energy.any() and not grad.any() and not lap.any()
    foe_energy(x, filters, alphas).sum().backward()
    for t in (x, filters, alphas):
        assert t.grad is not None and not t.grad.any()


def test_zero_experts():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    energy, grad, _ = foe_energy_grad(x, x.new_zeros(0, 1, 3, 3), x.new_zeros(0))
    assert not energy.any() and not grad.any()


def test_known_values():
    # One 1x1 filter of weight 1: E = sum_pixels rho(x); grad = rho'(x).
    x = torch.tensor([[[[0.0, 1.0], [-2.0, 3.0]]]], dtype=torch.float64)
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    energy, grad, lap = foe_energy_grad(x, one, one.view(1), "student_t", with_laplacian=True)
    assert torch.allclose(energy, torch.log1p(x * x / 2).sum().view(1))
    assert torch.allclose(grad, 2 * x / (2 + x * x))
    assert torch.allclose(lap, ((4 - 2 * x * x) / (2 + x * x) ** 2).sum().view(1))
    energy, grad, lap = foe_energy_grad(x, one, one.view(1), "logcosh", with_laplacian=True)
    assert torch.allclose(energy, torch.log(torch.cosh(x)).sum().view(1))
    assert torch.allclose(grad, torch.tanh(x))
    assert torch.allclose(lap, (1 - torch.tanh(x) ** 2).sum().view(1))


def test_without_laplacian_returns_none():
    x, filters, alphas = sample()
    assert foe_energy_grad(x, filters, alphas)[2] is None
    assert torch.ops.pyinvert.foe_energy_grad(x, filters, alphas, "logcosh", False)[2].numel() == 0


def test_errors():
    x, filters, alphas = sample(C=2)
    with pytest.raises(ValueError, match=r"foe_energy: expected x of shape \(B, C, H, W\), got"):
        foe_energy(x[0], filters, alphas)
    with pytest.raises(TypeError, match="foe_energy: expected x of dtype float32 or float64"):
        foe_energy(x.half(), filters, alphas)
    with pytest.raises(TypeError, match="foe_energy: expected x to be a torch.Tensor"):
        foe_energy(x.numpy(), filters, alphas)
    with pytest.raises(
        ValueError, match=r"expected filters of shape \(n, 2, k, k\).*\[4, 2, 3, 2\]"
    ):
        foe_energy(x, filters[..., :2], alphas)
    with pytest.raises(ValueError, match=r"expected filters of shape \(n, 2, k, k\)"):
        foe_energy(x, filters[:, :1], alphas)
    with pytest.raises(
        ValueError, match=r"foe_laplacian: expected alphas of shape \(4,\), got \[3\]"
    ):
        foe_laplacian(x, filters, alphas[:3])
    with pytest.raises(TypeError, match="foe_energy: expected filters of dtype torch.float64"):
        foe_energy(x, filters.float(), alphas)
    with pytest.raises(
        ValueError, match=r"foe_energy: expected expert in \('student_t', 'logcosh'\)"
    ):
        foe_energy(x, filters, alphas, "gauss")
    # The op checks the same things itself (C++), for callers of torch.ops directly.
    op = torch.ops.pyinvert
    with pytest.raises(
        ValueError, match="foe_energy_grad: expected expert 'student_t' or 'logcosh'"
    ):
        op.foe_energy_grad(x, filters, alphas, "gauss", False)
    with pytest.raises(
        RuntimeError, match=r"foe_energy_grad: expected filters of shape \(n, 2, k, k\)"
    ):
        op.foe_energy_grad(x, filters[:, :1], alphas, "student_t", False)
    with pytest.raises(RuntimeError, match="foe_param_grad: expected alphas of dtype Double"):
        op.foe_param_grad(x, filters, alphas.float(), "student_t", x.new_ones(2))
    with pytest.raises(RuntimeError, match=r"foe_param_grad: expected grad_energy of shape \(2,\)"):
        op.foe_param_grad(x, filters, alphas, "student_t", x.new_ones(3))


# CUDA against CPU (float64 tight; float32 against the float64 CPU computation, since the CUDA
# float path uses CUDA's log1p / exp and the CPU float path its polynomials).
@needs_cuda
@pytest.mark.parametrize("expert", EXPERTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("C", [1, 3])
def test_cuda_matches_cpu(expert, dtype, k, C):
    x, filters, alphas = sample(B=3, C=C, H=37, W=29, n=24, k=k, seed=k)
    ge = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    cpu = foe_energy_grad(x, filters, alphas, expert, with_laplacian=True)
    cpu_p = torch.ops.pyinvert.foe_param_grad(x, filters, alphas, expert, ge)
    cuda = [t.to("cuda", dtype) for t in (x, filters, alphas)]
    gpu = foe_energy_grad(*cuda, expert, with_laplacian=True)
    gpu_p = torch.ops.pyinvert.foe_param_grad(*cuda, expert, ge.to("cuda", dtype))
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for ours, theirs in zip((*gpu, *gpu_p), (*cpu, *cpu_p)):
        assert ours.device.type == "cuda" and ours.dtype == dtype
        assert rel(ours.cpu(), theirs) < tol


@needs_cuda
def test_cuda_gradcheck_opcheck_and_edges():
    x, filters, alphas = sample(B=2, C=2, H=6, W=7, n=3, k=3, device="cuda")
    inputs = tuple(t.requires_grad_() for t in (x, filters, alphas))
    assert torch.autograd.gradcheck(lambda x, f, a: foe_energy(x, f, a, "logcosh"), inputs)
    torch.library.opcheck(
        torch.ops.pyinvert.foe_energy_grad.default,
        (x.detach(), filters.detach(), alphas.detach(), "student_t", True),
    )
    for shape in [(0, 2, 8, 8), (2, 2, 2, 9)]:
        e, g, lap = foe_energy_grad(
            torch.randn(*shape, device="cuda"),
            filters.detach().float(),
            alphas.detach().float(),
            with_laplacian=True,
        )
        assert not e.any() and not g.any() and not lap.any() and g.shape == shape
    x_nc = torch.randn(2, 2, 9, 20, device="cuda", dtype=torch.float64)[..., ::2]
    cpu = foe_energy_grad(x_nc.cpu(), filters.detach().cpu(), alphas.detach().cpu())
    gpu = foe_energy_grad(x_nc, filters.detach(), alphas.detach())
    assert rel(gpu[0].cpu(), cpu[0]) < 1e-10 and rel(gpu[1].cpu(), cpu[1]) < 1e-10
    with pytest.raises(ValueError, match="foe_energy: expected filters on cuda"):
        foe_energy(x.detach(), filters.detach().cpu(), alphas.detach())


def test_docstring_examples_run():
    # tests/test_docs.py runs the doctests of the modules pyinvert exports; this one is not
    # exported yet (the lead wires it into pyinvert.priors).
    import doctest

    from pyinvert.priors import foe_op

    result = doctest.testmod(foe_op, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
