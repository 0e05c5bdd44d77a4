"""pyinvert.optim.lbfgs_rows: the row path of the per-row L-BFGS (one lbfgs_tell call per tell)
gives the tensor path's trajectories bit for bit (every trial point, value, counter and stopping
reason), on Rosenbrock, quadratics, fixed steps and rows that stop for different reasons, in
float32 and float64, alone and batched, on the CPU and (where there is one) a GPU."""

import pytest
import torch

from pyinvert.optim.lbfgs import LBFGS
from tests.conftest import DEVICES
from tests.test_lbfgs import quadratic, rosenbrock


def run_both(closure, x0, scales=None, **kw):
    """Drive a tensor-path and a rows-path LBFGS side by side; assert every ask and the
    per-row state (status, counters, value, step, point) equal after every tell; return the
    number of evaluations and the final info. ``scales`` [B]: the problems are solved in
    u = x / scale as lbfgs_loop does (scale_asks, scale_gradients; the closure sees x)."""
    a = LBFGS(x0 if scales is None else x0 / scales[:, None], _path="tensor", **kw)
    b = LBFGS(x0 if scales is None else x0 / scales[:, None], _path="rows", **kw)
    assert b._use_rows and not a._use_rows
    if scales is not None:
        for opt in (a, b):
            opt.scale_asks(scales)
            opt.scale_gradients(scales)
    n = 0
    while not a.done:
        assert not b.done
        za, zb = (a.ask(), b.ask()) if scales is None else (a.ask_scaled(), b.ask_scaled())
        assert torch.equal(za, zb), n
        z = za.detach().requires_grad_(True)
        f = closure(z)
        (g,) = torch.autograd.grad(f.sum(), z)
        a.tell(f.detach(), g)
        b.tell(f.detach().clone(), g.clone())
        for name in ("status", "iterations", "evaluations", "f", "t", "x"):
            va, vb = getattr(a, name), getattr(b, name)
            assert (
                torch.equal(va, vb)
                or (va.isnan() == vb.isnan()).all()
                and torch.equal(va.nan_to_num(), vb.nan_to_num())
            ), (name, n, va, vb)
        n += 1
    assert b.done
    return n, b.info()


