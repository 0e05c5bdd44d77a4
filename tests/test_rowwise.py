"""pyinvert.optim.rowwise: the compiled per-row sums of the L-BFGS (torch.ops.pyinvert.rowwise_dot
and rowwise_two_loop). A row's bits do not depend on the batch (alone, in batches of 1..N, at
any position) or on the thread count; the sums are close to the exact ones; the fused two-loop
recursion gives the bits of the same recursion written with tensor operations; opcheck, the
fake kernels, gradcheck, empty and non-contiguous inputs, and the errors."""

import math

import pytest
import torch

from pyinvert.optim import rowwise
from pyinvert.optim.rowwise import rowsum, rowsum_tree, rowwise_dot
from tests.conftest import DEVICES

DTYPES = [torch.float32, torch.float64]
# row lengths around the 256 lanes: shorter, equal, one block and a tail, several blocks
LENGTHS = [0, 1, 7, 255, 256, 257, 1000, 4099]


def rows(B, D, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=torch.float64) * 10).to(dtype).to(device)


def with_threads(n, fn):
    was = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(was)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", LENGTHS)
def test_dot_is_batch_and_thread_invariant(device, dtype, D):
    N = 9
    a, b = rows(N, D, dtype, 1, device), rows(N, D, dtype, 2, device)
    alone = torch.stack([rowwise_dot(a[i : i + 1], b[i : i + 1])[0] for i in range(N)])
    for B in range(1, N + 1):  # every batch size, the row at every position
        for start in range(0, N - B + 1):
            got = rowwise_dot(a[start : start + B], b[start : start + B])
            assert torch.equal(got, alone[start : start + B]), (B, start)
    if device == "cpu":
        two = with_threads(2, lambda: rowwise_dot(a, b))
        one = with_threads(1, lambda: rowwise_dot(a, b))
        assert torch.equal(one, alone) and torch.equal(two, alone)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_is_close_to_the_exact_sum(dtype):
    a, b = rows(4, 100_003, dtype, 3), rows(4, 100_003, dtype, 4)
    got = rowwise_dot(a, b).double()
    exact = torch.tensor(
        [math.fsum(x * y for x, y in zip(p, q)) for p, q in zip(a.tolist(), b.tolist())]
    )
    scale = (a.double() * b.double()).abs().sum(1)
    # the double sum of exact float32 products is rounded once: a float32 ulp of the result
    tol = 1e-7 if dtype == torch.float32 else 1e-14
    assert ((got - exact).abs() <= tol * scale + exact.abs() * 2**-23).all(), got - exact
    assert (rowsum(a).double() - a.double().sum(1)).abs().max() <= 1e-6 * a.abs().sum()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_noncontiguous_and_fallback(device):
    assert rowwise_dot(
        torch.zeros(0, 5, device=device), torch.zeros(0, 5, device=device)
    ).shape == (0,)
    assert (
        rowwise_dot(torch.ones(3, 0, device=device), torch.ones(3, 0, device=device)).tolist()
        == [0.0] * 3
    )
    a, b = rows(6, 40, torch.float64, 5, device), rows(6, 40, torch.float64, 6, device)
    # a transposed copy, a column slice, a row slice with a stride, a broadcast row of b
    at = a.t().contiguous().t()
    assert torch.equal(rowwise_dot(at, b), rowwise_dot(a, b))
    wide = rows(6, 50, torch.float64, 7, device)
    assert torch.equal(rowwise_dot(wide[:, 5:45], b), rowwise_dot(wide[:, 5:45].contiguous(), b))
    assert torch.equal(rowwise_dot(a[::2], b[::2]), rowwise_dot(a, b)[::2])
    ones = torch.ones(1, 40, dtype=torch.float64, device=device).expand(6, 40)
    assert torch.equal(rowsum(a), rowwise_dot(a, ones.contiguous()))
    # the tree of the other devices is batch-invariant too, and close
    assert torch.allclose(rowsum_tree(a * b), rowwise_dot(a, b), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_dot_opcheck_and_gradcheck(device):
    for D in (1, 5, 300):
        a = rows(3, D, torch.float64, D, device).requires_grad_(True)
        b = rows(3, D, torch.float64, D + 1, device).requires_grad_(True)
        torch.library.opcheck(torch.ops.pyinvert.rowwise_dot.default, (a, b))
        assert torch.autograd.gradcheck(rowwise_dot, (a, b))
    f32 = rows(2, 10, torch.float32, 0, device)
    torch.library.opcheck(torch.ops.pyinvert.rowwise_dot.default, (f32, f32))


def test_dot_compiles():
    a, b = rows(3, 300, torch.float32, 8), rows(3, 300, torch.float32, 9)
    fn = torch.compile(lambda x, y: rowwise_dot(x * 2, y), fullgraph=True, backend="eager")
    assert torch.equal(fn(a, b), rowwise_dot(a * 2, b))


def test_dot_errors():
    a = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"rowwise_dot: expected a and b of one shape \(B, D\)"):
        rowwise_dot(a, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"rowwise_dot: expected a and b of one shape"):
        rowwise_dot(torch.ones(3), torch.ones(3))
    with pytest.raises(TypeError, match="rowwise_dot: expected a and b both float32 or both"):
        rowwise_dot(a, a.double())
    with pytest.raises(TypeError, match="rowwise_dot: expected a and b both float32 or both"):
        rowwise_dot(a.half(), a.half())
    with pytest.raises(TypeError, match="rowwise_dot: expected Tensors, got Tensor and list"):
        rowwise_dot(a, [1.0])
    # the op's own checks (callers that skip the wrapper)
    with pytest.raises(RuntimeError, match=r"rowwise_dot: expected b of shape \[2, 3\]"):
        torch.ops.pyinvert.rowwise_dot(a, torch.ones(3, 2))
    with pytest.raises(RuntimeError, match="rowwise_dot: expected b of dtype Float"):
        torch.ops.pyinvert.rowwise_dot(a, a.double())
    with pytest.raises(RuntimeError, match="rowwise_dot: expected a of shape"):
        torch.ops.pyinvert.rowwise_dot(torch.ones(3), torch.ones(3))


