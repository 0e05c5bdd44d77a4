"""Yosinski et al.'s regularizers, each against its definition (scipy's Gaussian filter,
numpy's percentile), and the regularized actmax on the one engine."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import pyinvert
from pyinvert.toolbox.multifaceted import actmax_yosinski
from pyinvert.toolbox.regularizers import (
    YOSINSKI_SETS,
    YosinskiParams,
    YosinskiRegularizer,
    clip_small_contribution,
    clip_small_norm,
    gaussian_blur,
    l2_decay,
    yosinski_params,
)

ndimage = pytest.importorskip("scipy.ndimage")


def rand(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_l2_decay():
    x = rand(2, 3, 4, 4)
    assert torch.equal(l2_decay(x, 0.3), x * 0.7)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3])
def test_gaussian_blur_equals_scipy(sigma):
    x = rand(2, 3, 17, 13)
    ours = gaussian_blur(x, sigma)
    theirs = np.stack(
        [
            np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in im])
            for im in x.numpy()
        ]
    )
    assert np.abs(ours.numpy() - theirs).max() < 1e-12


def test_clip_small_norm_equals_its_definition():
    x = rand(2, 3, 9, 9, seed=1)
    out = clip_small_norm(x, 20)
    for b in range(2):
        norms = np.linalg.norm(x[b].numpy(), axis=0)
        small = norms < np.percentile(norms, 20)
        assert small.sum() == 16  # 20% of 81 pixels, below the interpolated percentile
        expected = np.where(small[None], 0.0, x[b].numpy())
        assert np.array_equal(out[b].numpy(), expected)


def test_clip_small_contribution_equals_its_definition():
    x, g = rand(2, 3, 8, 8, seed=2), rand(2, 3, 8, 8, seed=3)
    out = clip_small_contribution(x, g, 90)
    for b in range(2):
        contrib = np.abs((x[b].numpy() * g[b].numpy()).sum(0))
        small = contrib < np.percentile(contrib, 90)
        assert np.array_equal(out[b].numpy(), np.where(small[None], 0.0, x[b].numpy()))
        assert (~small).sum() == 7  # the 10% largest contributions survive


def test_table_1():
    assert [
        (p.decay, p.blur_width, p.blur_every, p.norm_pct, p.contrib_pct)
        for p in YOSINSKI_SETS.values()
    ] == [(0, 0.5, 4, 50, 0), (0.3, 0, 0, 20, 0), (0.0001, 1.0, 4, 0, 0), (0, 0.5, 4, 0, 90)]
    assert yosinski_params("yosinski2") is YOSINSKI_SETS[2]
    with pytest.raises(ValueError, match=r"yosinski: expected a set in \[1, 2, 3, 4\]"):
        yosinski_params(5)


def test_regularizer_order_and_inactive_rows():
    p = YosinskiParams(decay=0.1, blur_width=1.0, blur_every=2, norm_pct=30, lr=2.0)
    reg = YosinskiRegularizer(p)
    x0 = rand(2, 3, 10, 10, seed=4)
    reg.start(x0)
    x = x0 + 2.0 * rand(2, 3, 10, 10, seed=5)
    stepped = x.clone()
    reg(1, x, None, None, torch.tensor([True, False]))
    expected = clip_small_norm(gaussian_blur(l2_decay(stepped, 0.1), 1.0), 30)
    assert torch.allclose(x[0], expected[0]) and torch.equal(x[1], stepped[1])
    y = x.clone()
    reg(2, x, None, None, torch.tensor([True, True]))  # t = 2: no blur (every 2, from t = 1)
    assert torch.allclose(x, clip_small_norm(l2_decay(y, 0.1), 30))


def test_actmax_yosinski_raises_the_unit_on_the_engine():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    rep = pyinvert.CNN(net, "4")
    for which in (1, 2, 3):
        p = dataclasses.replace(yosinski_params(which), lr=1e3) if which in (2, 3) else which
        r = actmax_yosinski(
            rep, [0, 3], p, image_size=24, steps=30, generator=torch.Generator().manual_seed(0)
        )
        assert r.images.shape == (2, 3, 24, 24)
        gain = r.measure_history[:, -1] - r.measure_history[:, 0]
        assert (gain > 0).all(), (which, gain)
        assert r.settings["recipe"]["name"].startswith("yosinski")
    # set 4 keeps only the 10% of pixels that contribute most: the rest is the mean colour
    r = actmax_yosinski(
        rep, [0, 3], 4, image_size=24, steps=10, generator=torch.Generator().manual_seed(0)
    )
    mean = torch.tensor(pyinvert.models.IMAGENET_MEAN).view(1, 3, 1, 1)
    at_mean = ((r.images - mean).abs().amax(1) < 1e-6).flatten(1).float().mean(1)
    assert (at_mean >= 0.89).all() and (at_mean < 1).all(), at_mean


def test_centre_mask_grows_from_the_centre():
    from pyinvert.toolbox.multifaceted import centre_mask

    first, last = centre_mask(9, 9, 1, 10), centre_mask(9, 9, 10, 10)
    assert first[4, 4] == 1 and last[4, 4] == 1
    assert first[0, 0] < 1e-6 < last[0, 0]
    r2 = ((4 / 4.5) ** 2) * 2
    assert torch.isclose(last[0, 0], torch.exp(torch.tensor(-r2 / 2)))


def test_multifaceted_starts_are_cluster_means_of_the_top_images():
    from pyinvert.toolbox.multifaceted import facet_starts, multifaceted

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    rep = pyinvert.CNN(net, "4")
    pool = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    starts, best, labels = facet_starts(pool, rep, 2, k=2, top=6, size=None, batch_size=7)
    with torch.no_grad():
        scores = rep(rep.preprocess(pool))[:, 2]
    assert best.tolist() == torch.argsort(scores, descending=True)[:6].tolist()
    for j in range(2):
        assert torch.allclose(starts[j], pool[best[labels == j]].mean(0))
    r = multifaceted(pool, rep, 2, k=2, top=6, size=None, steps=20, lr=1e5)
    assert torch.allclose(r.originals, starts, atol=1e-6)
    assert (r.measure_history[:, -1] > r.measure_history[:, 0]).all()
    with pytest.raises(ValueError, match="multifaceted: expected k <= top"):
        facet_starts(pool, rep, 2, k=7, top=6, size=None)


def test_actmax_takes_the_regularizers_and_matches_the_wrapper():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    rep = pyinvert.CNN(net, "4")
    p = dataclasses.replace(yosinski_params(3), lr=1e3, iterations=12)
    a = pyinvert.actmax(
        rep,
        [1, 2],
        regularizers=p,
        image_size=20,
        objective="activation",
        progress=False,
        generator=torch.Generator().manual_seed(3),
    )
    b = actmax_yosinski(rep, [1, 2], p, image_size=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images)
    assert a.settings["recipe"]["name"] == "yosinski-custom" and a.settings["yosinski"]["lr"] == 1e3
    plain = pyinvert.actmax(
        rep,
        [1, 2],
        image_size=20,
        steps=12,
        progress=False,
        objective="activation",
        generator=torch.Generator().manual_seed(3),
    )
    assert plain.settings["recipe"]["name"] == "actmax" and "yosinski" not in plain.settings
