"""torch.ops.pyinvert.lbfgs_tell, the row path's one call per tell (pyinvert.optim.lbfgs_rows):
opcheck (CPU and, where there is one, CUDA), a row's bits independent of the thread count and of its
batch mates, non-contiguous inputs, empty batches, and the errors. Its trajectories are compared
bit for bit with the tensor path in tests/test_lbfgs_rows.py."""

import pytest
import torch

from pyinvert.optim import lbfgs_rows
from pyinvert.optim.lbfgs import LBFGS
from tests.conftest import DEVICES
from tests.test_lbfgs import rosenbrock
from tests.test_rowwise import with_threads

ops = torch.ops.pyinvert


def rows_closure(x):
    return torch.stack([rosenbrock(r) for r in x])


def started(B=3, D=6, dtype=torch.float32, steps=4, device="cpu"):
    """An LBFGS on the row path a few tells into a run of B Rosenbrock rows."""
    x0 = torch.randn(B, D, generator=torch.Generator().manual_seed(5), dtype=dtype).to(device)
    opt = LBFGS(x0, max_iter=50, history_size=3, _path="rows")
    for _ in range(steps):
        opt.step(rows_closure)
    return opt


def tell_args(opt, f, grad):
    st = opt._rows
    return (grad, st.empty, f, st.ask_scale, st.real, st.ints, st.ring, st.x, st.G, st.d,
            st.lo_g, st.g_prev, st.trial, st.z, st.S, st.Y, st.rho, *st.settings, True)  # fmt: skip


def value_and_grad(opt):
    z = opt.ask().detach().requires_grad_(True)
    f = rows_closure(z)
    (g,) = torch.autograd.grad(f.sum(), z)
    return f.detach(), g


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype, device):
    opt = started(dtype=dtype, device=device)
    f, g = value_and_grad(opt)
    # (nan_to_num: the history slots not yet written hold whatever the allocator gave)
    args = tuple(
        a.clone().nan_to_num_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in tell_args(opt, f, g)
    )
    torch.library.opcheck(ops.lbfgs_tell.default, args)


def solve(x0, threads=1, steps=200):
    def run():
        opt = LBFGS(x0, max_iter=60, history_size=4, tolerance_grad=1e-9)
        for _ in range(steps):
            if opt.done:
                break
            opt.step(rows_closure)
        return opt.x.clone(), opt.info()

    return with_threads(threads, run)


def test_rows_independent_of_threads_and_batch_mates():
    x0 = torch.randn(5, 8, generator=torch.Generator().manual_seed(7))
    x1, i1 = solve(x0)
    x2, i2 = solve(x0, threads=2)
    assert torch.equal(x1, x2) and torch.equal(i1.evaluations, i2.evaluations)
    assert len(set(i1.evaluations.tolist())) > 1  # the rows run their own line searches
    for r in (0, 3):
        xr, ir = solve(x0[r : r + 1])
        assert torch.equal(xr[0], x1[r]) and ir.evaluations[0] == i1.evaluations[r]


def test_noncontiguous_gradients_and_values():
    a, b = started(), started()
    f, g = value_and_grad(a)
    a.tell(f, g)
    wide = g.t().contiguous().t()  # the same values, column-major
    spread = torch.stack([f, f], 1)[:, 0]  # a strided [B] view
    assert not wide.is_contiguous() and not spread.is_contiguous()
    b.tell(spread, wide)
    assert torch.equal(a.ask(), b.ask()) and torch.equal(a.f, b.f)


def test_empty_batch():
    opt = LBFGS(torch.zeros(0, 4), _path="rows")
    opt.tell(torch.zeros(0), torch.zeros(0, 4))
    assert opt.done and opt.ask().shape == (0, 4)


def test_errors_name_the_argument():
    opt = started()
    f, g = value_and_grad(opt)
    args = list(tell_args(opt, f, g))
    names = [a.name for a in ops.lbfgs_tell.default._schema.arguments]

    def fails(name, value, match, error=RuntimeError):
        bad = list(args)
        bad[names.index(name)] = value
        with pytest.raises(error, match=match):
            ops.lbfgs_tell.default(*bad)

    st = opt._rows
    fails("real", st.real[:, :5].contiguous(), "expected real of shape")
    fails("ints", st.ints.int(), "expected ints of shape")
    fails("grad", g.double(), "expected grad of dtype")
    fails("f", f[:2], "expected f of shape")
    fails("d", st.d.t().contiguous().t(), "expected d to be contiguous")
    fails("Y", st.Y[:1].clone(), "expected Y of shape")
    fails("ask_scale", torch.ones(3), "expected an empty ask_scale without z")
    ints = st.ints.clone()
    ints[:, lbfgs_rows.SPARE] = 99  # a corrupted ring: the op refuses to write out of bounds
    fails("ints", ints, "expected history slots in", IndexError)
