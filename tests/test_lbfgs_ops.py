"""The fused steps of the per-row L-BFGS's row path (torch.ops.pyinvert.lbfgs_observe,
lbfgs_accept, lbfgs_advance; pyinvert.optim.lbfgs_ops): each gives the bits of the tensor
operations it fuses (elementwise ops, rowwise_dot, max |v|, rowwise_two_loop), for every row
alone or batched, at 1 and 2 threads; NaN propagation of the maxima; rows left untouched;
opcheck, empty inputs and the errors. The L-BFGS built on them is compared with the tensor
path in tests/test_lbfgs_rows.py."""

import pytest
import torch

from pyinvert.optim import lbfgs_ops  # noqa: F401  (the fake kernels)
from pyinvert.optim.lbfgs_ops import MODE_DIRECTION, MODE_SKIP, MODE_STAY, MODE_STEP
from pyinvert.optim.rowwise import amax, rowwise_dot
from tests.conftest import DEVICES
from tests.test_rowwise import rows, two_loop_inputs, with_threads

ops = torch.ops.pyinvert
DTYPES = [torch.float32, torch.float64]
LENGTHS = [1, 255, 256, 257, 1000]


def per_row(dtype, B, seed, device):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, generator=g, dtype=torch.float64) + 0.5).to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", LENGTHS)
def test_observe_equals_scaled_gradient_max_and_dot(device, dtype, D):
    B = 4
    grad, d = rows(B, D, dtype, 1, device), rows(B, D, dtype, 2, device)
    c = per_row(dtype, B, 3, device)
    g = torch.empty_like(grad)
    gmax, gtd = ops.lbfgs_observe(grad, c, d, g)
    want = grad * c[:, None]
    assert torch.equal(g, want)
    assert torch.equal(gmax, amax(want)) and torch.equal(gtd, rowwise_dot(want, d))
    for r in range(B):  # a row alone
        one = torch.empty_like(grad[r : r + 1])
        m1, d1 = ops.lbfgs_observe(grad[r : r + 1], c[r : r + 1], d[r : r + 1], one)
        assert torch.equal(m1[0], gmax[r]) and torch.equal(d1[0], gtd[r])
    if device == "cpu":
        two = with_threads(2, lambda: ops.lbfgs_observe(grad, c, d, torch.empty_like(grad)))
        assert torch.equal(two[0], gmax) and torch.equal(two[1], gtd)


def test_observe_max_propagates_nan_and_takes_noncontiguous_gradients():
    grad = torch.ones(3, 600)
    grad[1, 400] = float("nan")
    grad[2, 7] = -float("inf")
    gmax, _ = ops.lbfgs_observe(grad, torch.ones(3), torch.zeros(3, 600), torch.empty(3, 600))
    assert gmax[0] == 1 and gmax[1].isnan() and gmax[2] == float("inf")
    wide = rows(600, 3, torch.float32, 4).t()  # a non-contiguous [3, 600] view
    g = torch.empty(3, 600)
    ops.lbfgs_observe(wide, torch.ones(3), torch.zeros(3, 600), g)
    assert torch.equal(g, wide.contiguous())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", LENGTHS)
def test_accept_equals_the_step_pair_and_curvature(device, dtype, D):
    B, P = 4, 3
    g, g_old, d = (rows(B, D, dtype, s, device) for s in (5, 6, 7))
    x0 = rows(B, D, dtype, 8, device)
    t = per_row(dtype, B, 9, device)
    take = torch.tensor([True, False, True, True], device=device)
    spare = torch.tensor([0, 2, 2, 1], device=device)
    x, S, Y = x0.clone(), torch.zeros(P, B, D, dtype=dtype, device=device), None
    Y = torch.zeros_like(S)
    ys, yy = ops.lbfgs_accept(g, g_old, d, t, take, spare, x, S, Y)
    s, y = t[:, None] * d, g - g_old
    for r in range(B):
        if not take[r]:  # untouched
            assert torch.equal(x[r], x0[r]) and not S[:, r].any() and not Y[:, r].any()
            continue
        assert torch.equal(x[r], (x0 + s)[r])
        assert torch.equal(S[spare[r], r], s[r]) and torch.equal(Y[spare[r], r], y[r])
        assert torch.equal(ys[r], rowwise_dot(y, s)[r]) and torch.equal(yy[r], rowwise_dot(y, y)[r])
        others = [k for k in range(P) if k != spare[r]]
        assert not S[others, r].any() and not Y[others, r].any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", LENGTHS)