# ---- the fused two-loop recursion ------------------------------------------------------------


def two_loop_reference(g, S, Y, rho, h, slots):
    """N&W Alg. 7.4 per row with rowwise_dot and elementwise operations (one rounding each)."""
    out = []
    for r in range(g.shape[0]):
        k = [int(v) for v in slots[r] if v >= 0]
        q = -g[r : r + 1]
        alpha = []
        for slot in k:
            a = rowwise_dot(S[slot, r : r + 1], q) * rho[slot, r]
            q = q - a[:, None] * Y[slot, r : r + 1]
            alpha.append(a)
        q = q * h[r]
        for slot, a in reversed(list(zip(k, alpha))):
            b = rowwise_dot(Y[slot, r : r + 1], q) * rho[slot, r]
            q = q + (a - b)[:, None] * S[slot, r : r + 1]
        out.append(q[0])
    return torch.stack(out) if out else g.new_zeros(g.shape)


def two_loop_inputs(B, D, m, dtype, seed, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    g = rows(B, D, dtype, seed, device)
    S = torch.randn(m, B, D, generator=gen, dtype=torch.float64).to(dtype).to(device)
    Y = S.double() * 2 + 0.3 * torch.randn(m, B, D, generator=gen, dtype=torch.float64)
    Y = Y.to(dtype).to(device)
    rho = (
        (1.0 / (torch.rand(m, B, generator=gen, dtype=torch.float64) * D + 1)).to(dtype).to(device)
    )
    h = (torch.rand(B, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(device)
    # each row its own history length and ring position (newest first, then -1)
    slots = torch.full((B, m), -1, dtype=torch.long)
    for r in range(B):
        count = (r * 3 + seed) % (m + 1)
        head = (r * 5 + seed) % m
        slots[r, :count] = torch.tensor([(head - j) % m for j in range(count)], dtype=torch.long)
    return g, S, Y, rho, h, slots.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [1, 255, 257, 1000])
def test_two_loop_equals_the_unfused_recursion_bit_for_bit(device, dtype, D):
    inputs = two_loop_inputs(5, D, 4, dtype, D % 7, device)
    got = torch.ops.pyinvert.rowwise_two_loop(*inputs)
    assert torch.equal(got, two_loop_reference(*inputs))
    # a row alone, and at 1 and 2 threads
    g, S, Y, rho, h, slots = inputs
    for r in range(5):
        one = torch.ops.pyinvert.rowwise_two_loop(
            g[r : r + 1],
            S[:, r : r + 1],
            Y[:, r : r + 1],
            rho[:, r : r + 1],
            h[r : r + 1],
            slots[r : r + 1],
        )
        assert torch.equal(one[0], got[r])
    if device == "cpu":
        assert torch.equal(
            with_threads(2, lambda: torch.ops.pyinvert.rowwise_two_loop(*inputs)), got
        )


def test_two_loop_in_the_lbfgs_equals_its_reference():
    from pyinvert.optim.lbfgs import LBFGS

    gen = torch.Generator().manual_seed(0)
    A = torch.rand(4, 300, generator=gen) + 0.5
    # the tensor path's state (the row path keeps its pairs in rings: tests/test_lbfgs_ops.py)
    opt = LBFGS(
        torch.randn(4, 300, generator=gen),
        max_iter=25,
        history_size=5,
        tolerance_grad=0.0,
        _path="tensor",
    )
    checked = 0
    while not opt.done:
        z = opt.ask()
        opt.tell((A * z * z).sum(1) + 0.1 * (z**4).sum(1), 2 * A * z + 0.4 * z**3)
        run = opt.status == 0
        if opt.S.shape[0] and bool(run.any()):
            ref = rowwise.two_loop_reference(
                opt.g,
                opt.S,
                opt.Y,
                opt.rho,
                opt.H_diag,
                opt.count,
                opt.updates,
                opt.history_size,
                run,
            )
            assert torch.equal(opt._two_loop(run)[run], ref[run])
            checked += 1
    assert checked > 10


def test_two_loop_opcheck_empty_and_errors():
    inputs = two_loop_inputs(3, 20, 3, torch.float64, 1)
    torch.library.opcheck(torch.ops.pyinvert.rowwise_two_loop.default, inputs)
    g, S, Y, rho, h, slots = inputs
    none = torch.ops.pyinvert.rowwise_two_loop(g, S[:0], Y[:0], rho[:0], h, slots[:, :0])
    assert torch.equal(none, -g * h[:, None])
    assert torch.ops.pyinvert.rowwise_two_loop(
        g[:0], S[:, :0], Y[:, :0], rho[:, :0], h[:0], slots[:0]
    ).shape == (0, 20)
    with pytest.raises(IndexError, match=r"rowwise_two_loop: expected slots in \[-1, 3\), got 3"):
        torch.ops.pyinvert.rowwise_two_loop(g, S, Y, rho, h, torch.full_like(slots, 3))
    with pytest.raises(RuntimeError, match=r"rowwise_two_loop: expected S of shape \(m, 3, 20\)"):
        torch.ops.pyinvert.rowwise_two_loop(g, S[:, :2], Y, rho, h, slots)
    with pytest.raises(RuntimeError, match="rowwise_two_loop: expected slots of dtype int64"):
        torch.ops.pyinvert.rowwise_two_loop(g, S, Y, rho, h, slots.int())
    with pytest.raises(RuntimeError, match="rowwise_two_loop: expected h of dtype Double"):
        torch.ops.pyinvert.rowwise_two_loop(g, S, Y, rho, h.float(), slots)


def test_module_doctest():
    import doctest

    result = doctest.testmod(rowwise)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run by ./run gpu-check)")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu_bit_for_bit(dtype):
    a, b = rows(5, 1000, dtype, 1), rows(5, 1000, dtype, 2)
    assert torch.equal(rowwise_dot(a.cuda(), b.cuda()).cpu(), rowwise_dot(a, b))
    inputs = two_loop_inputs(5, 1000, 4, dtype, 3)
    on_gpu = torch.ops.pyinvert.rowwise_two_loop(*(t.cuda() for t in inputs)).cpu()
    assert torch.equal(on_gpu, torch.ops.pyinvert.rowwise_two_loop(*inputs))