def rows_closure(fns):
    return lambda x: torch.stack([fn(x[i]) for i, fn in enumerate(fns)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rosenbrock_rows_path_equals_tensor_path(dtype, device):
    x0 = torch.tensor([[-1.2, 1.0], [0.5, -0.5], [2.0, 2.0], [-1.5, 2.5]], dtype=dtype)
    x0 = x0.to(device)
    n, info = run_both(
        rows_closure([rosenbrock] * 4), x0, max_iter=60, history_size=5, tolerance_grad=1e-6
    )
    assert n > 40 and info.iterations.min() > 10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quadratics_and_mixed_stops_rows_path_equals_tensor_path(dtype, device):
    probs = [tuple(v.to(device) for v in quadratic(12, s, dtype)) for s in range(3)]
    fns = [lambda r, A=A, b=b: 0.5 * (r * (A @ r)).sum() - (b * r).sum() for A, b in probs]
    # a row that stops at once (zero gradient), a 10-d Rosenbrock, and one going to NaN
    fns.append(lambda r: (r * 0).sum())
    fns.append(lambda r: rosenbrock(r[:10]) + 0 * r.sum())
    fns.append(lambda r: (r**2).sum() + torch.where(r[0] > 2.5, float("nan"), 0.0))
    x0 = torch.randn(6, 12, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    x0[5] = torch.linspace(-3, 3, 12, dtype=dtype)
    _, info = run_both(rows_closure(fns), x0, max_iter=80, max_eval=90, history_size=4)
    assert len(set(info.reasons)) >= 3, info.reasons


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fixed_steps_rows_path_equals_tensor_path(dtype, device):
    x0 = torch.tensor([[-1.2, 1.0], [0.3, 0.3]], dtype=dtype).to(device)
    run_both(
        rows_closure([rosenbrock] * 2), x0, max_iter=30, line_search=None, lr=1e-3, history_size=3
    )


def test_rows_path_is_the_cpu_default_and_batch_invariant():
    assert LBFGS(torch.zeros(2, 3))._use_rows and not LBFGS(torch.zeros(2, 3).half())._use_rows
    with pytest.raises(ValueError, match="the row path takes float32/float64"):
        LBFGS(torch.zeros(2, 3).half(), _path="rows")
    x0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    fns = [rosenbrock] * 5

    def solve(x):
        opt = LBFGS(x, max_iter=40, history_size=6)
        while not opt.done:
            opt.step(rows_closure(fns[: x.shape[0]]))
        return opt.x, opt.info()

    xb, ib = solve(x0)
    for i in range(5):
        xa, ia = solve(x0[i : i + 1])
        assert torch.equal(xa[0], xb[i]) and torch.equal(ia.status[0], ib.status[i])


def test_texture_run_rows_path_equals_tensor_path(imagenet_mobilenet, monkeypatch):
    """A real texture (MobileNetV2, two sources in one batch) through the engine: the same
    images, histories and callback arguments with either path (and either bookkeeping of
    pyinvert.optim.lbfgs_loop)."""
    import functools

    import pyinvert
    from pyinvert.optim import lbfgs_loop

    sources = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))

    def run(path):
        monkeypatch.setattr(lbfgs_loop, "LBFGS", functools.partial(LBFGS, _path=path))
        return pyinvert.texture(sources, imagenet_mobilenet, steps=12, progress=False, seeds=[3, 4])

    rows, tensor = run("rows"), run("tensor")
    assert torch.equal(rows.images, tensor.images)
    assert torch.equal(rows.loss_history, tensor.loss_history)
    assert torch.equal(rows.error_history, tensor.error_history)
    assert torch.isfinite(rows.loss_history).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "settings",
    [
        dict(history_size=1),  # a ring of one pair
        dict(max_iter=3, max_eval=40, history_size=10),  # fewer iterations than pairs
        dict(max_ls=2),  # line searches that run out of evaluations
        dict(tolerance_change=1e-3, max_ls=6),  # brackets closed by the tolerance
    ],
)
def test_edge_settings_rows_path_equals_tensor_path(settings, device):
    fns = [rosenbrock, rosenbrock, lambda r: (r * torch.tensor([1.0, -2.0], device=device)).sum()]
    # (the last row is linear: y = 0, so no pair is ever kept and its spare slot is reused)
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -1.5], [0.5, 0.5]], device=device)
    _, info = run_both(rows_closure(fns), x0, **{"max_iter": 40, **settings})
    assert info.evaluations.min() > 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scaled_problems_rows_path_equals_tensor_path(dtype, device):
    """The engine's form: per-row scales of the asks and the gradients (the row path writes the
    scaled trials with each trial point and scales the gradients while it copies them in)."""
    x0 = torch.tensor([[-1.2, 1.0], [0.5, -0.5], [2.0, 2.0]], dtype=dtype).to(device)
    scales = torch.tensor([0.5, 3.0, 1e-2], dtype=dtype).to(device)
    n, _ = run_both(rows_closure([rosenbrock] * 3), x0, scales=scales, max_iter=30)
    assert n > 20


def test_scale_asks_after_the_first_tell_is_refused():
    opt = LBFGS(torch.zeros(2, 3))
    opt.tell(torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="scale_asks must be called before the first tell"):
        opt.scale_asks(torch.ones(2))


def test_history_bookkeeping_on_lists_equals_the_tensor_one():
    """lbfgs_loop's two ways to write the histories (lists on the CPU, tensors elsewhere) give
    the same values, measures and most advanced iteration after every tell."""
    from pyinvert.optim.lbfgs_loop import _record, _record_tensors

    x0 = torch.tensor([[-1.2, 1.0], [0.5, -0.5], [2.0, 2.0]])
    c = torch.tensor([0.5, 2.0, 3.0])
    opt = LBFGS(x0, max_iter=25, history_size=4)
    T = 25
    hist = [torch.full((3, T), float("nan"), dtype=torch.float64) for _ in range(2)]
    meas = [torch.full((3, T), float("nan"), dtype=torch.float64) for _ in range(2)]
    acc_list, acc_tensor = [0.0] * 3, torch.zeros(3)
    while not opt.done:
        z = opt.ask().detach().requires_grad_(True)
        loss = rows_closure([rosenbrock] * 3)(z)
        (g,) = torch.autograd.grad(loss.sum(), z)
        measure = loss.detach() * 7.0
        before = opt.iterations.clone()
        scaled = loss.detach() * c
        opt.tell(scaled, g * c[:, None])
        top_a = _record(opt, before.tolist(), scaled, measure, acc_list, hist[0].numpy(),
                        meas[0].numpy(), c.numpy(), T)  # fmt: skip
        acc_tensor, top_b = _record_tensors(
            opt, before, scaled, measure, acc_tensor, hist[1], meas[1], c, T
        )
        assert top_a == top_b
        assert torch.equal(torch.tensor(acc_list), acc_tensor)
    assert torch.equal(hist[0].nan_to_num(-1), hist[1].nan_to_num(-1))
    assert torch.equal(meas[0].nan_to_num(-1), meas[1].nan_to_num(-1))
    assert int(torch.isfinite(hist[0]).sum()) > 30