def test_advance_equals_two_loop_trial_and_scaled_copy(device, dtype, D):
    B = 5
    g, S, Y, rho, h, slots = two_loop_inputs(B, D, 4, dtype, D % 7, device)
    x, d0 = rows(B, D, dtype, 11, device), rows(B, D, dtype, 12, device)
    t, c = per_row(dtype, B, 13, device), per_row(dtype, B, 14, device)
    mode = torch.tensor([MODE_DIRECTION, MODE_SKIP, MODE_STEP, MODE_STAY, MODE_DIRECTION])
    d, trial, z = d0.clone(), torch.zeros_like(x), torch.zeros_like(x)
    gtd, dmax = ops.lbfgs_advance(g, S, Y, rho, h, slots, mode.to(device), t, x, c, d, trial, z)
    new_d = ops.rowwise_two_loop(g, S, Y, rho, h, slots)
    step = x + t[:, None] * d0
    for r, m in enumerate(mode.tolist()):
        if m == MODE_SKIP:
            assert torch.equal(d[r], d0[r]) and not trial[r].any() and not z[r].any()
            continue
        if m == MODE_DIRECTION:
            assert torch.equal(d[r], new_d[r])
            assert torch.equal(gtd[r], rowwise_dot(g, new_d)[r])
            assert torch.equal(dmax[r], amax(new_d)[r])
            want = (x + t[:, None] * new_d)[r]
        else:
            assert torch.equal(d[r], d0[r])
            want = step[r] if m == MODE_STEP else x[r]
        assert torch.equal(trial[r], want) and torch.equal(z[r], want * c[r])
    if device == "cpu":  # 2 threads; and no scaled copy when z is empty
        again = [d0.clone(), torch.zeros_like(x), x.new_empty(0)]
        with_threads(
            2,
            lambda: ops.lbfgs_advance(g, S, Y, rho, h, slots, mode, t, x, x.new_empty(0), *again),
        )
        assert torch.equal(again[0], d) and torch.equal(again[1], trial)


def test_opcheck_empty_and_errors():
    B, D = 3, 20
    g, S, Y, rho, h, slots = two_loop_inputs(B, D, 3, torch.float64, 1)
    x, d = rows(B, D, torch.float64, 2), rows(B, D, torch.float64, 3)
    t = c = torch.ones(B, dtype=torch.float64)
    torch.library.opcheck(ops.lbfgs_observe.default, (g, c, d, torch.empty_like(g)))
    take, spare = torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.long)
    torch.library.opcheck(
        ops.lbfgs_accept.default, (g, x.clone(), d, t, take, spare, x.clone(), S.clone(), Y.clone())
    )
    mode = torch.full((B,), MODE_DIRECTION)
    out = [torch.empty_like(g) for _ in range(3)]
    torch.library.opcheck(ops.lbfgs_advance.default, (g, S, Y, rho, h, slots, mode, t, x, c, *out))
    # empty batches and rows
    for b, n in ((0, D), (B, 0)):
        e = torch.zeros(b, n, dtype=torch.float64)
        one = torch.ones(b, dtype=torch.float64)
        gm, gd = ops.lbfgs_observe(e, one, e, e.clone())
        assert gm.shape == (b,) and not gm.any() and not gd.any()
    # errors name the op, the argument and what was expected
    with pytest.raises(RuntimeError, match=r"lbfgs_observe: expected scale of shape \[3\]"):
        ops.lbfgs_observe(g, c[:2], d, torch.empty_like(g))
    with pytest.raises(RuntimeError, match="lbfgs_observe: expected g to be contiguous"):
        ops.lbfgs_observe(g, c, d, torch.empty(D, B, dtype=torch.float64).t())
    with pytest.raises(RuntimeError, match="lbfgs_observe: expected d of dtype Double"):
        ops.lbfgs_observe(g, c, d.float(), torch.empty_like(g))
    with pytest.raises(IndexError, match=r"lbfgs_accept: expected spare slots in \[0, 3\), got 3"):
        ops.lbfgs_accept(g, x, d, t, take, spare + 3, x.clone(), S.clone(), Y.clone())
    with pytest.raises(RuntimeError, match="lbfgs_accept: expected rows of dtype Bool"):
        ops.lbfgs_accept(g, x, d, t, take.long(), spare, x.clone(), S.clone(), Y.clone())
    with pytest.raises(RuntimeError, match=r"lbfgs_advance: expected modes in \[0, 3\], got 4"):
        ops.lbfgs_advance(g, S, Y, rho, h, slots, mode + 3, t, x, c, *out)
    with pytest.raises(RuntimeError, match="lbfgs_advance: expected an empty scale without z"):
        ops.lbfgs_advance(g, S, Y, rho, h, slots, mode, t, x, c, out[0], out[1], x.new_empty(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (run by ./run gpu-check)")
def test_cuda_equals_cpu_bit_for_bit():
    B, D = 3, 1000
    g, S, Y, rho, h, slots = two_loop_inputs(B, D, 4, torch.float32, 2)
    x, d = rows(B, D, torch.float32, 2), rows(B, D, torch.float32, 3)
    t = c = per_row(torch.float32, B, 4, "cpu")
    mode = torch.tensor([MODE_DIRECTION, MODE_STEP, MODE_STAY])
    outs = {}
    for dev in ("cpu", "cuda"):
        args = [v.to(dev) for v in (g, S, Y, rho, h, slots, mode, t, x, c)]
        buf = [d.clone().to(dev), torch.zeros_like(x, device=dev), torch.zeros_like(x, device=dev)]
        res = ops.lbfgs_advance(*args, *buf)
        gbuf = torch.empty_like(g, device=dev)
        obs = ops.lbfgs_observe(g.to(dev), c.to(dev), d.to(dev), gbuf)
        outs[dev] = [v.cpu() for v in (*res, *buf, *obs, gbuf)]
    for a, b in zip(outs["cpu"], outs["cuda"]):
        assert torch.equal(a, b)
