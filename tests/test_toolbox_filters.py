"""filters(): the tiles are the layer's weights, each filter contrast-stretched on its own; the
first layer in RGB; HOG templates and DSIFT glyphs."""

import pytest
import torch
from torch import nn

import pyinvert
from pyinvert.toolbox.filters import stretch_filters


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.Conv2d(6, 4, 3))


def test_first_layer_tiles_are_the_stretched_rgb_weights():
    model = net()
    r = pyinvert.filters(model)
    w = model[0].weight.detach()
    assert r.settings["layer"] == "0" and r.settings["rgb"]
    assert torch.equal(r.weights, w)
    for i in range(6):  # each filter on its own: min -> 0, max -> 1, affine in between
        lo, hi = w[i].min(), w[i].max()
        assert torch.allclose(r.tiles[i], (w[i] - lo) / (hi - lo), atol=1e-6)
        assert r.tiles[i].min() == 0 and r.tiles[i].max() == 1
    assert r.figure.dtype.name == "uint8" and r.figure.shape[2] == 3


def test_deeper_layer_is_a_gray_mosaic_of_input_slices():
    model = net()
    r = pyinvert.filters(model, "2", max_channels=4)
    w = model[2].weight.detach()
    assert r.tiles.shape == (4, 1, 7, 7)  # 2 x 2 mosaic of 3 x 3 slices, 1-pixel separators
    s = stretch_filters(w)
    assert torch.allclose(r.tiles[1, 0, 4:7, 0:3], s[1, 2], atol=1e-6)
    assert torch.all(r.tiles[:, 0, 3, :] == 1)


def test_constant_filter_is_mid_gray():
    assert torch.all(stretch_filters(torch.ones(2, 3, 3, 3)) == 0.5)


def test_mobilenet_first_layer():
    model = pyinvert.models.load_model("mobilenet_v2", weights="imagenet")
    r = pyinvert.filters(pyinvert.CNN(model, "features.0"), "features.0.0")
    assert r.tiles.shape == (32, 3, 3, 3) and r.settings["rgb"]


def test_hog_templates_are_oriented_bars():
    r = pyinvert.filters(pyinvert.HOG())
    assert r.tiles.shape[0] == 9 and len(r.titles) == 9
    g = r.tiles[0, 0]
    # orientation 0 (horizontal gradient) draws a vertical bar: the middle column lit
    mid = g.shape[1] // 2
    assert g[:, mid].mean() > 0.5 and g[mid, :].mean() < 0.2
    assert not torch.equal(r.tiles[0], r.tiles[4])


def test_dsift_glyphs():
    r = pyinvert.filters(pyinvert.DenseSIFT())
    assert r.tiles.shape == (8, 1, 96, 96) and r.titles[2] == "bin 2: 90 deg"


def test_errors():
    with pytest.raises(
        ValueError, match="filters: unknown layer 'nope'; the Conv2d layers are: 0, 2"
    ):
        pyinvert.filters(net(), "nope")
    with pytest.raises(ValueError, match="filters: expected layer '1' to have 4-D"):
        pyinvert.filters(net(), "1")
    with pytest.raises(TypeError, match="filters: expected model"):
        pyinvert.filters("x")
    with pytest.raises(ValueError, match="filters: Linear has no Conv2d layer"):
        pyinvert.filters(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="filters: expected max_filters"):
        pyinvert.filters(net(), max_filters=0)
