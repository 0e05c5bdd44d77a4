"""pyinvert.optim.lbfgs: batched L-BFGS with per-row state. Convex quadratics (n steps with a
near-exact line search), Rosenbrock per row against torch.optim.LBFGS, and a row's result bit
for bit the same alone and in a batch (float64 and float32, rows stopping at different
iterations, for different reasons)."""

import doctest
import importlib
import inspect
import math

import pytest
import torch

from pyinvert.optim import lbfgs as lbfgs_module
from pyinvert.optim.lbfgs import LBFGS, REASONS, LBFGSInfo, _rowsum, lbfgs
from tests.test_docs import documented_defaults


def rowwise(fn):
    """A closure that computes each row on its own: its values cannot depend on the batch."""
    return lambda x: torch.stack([fn(i, x[i]) for i in range(x.shape[0])])


def rosenbrock(r):
    return (100 * (r[1:] - r[:-1] ** 2) ** 2 + (1 - r[:-1]) ** 2).sum()


def quadratic(n, seed, dtype=torch.float64, cond=10**1.5):
    """A, b of f(x) = x.A x / 2 - b.x with A SPD of condition number cond."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=torch.float64)) @ Q.T
    A = (A + A.T) / 2
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return A.to(dtype), b.to(dtype)


def quadratics_closure(problems):
    return rowwise(lambda i, r: 0.5 * (r * (problems[i][0] @ r)).sum() - (problems[i][1] * r).sum())


# ---------------------------------------------------------------------------------------------
# Convergence


@pytest.mark.parametrize("n", [2, 5, 10, 30])
def test_quadratic_converges_in_at_most_n_steps(n):
    """With a near-exact line search (c2 = 1e-3; the cubic step is exact on a quadratic) and
    m >= n, L-BFGS is conjugate gradients: it ends in at most n steps (N&W Thm. 5.2, 7.2)."""
    problems = [quadratic(n, seed) for seed in range(3)]
    x, info = lbfgs(
        quadratics_closure(problems),
        torch.zeros(3, n, dtype=torch.float64),
        max_iter=10 * n,
        c2=1e-3,
        tolerance_grad=1e-7,
        tolerance_change=0.0,
    )
    assert info.reasons == ["gradient"] * 3 and info.converged.all()
    assert (info.iterations <= n).all(), info.iterations
    for i, (A, b) in enumerate(problems):
        torch.testing.assert_close(x[i], torch.linalg.solve(A, b), rtol=0, atol=1e-6)
        assert info.value[i] == quadratics_closure(problems)(x)[i]


def test_quadratic_default_line_search_converges():
    """The default (c2 = 0.9: accept the first step meeting the Wolfe conditions) takes more
    steps than n but gets there."""
    problems = [quadratic(10, seed) for seed in range(2)]
    x, info = lbfgs(
        quadratics_closure(problems),
        torch.zeros(2, 10, dtype=torch.float64),
        max_iter=200,
        tolerance_grad=1e-8,
        tolerance_change=1e-15,
    )
    assert info.converged.all() and (info.iterations <= 40).all(), info.iterations
    for i, (A, b) in enumerate(problems):
        torch.testing.assert_close(x[i], torch.linalg.solve(A, b), rtol=0, atol=1e-6)


ROSENBROCK_STARTS = [[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0], [-1.5, 2.5]]


def _torch_lbfgs(fn, x0, line_search_fn="strong_wolfe", **options):
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], line_search_fn=line_search_fn, **options)

    def closure():
        opt.zero_grad()
        loss = fn(p)
        loss.backward()
        return loss

    opt.step(closure)
    return p.detach(), opt.state[p]["n_iter"], opt.state[p]["func_evals"]


def test_rosenbrock_per_row_and_against_torch():
    x0 = torch.tensor(ROSENBROCK_STARTS, dtype=torch.float64)
    options = dict(max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-14)
    x, info = lbfgs(rowwise(lambda i, r: rosenbrock(r)), x0, **options)
    torch.testing.assert_close(x, torch.ones_like(x), rtol=0, atol=1e-6)
    assert info.converged.all() and (info.value < 1e-12).all()
    # Measured: iterations [36, 21, 27, 38], evaluations [45, 27, 30, 54].
    assert info.iterations.tolist() == [36, 21, 27, 38]
    for i in range(len(x0)):
        ref, n_iter, evals = _torch_lbfgs(rosenbrock, x0[i], **options)
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-7)
        # torch counts the iteration that detects convergence, too.
        assert abs(int(info.iterations[i]) - (n_iter - 1)) <= 1
        assert abs(int(info.evaluations[i]) - evals) <= 2
        assert abs(float(info.value[i]) - rosenbrock(ref).item()) < 1e-12


def test_rosenbrock_10d_against_torch():
    x0 = torch.linspace(-1.5, 1.5, 10, dtype=torch.float64)[None].repeat(2, 1)
    x0[1] = -x0[1]
    options = dict(max_iter=300, history_size=5, tolerance_grad=1e-9, tolerance_change=1e-14)
    x, info = lbfgs(rowwise(lambda i, r: rosenbrock(r)), x0, **options)
    assert info.converged.all()
    for i in range(2):
        ref, n_iter, _ = _torch_lbfgs(rosenbrock, x0[i], **options)
        torch.testing.assert_close(x[i], ref, rtol=0, atol=1e-6)
        assert abs(int(info.iterations[i]) - (n_iter - 1)) <= 2


def test_fixed_step_matches_torch():
    problems = [quadratic(6, 7, cond=4.0)]
    x0 = torch.zeros(1, 6, dtype=torch.float64)
    closure = quadratics_closure(problems)
    x, info = lbfgs(closure, x0, line_search=None, max_iter=30, lr=0.5, tolerance_change=0.0)
    ref, n_iter, _ = _torch_lbfgs(
        lambda p: closure(p[None])[0],
        x0[0],
        line_search_fn=None,
        max_iter=30,
        lr=0.5,
        tolerance_change=0.0,
    )
    torch.testing.assert_close(x[0], ref, rtol=0, atol=1e-9)
    assert int(info.iterations[0]) == n_iter


# ---------------------------------------------------------------------------------------------
# Alone equals batched, bit for bit


def _mixed_rows(dtype, device="cpu"):
    """Rows of different problems that stop at different iterations and for different
    reasons: Rosenbrock from four starts, two quadratics, one NaN region, one max_iter."""
    starts = torch.tensor(ROSENBROCK_STARTS + [[0.3, -0.2]] * 4, dtype=dtype, device=device)
    problems = {i: tuple(v.to(device) for v in quadratic(2, i - 3, dtype)) for i in (4, 5)}

    def fn(i, r):
        if i in problems:
            A, b = problems[i]
            return 0.5 * (r * (A @ r)).sum() - (b * r).sum()
        if i == 6:  # a NaN beyond r[0] = 1.2: the row freezes at its last finite point
            return ((r - 2) ** 2).sum() + torch.where(r[0] > 1.2, math.nan, 0.0)
        return rosenbrock(r)  # rows 0-3 and 7 (rows 0 and 3 need more than max_iter = 30)

    return starts, fn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("history_size", [3, 100])
def test_batched_equals_alone_bit_for_bit(dtype, history_size):
    x0, fn = _mixed_rows(dtype)
    options = dict(
        max_iter=30,
        history_size=history_size,
        tolerance_grad=1e-10 if dtype == torch.float64 else 1e-5,
        tolerance_change=1e-14 if dtype == torch.float64 else 1e-9,
    )
    x, info = lbfgs(rowwise(fn), x0, **options)
    assert x.dtype == dtype
    assert len(set(info.iterations.tolist())) >= 4  # rows stop at different iterations
    assert info.reasons[6] == "nonfinite" and info.iterations[6] >= 1
    assert {info.reasons[0], info.reasons[3]} <= {"max_iter", "max_eval"}  # (default 37)
    assert info.converged[[1, 2, 4, 5, 7]].all() and not info.converged[[0, 3, 6]].any()
    assert torch.isfinite(x).all() and x[6, 0] <= 1.2
    for i in range(len(x0)):
        xi, ii = lbfgs(rowwise(lambda _, r, i=i: fn(i, r)), x0[i : i + 1], **options)
        assert torch.equal(xi[0], x[i]), (i, xi[0], x[i])
        for field in ("iterations", "evaluations", "converged", "value", "status"):
            assert torch.equal(getattr(ii, field)[0], getattr(info, field)[i]), (i, field)


def test_duplicated_rows_are_identical_and_shuffling_permutes():
    x0 = torch.tensor(ROSENBROCK_STARTS, dtype=torch.float32)
    closure = rowwise(lambda i, r: rosenbrock(r))
    x, info = lbfgs(closure, x0, max_iter=40)
    perm = torch.tensor([2, 0, 3, 1])
    xp, infop = lbfgs(closure, x0[perm], max_iter=40)
    assert torch.equal(xp, x[perm]) and torch.equal(infop.iterations, info.iterations[perm])
    xd, _ = lbfgs(closure, x0[[1, 1, 1]], max_iter=40)
    assert torch.equal(xd, x[[1, 1, 1]])


def test_rowsum_is_batch_invariant_and_accurate():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 100_003, generator=g, dtype=torch.float32) * 1e3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        both = _rowsum(v)
        torch.set_num_threads(1)
        for i in range(5):
            assert torch.equal(_rowsum(v[i : i + 1])[0], both[i])
    finally:
        torch.set_num_threads(threads)
    exact = torch.tensor([math.fsum(r) for r in v.double().tolist()])
    assert ((both.double() - exact).abs() <= 1e-5 * v.double().abs().sum(1)).all()
    assert _rowsum(torch.zeros(3, 0)).tolist() == [0.0, 0.0, 0.0]
    assert _rowsum(torch.tensor([[1.0, 2.0, 3.0]])).tolist() == [6.0]


# ---------------------------------------------------------------------------------------------
# Interfaces


def test_ask_tell_drives_the_same_run_as_lbfgs():
    x0 = torch.tensor(ROSENBROCK_STARTS, dtype=torch.float64).view(4, 1, 2)  # (B, 1, 2)
    closure = rowwise(lambda i, r: rosenbrock(r.flatten()))
    x, info = lbfgs(closure, x0, max_iter=30)
    opt = LBFGS(x0, max_iter=30)
    calls = 0
    while not opt.done:
        trial = opt.ask().detach().requires_grad_(True)
        assert trial.shape == (4, 1, 2)
        values = closure(trial)
        (grad,) = torch.autograd.grad(values.sum(), trial)
        opt.tell(values, grad)
        calls += 1
    assert torch.equal(opt.x, x) and x.shape == (4, 1, 2)
    assert torch.equal(opt.info().iterations, info.iterations)
    assert calls == int(info.evaluations.max())  # rows share every call
    assert isinstance(info, LBFGSInfo) and info.status.dtype == torch.int64
    assert all(r in REASONS for r in info.reasons)


def test_closure_may_return_values_and_gradients():
    target = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    auto, _ = lbfgs(lambda x: ((x - target) ** 2).sum(1), torch.zeros_like(target))
    manual, info = lbfgs(
        lambda x: (((x - target) ** 2).sum(1).detach(), 2 * (x - target).detach()),
        torch.zeros_like(target),
    )
    assert torch.equal(auto, manual) and info.converged.all()


def test_stopping_rules_and_edge_cases():
    closure = rowwise(lambda i, r: rosenbrock(r))
    x0 = torch.tensor([[-1.2, 1.0]], dtype=torch.float64)
    x, info = lbfgs(closure, x0, max_iter=5, max_eval=100)
    assert info.reasons == ["max_iter"] and info.iterations.tolist() == [5]
    assert not info.converged.any()
    _, info = lbfgs(closure, x0, max_iter=100, max_eval=10)
    assert info.reasons == ["max_eval"] and 10 <= int(info.evaluations) < 10 + 25
    # Starting at the minimum: converged at iteration 0 after one evaluation.
    x, info = lbfgs(closure, torch.ones(2, 2, dtype=torch.float64))
    assert info.reasons == ["gradient"] * 2 and info.iterations.tolist() == [0, 0]
    assert info.evaluations.tolist() == [1, 1] and torch.equal(x, torch.ones(2, 2).double())
    # NaN at the start: frozen at x0.
    x, info = lbfgs(lambda x: x.sum(1) * math.nan, torch.zeros(2, 3))
    assert info.reasons == ["nonfinite"] * 2 and torch.equal(x, torch.zeros(2, 3))
    # An empty batch never calls the closure; rows without elements converge at once.
    x, info = lbfgs(lambda x: pytest.fail("called"), torch.zeros(0, 4))
    assert x.shape == (0, 4) and info.iterations.shape == (0,)
    x, info = lbfgs(lambda x: x.sum(1), torch.zeros(2, 0))
    assert info.reasons == ["gradient"] * 2
    # Non-contiguous x0: the same result as its contiguous copy.
    nc = torch.tensor(ROSENBROCK_STARTS, dtype=torch.float64).T.contiguous().T
    assert not nc.is_contiguous()
    assert torch.equal(
        lbfgs(closure, nc, max_iter=20)[0], lbfgs(closure, nc.contiguous(), max_iter=20)[0]
    )


def test_errors():
    f = lambda x: (x**2).sum(1)  # noqa: E731
    x0 = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="lbfgs: expected x0 to be a Tensor, got list"):
        lbfgs(f, [[0.0]])
    with pytest.raises(TypeError, match="lbfgs: expected a floating-point x0, got torch.int64"):
        lbfgs(f, torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(
        ValueError,
        match=r"lbfgs: expected x0 of shape \(B, \.\.\.\), got a "
        r"0-d tensor",
    ):
        lbfgs(f, torch.tensor(0.0))
    with pytest.raises(ValueError, match="lbfgs: expected history_size >= 1, got 0"):
        lbfgs(f, x0, history_size=0)
    with pytest.raises(TypeError, match="lbfgs: expected max_iter to be an int, got float"):
        lbfgs(f, x0, max_iter=10.0)
    with pytest.raises(ValueError, match="lbfgs: expected tolerance_grad >= 0, got -1"):
        lbfgs(f, x0, tolerance_grad=-1)
    with pytest.raises(
        ValueError,
        match=r"lbfgs: expected 0 < c1 < c2 < 1 \(Wolfe "
        r"conditions\), got c1=0.9, c2=0.1",
    ):
        lbfgs(f, x0, c1=0.9, c2=0.1)
    with pytest.raises(ValueError, match="lbfgs: expected lr > 0, got 0"):
        lbfgs(f, x0, lr=0)
    with pytest.raises(
        ValueError, match="lbfgs: unknown line_search 'armijo'; expected 'strong_wolfe' or None"
    ):
        lbfgs(f, x0, line_search="armijo")
    with pytest.raises(
        ValueError,
        match=r"lbfgs: expected the closure to return per-row "
        r"values of shape \[2\], got \[\]",
    ):
        lbfgs(lambda x: (x**2).sum(), x0)
    with pytest.raises(
        TypeError,
        match="lbfgs: expected the closure to return a Tensor of per-row values, got float",
    ):
        lbfgs(lambda x: 1.0, x0)
    with pytest.raises(ValueError, match="lbfgs: the closure's values do not depend on x"):
        lbfgs(lambda x: torch.zeros(2), x0)
    with pytest.raises(
        ValueError,
        match="lbfgs: expected the closure to return values or "
        r"\(values, gradients\), got a tuple of 3",
    ):
        lbfgs(lambda x: (1, 2, 3), x0)
    opt = LBFGS(x0)
    with pytest.raises(
        ValueError,
        match=r"LBFGS: expected gradients of shape \[2, 3\], got "
        r"\[2, 4\]",
    ):
        opt.tell(torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(
        ValueError,
        match=r"LBFGS: expected per-row values of shape \[2\], "
        r"got \[3\]",
    ):
        opt.tell(torch.zeros(3), torch.zeros(2, 3))


def test_documented_defaults_match_signature():
    params = inspect.signature(lbfgs).parameters
    found = documented_defaults(inspect.getdoc(lbfgs))
    assert set(found) == set(params) - {"closure", "x0"}
    for arg, text in found.items():
        text = text.split(" (")[0]
        assert text == repr(params[arg].default), (arg, text)
    # LBFGS takes the same options with the same defaults (its docstring says so).
    own = inspect.signature(LBFGS.__init__).parameters
    for arg in found:
        assert own[arg].default == params[arg].default and own[arg].kind == params[arg].kind


def test_doctests():
    result = doctest.testmod(importlib.import_module("pyinvert.optim.lbfgs"))
    assert result.attempted > 0 and result.failed == 0
    assert lbfgs_module.__doc__.count("References") == 1


# ---------------------------------------------------------------------------------------------
# A real network: Gram-matrix texture matching on MobileNetV2 (the shipped ImageNet weights)


def _texture_closure(net, size=48):
    from pyinvert import models
    from pyinvert.data import sample_path

    layers = ("features.1", "features.3")
    modules = dict(net.named_modules())

    def features(x):
        out = {}
        handles = [
            modules[n].register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, o))
            for n in layers
        ]
        try:
            net.features[:4](models.normalize(x))
        finally:
            for h in handles:
                h.remove()
        return [out[n] for n in layers]

    def gram(f):
        f = f.flatten(2)
        return f @ f.transpose(1, 2) / f.shape[2]

    image = models.prepare_image(sample_path("chelsea"), size=size)[None]
    with torch.no_grad():
        targets = [gram(f) for f in features(image)]
    return lambda x: sum(
        ((gram(f) - t) ** 2).flatten(1).sum(1) / (t**2).sum() for f, t in zip(features(x), targets)
    )


def test_texture_synthesis_on_mobilenet(imagenet_mobilenet):
    closure = _texture_closure(imagenet_mobilenet)
    x0 = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = closure(x0)
    x, info = lbfgs(closure, x0, max_iter=50, history_size=10)
    # Measured: 19.3, 20.6, 17.6 -> 0.0043, 0.0042, 0.0041 in 50 iterations (53-54 values).
    assert (info.value < start / 1000).all(), (start, info.value)
    assert (info.evaluations <= 60).all() and info.reasons == ["max_iter"] * 3
    # oneDNN's convolutions round differently for different batch sizes; PyTorch's own do
    # not, and then a row of a real network's problem is bit for bit the same alone.
    enabled = torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = False
        with torch.no_grad():
            assert torch.equal(closure(x0)[1:2], closure(x0[1:2]))
        x, info = lbfgs(closure, x0, max_iter=20, history_size=5)
        alone, info1 = lbfgs(closure, x0[1:2], max_iter=20, history_size=5)
    finally:
        torch.backends.mkldnn.enabled = enabled
    assert torch.equal(alone[0], x[1]) and torch.equal(info1.value[0], info.value[1])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_batched_equals_alone_and_matches_cpu(dtype):
    x0, fn = _mixed_rows(dtype, "cuda")
    options = dict(max_iter=30, history_size=3)
    x, info = lbfgs(rowwise(fn), x0, **options)
    assert x.is_cuda and info.iterations.is_cuda
    for i in range(len(x0)):
        xi, _ = lbfgs(rowwise(lambda _, r, i=i: fn(i, r)), x0[i : i + 1], **options)
        assert torch.equal(xi[0], x[i]), i
    cpu_x0, cpu_fn = _mixed_rows(dtype)
    cpu, cpu_info = lbfgs(rowwise(cpu_fn), cpu_x0, **options)
    assert cpu_info.reasons[6] == info.reasons[6] == "nonfinite"
    # The quadratics end at their solutions on both devices; the Rosenbrock rows near (1, 1).
    torch.testing.assert_close(x[4:6].cpu(), cpu[4:6], rtol=0, atol=1e-5)
    assert (info.value[[1, 2]] < 1e-6).all() and (cpu_info.value[[1, 2]] < 1e-6).all()
