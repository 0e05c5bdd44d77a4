"""The engine's pieces changed for speed keep their values: the jitter crop (and its one-pass
backward), the centre crop, the 95th percentile of the initialization, the AdaGrad step, and
the loop's histories / NaN stops."""

import pytest
import torch

from pyinvert.optim.engine import _quantile, init_rows
from pyinvert.optim.loop import AdagradMomentumRule, optimize
from pyinvert.optim.recipes import get_recipe
from pyinvert.optim.jitter import center_crop, jitter_crop


def crop_by_slices(x, size, offsets):
    H, W = size
    return torch.cat(
        [x[n : n + 1, :, dy : dy + H, dx : dx + W] for n, (dy, dx) in enumerate(offsets.tolist())],
        0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "non_contiguous"])
def test_jitter_crop_matches_slices(dtype, layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 9, 10, generator=g, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "non_contiguous":
        x = torch.randn(4, 3, 9, 20, generator=g, dtype=dtype)[..., ::2]
    offsets = torch.tensor([[0, 0], [2, 3], [1, 1], [3, 0]])
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ca, cb = jitter_crop(a, (6, 7), offsets), crop_by_slices(b, (6, 7), offsets)
    assert torch.equal(ca, cb)
    w = torch.randn(ca.shape, generator=g, dtype=dtype)
    (ga,) = torch.autograd.grad((ca * w).sum() + a.square().sum(), a)
    (gb,) = torch.autograd.grad((cb * w).sum() + b.square().sum(), b)
    assert torch.equal(ga, gb)


def test_jitter_crop_gradcheck_and_empty():
    x = torch.randn(3, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([[0, 1], [2, 0], [1, 2]])
    assert torch.autograd.gradcheck(lambda t: jitter_crop(t, (3, 4), offsets), (x,))
    e = torch.zeros(0, 2, 5, 6, requires_grad=True)
    out = jitter_crop(e, (3, 4), torch.zeros(0, 2, dtype=torch.long))
    assert out.shape == (0, 2, 3, 4)
    out.sum().backward()
    assert e.grad.shape == e.shape


def test_jitter_crop_errors():
    x = torch.zeros(2, 1, 5, 5)
    with pytest.raises(
        ValueError,
        match=r"jitter_crop: expected offsets of shape \(2, 2\), "
        r"got \[1, 2\]",
    ):
        jitter_crop(x, (3, 3), torch.tensor([[0, 0]]))
    with pytest.raises(
        ValueError,
        match=r"jitter_crop: expected offsets in \[0, 2\] x \[0, 2\], "
        r"got \(3, 0\)",
    ):
        jitter_crop(x, (3, 3), torch.tensor([[0, 0], [3, 0]]))


def test_center_crop_of_the_full_size_is_x():
    x = torch.randn(2, 3, 4, 5)
    assert center_crop(x, (4, 5)) is x
    assert torch.equal(center_crop(x, (2, 3)), x[..., 1:3, 1:4])


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 3 * 225 * 225])
@pytest.mark.parametrize("q", [0.0, 0.123, 0.5, 0.95, 1.0])
def test_quantile_is_torch_quantile(n, q):
    v = 2 * torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64) - 1
    assert torch.equal(_quantile(v, q), torch.quantile(v, q))


def test_init_rows_seeded_per_row():
    rec = get_recipe("ijcv2016")
    a = init_rows(rec, (3, 8, 8), [5, 6], 80.0, torch.float32)
    b = init_rows(rec, (3, 8, 8), [6], 80.0, torch.float32)
    assert torch.equal(a[1], b[0])
    z = (
        2 * torch.rand((3, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        - 1
    )
    want = z / torch.quantile(z.flatten(), 0.95) * 80.0 / 3**0.5
    assert torch.equal(a[0], want.float())


def test_adagrad_step_formula():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    grads = [torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(3)]
    lr = torch.tensor([0.5, 2.0], dtype=torch.float64)
    rule = AdagradMomentumRule(0.9)
    y, G, v = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    for gr in grads:
        rule.step(x, gr, lr)
        G = 0.9 * G + gr * gr
        v = 0.9 * v - gr / (1.0 / lr.view(-1, 1, 1, 1) + G.sqrt())
        y = y + v
    torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


def test_optimize_histories_and_nan_stop():
    rec = get_recipe("ijcv2016", jitter=3).scaled(6)
    x = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    gens = [torch.Generator().manual_seed(i) for i in range(3)]

    def objective(crop, full):
        w = torch.tensor([1.0, float("nan"), 1.0])
        loss = (
            (crop.flatten(1).square().sum(1) + 1.0)
            * torch.where(torch.arange(3) == 1, w, torch.ones(3))
            if objective.calls >= 2
            else crop.flatten(1).square().sum(1) + 1.0
        )
        objective.calls += 1
        return loss, loss.detach() * 2

    objective.calls = 0
    x1 = x.clone()
    hist, err, active, stopped = optimize(
        x1, objective, rec, image_size=(8, 8), lr_scale=torch.ones(3), generators=gens
    )
    assert hist.dtype == torch.float64 and hist.device.type == "cpu" and hist.shape == (3, 6)
    assert stopped.tolist() == [-1, 2, -1] and active.tolist() == [True, False, True]
    assert torch.isnan(hist[1, 2:]).all() and torch.isfinite(hist[[0, 2]]).all()
    torch.testing.assert_close(err[[0, 2]], 2 * hist[[0, 2]])
    assert torch.isfinite(x1).all()


def test_optimize_stops_a_row_whose_step_overflows_x():
    # A finite loss and gradient whose step overflows float32 x: that row stops (zeroed and
    # reported), the next Phi never sees a non-finite pixel, the other rows go on unchanged.
    rec = get_recipe("cvpr2015").scaled(4)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    scale = torch.tensor([1.0, 1e4, 1.0])  # row 1: finite gradient sums, an overflowing step

    def objective(crop, full):
        assert torch.isfinite(crop).all(), "Phi saw a non-finite pixel"
        loss = (crop.flatten(1) * scale[:, None]).sum(1)
        return loss, loss.detach()

    x1 = x.clone()
    hist, _, active, stopped = optimize(
        x1,
        objective,
        rec,
        image_size=(8, 8),
        lr_scale=torch.tensor([1.0, 3e38, 1.0]),
        generators=gens,
    )
    assert stopped.tolist() == [-1, 0, -1] and active.tolist() == [True, False, True]
    assert torch.isfinite(x1).all() and (x1[1] == 0).all()
    x2 = x[[0, 2]].clone()
    scale = torch.tensor([1.0, 1.0])
    optimize(
        x2,
        objective,
        rec,
        image_size=(8, 8),
        lr_scale=torch.ones(2),
        generators=[torch.Generator().manual_seed(i) for i in (0, 2)],
    )
    assert torch.equal(x1[[0, 2]], x2)
