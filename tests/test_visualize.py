"""The engine on CNN representations (pyinvert.visualize, pyinvert.invert with a CNN): batch
vs single, NaN row isolation, restarts and invariance maps, activation maximization,
caricatures, DeepDream, results' save(), and the figures."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from pyinvert import figures
from pyinvert.representations.cnn import CNN
from pyinvert.tasks.inversion import invert
from pyinvert.objectives import Activation, Inversion
from pyinvert.tasks.visualization import (
    VisualizationResult,
    actmax,
    caricature,
    dream,
    invariance_map,
    visualize,
)

SIZE = 32


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),  # 0, 1
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),  # 2, 3
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    )  # 4, 5, 6


@pytest.fixture(scope="module")
def photos():
    from pyinvert.data import sample_paths
    import cv2

    out = []
    for p in sample_paths()[:3]:
        a = cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1]
        a = cv2.resize(a, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.mark.parametrize("recipe", ["cvpr2015", "ijcv2016"])
def test_cnn_inversion_batch_equals_single(photos, recipe):
    rep = CNN(net(), "3")
    together = invert(
        photos, representation=rep, recipe=recipe, steps=6, seeds=[5, 6, 7], progress=False
    )
    alone = invert(
        photos[2:3], representation=rep, recipe=recipe, steps=6, seeds=[7], progress=False
    )
    torch.testing.assert_close(together.images[2:3], alone.images)
    assert together.images.shape == (3, 3, SIZE, SIZE)
    assert together.settings["recipe"]["name"] == f"{recipe}-cnn"


def test_cnn_inversion_lowers_the_feature_error(photos):
    rep = CNN(net(), ["1", "3"])
    r = invert(
        photos, representation=rep, recipe="ijcv2016", steps=40, generator=gen(), progress=False
    )
    assert r.loss_history.shape == (3, 40)
    # from noise (feature error about 1 or more) to a fraction of it
    assert bool((r.feature_error < 0.5).all()), r.feature_error


def test_nan_row_is_isolated_with_a_cnn(photos):
    rep = CNN(net(), "3")
    with torch.no_grad():
        targets = rep(rep.preprocess(photos))
    bad = targets.clone()
    bad[1, 0, 0, 0] = float("nan")
    kw = dict(representation=rep, image_size=(SIZE, SIZE), steps=8, seeds=[1, 2, 3], progress=False)
    r = invert(targets=bad, **kw)
    assert r.failed.tolist() == [False, True, False]
    assert r.stopped_at.tolist() == [-1, 0, -1]
    assert torch.isfinite(r.images).all()
    ref = invert(targets=targets, **kw)
    torch.testing.assert_close(r.images[[0, 2]], ref.images[[0, 2]])


def test_restarts_and_invariance_map(photos, tmp_path):
    rep = CNN(net(), "3")
    inv = invariance_map(photos[:2], rep, restarts=3, steps=5, generator=gen(), progress=False)
    assert inv.inversion.images.shape == (2, 3, 3, SIZE, SIZE)
    assert inv.spread.shape == (2, SIZE, SIZE) and inv.mean_spread.shape == (2,)
    assert bool((inv.spread >= 0).all()) and bool((inv.mean_spread > 0).all())
    torch.testing.assert_close(inv.spread, inv.inversion.images.std(1, unbiased=False).mean(1))
    written = inv.save(tmp_path, ["a", "b"])
    names = {p.name for p in written}
    assert {"a-r0.png", "a-r2.png", "b-spread.png", "invariance.json"} <= names
    assert json.loads((tmp_path / "invariance.json").read_text())["restarts"] == 3
    with pytest.raises(
        ValueError, match="invariance_map: expected restarts to be an int >= 2, got 1"
    ):
        invariance_map(photos, rep, restarts=1)


def test_visualize_general_objective(photos):
    rep = CNN(net(), "3")
    with torch.no_grad():
        t = rep(rep.preprocess(photos))
    obj = Inversion(t) + 0.01 * Activation(0)
    r = visualize(
        obj, representation=rep, B=3, image_size=SIZE, steps=4, generator=gen(), progress=False
    )
    assert isinstance(r, VisualizationResult)
    assert r.images.shape == (3, 3, SIZE, SIZE) and r.measure.shape == (3,)
    assert r.loss_history.shape == (3, 4)
    with pytest.raises(
        ValueError,
        match=r"visualize: expected image_size=\(H, W\) without "
        r"init, got None",
    ):
        visualize(obj, representation=rep, B=3)
    with pytest.raises(ValueError, match="visualize: expected restarts to be an int >= 1, got 0"):
        visualize(obj, representation=rep, B=3, image_size=SIZE, restarts=0)
    with pytest.raises(
        ValueError,
        match=r"visualize: expected images of at least 4x4 pixels "
        r"for cnn:sequential:3, got 2x2",
    ):
        visualize(obj, representation=rep, B=3, image_size=2)


def test_actmax_classes_channels_neurons(tmp_path):
    rep = CNN(net(), "6")
    r = actmax(
        rep,
        [0, 5],
        image_size=SIZE,
        steps=5,
        generator=gen(),
        progress=False,
        labels=["zero", "five"],
    )
    assert r.images.shape == (2, 3, SIZE, SIZE)
    assert r.probabilities.shape == (2,) and bool(
        ((r.probabilities > 0) & (r.probabilities <= 1)).all()
    )
    torch.testing.assert_close(
        r.probabilities.double(), r.codes.double().softmax(-1)[[0, 1], [0, 5]]
    )
    written = r.save(tmp_path)
    assert {p.name for p in written} == {"unit0000.png", "unit0005.png", "result.json"}
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["labels"] == ["zero", "five"] and len(rec["probability"]) == 2
    # a channel of a conv layer, and one neuron of it; restarts
    conv = CNN(net(), "3")
    r = actmax(
        conv, [1, 2, 3], image_size=SIZE, steps=5, generator=gen(), progress=False, restarts=2
    )
    assert r.images.shape == (3, 2, 3, SIZE, SIZE) and r.probabilities is None
    r = actmax(conv, 4, neuron="center", image_size=SIZE, steps=5, generator=gen(), progress=False)
    assert r.settings["neuron"] == [3, 3] and r.images.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(
        ValueError,
        match=r"actmax: expected the neuron inside the 8x8 grid, "
        r"got \(8, 0\)",
    ):
        actmax(conv, 4, neuron=(8, 0), image_size=SIZE, steps=2, progress=False)
    with pytest.raises(ValueError, match=r"actmax: a neuron needs a spatial layer"):
        actmax(rep, 4, neuron="center", image_size=SIZE, steps=2, progress=False)
    with pytest.raises(ValueError, match="actmax: expected units as an int or a non-empty list"):
        actmax(rep, [], image_size=SIZE)


def test_actmax_raises_the_activation():
    rep = CNN(net(), "6")
    r = actmax(rep, [2], image_size=SIZE, steps=30, generator=gen(), progress=False)
    h = r.measure_history[0]
    assert float(h[-1]) > float(h[0])


def test_caricature_starts_at_one_and_grows(photos, tmp_path):
    rep = CNN(net(), "3")
    # a random net responds weakly: the priors win at weight 1; weight 100 amplifies
    r = caricature(
        photos,
        rep,
        steps=10,
        data_weight=100.0,
        generator=gen(),
        progress=False,
        names=["a", "b", "c"],
    )
    assert r.images.shape == photos.shape and r.originals.shape == photos.shape
    torch.testing.assert_close(r.originals, photos, atol=1e-5, rtol=0)
    h = r.measure_history
    # the first measure is taken on the (jittered) image itself: about 1
    assert bool(((h[:, 0] > 0.5) & (h[:, 0] < 1.5)).all())
    assert bool((h[:, -1] > h[:, 0]).all())
    written = r.save(tmp_path)
    assert {p.name for p in written} == {"a.png", "b.png", "c.png", "result.json"}


def test_dream_octaves_return_the_input_size(photos):
    rep = CNN(net(), "3")
    r = dream(
        photos[:2], rep, octaves=3, octave_scale=1.5, steps=2, generator=gen(), progress=False
    )
    assert r.images.shape == (2, 3, SIZE, SIZE)
    assert r.settings["sizes"] == [[14, 14], [21, 21], [SIZE, SIZE]]
    assert float((r.images - photos[:2]).abs().mean()) > 1e-3  # something was dreamt
    one = dream(photos[:1], rep, octaves=1, steps=2, generator=gen(), progress=False)
    assert one.settings["sizes"] == [[SIZE, SIZE]]
    with pytest.raises(ValueError, match="dream: expected octaves to be an int >= 1, got 0"):
        dream(photos, rep, octaves=0)
    with pytest.raises(ValueError, match="dream: expected octave_scale > 1, got 1.0"):
        dream(photos, rep, octaves=2, octave_scale=1.0)


def test_dream_is_seeded(photos):
    rep = CNN(net(), "3")
    a = dream(photos[:1], rep, octaves=2, steps=2, generator=gen(3), progress=False)
    b = dream(photos[:1], rep, octaves=2, steps=2, generator=gen(3), progress=False)
    torch.testing.assert_close(a.images, b.images)


# ---- figures ------------------------------------------------------------------------------


def test_figures_shapes(photos):
    grid = figures.layer_grid(list(photos[:2]), [photos[:2], photos[:2]], ["features.3", "x"])
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.dtype == np.uint8
    tiles = figures.labelled_grid(list(photos), ["945 bell pepper p=1.00"] * 3, columns=2)
    assert tiles.ndim == 3
    hm = figures.heat_map(torch.rand(SIZE, SIZE))
    assert hm.shape[:2] == (SIZE, SIZE)


def test_actmax_objectives():
    rep = CNN(net(), "6")
    kw = dict(image_size=SIZE, steps=3, generator=gen(), progress=False)
    auto = actmax(rep, [1, 2], **kw)
    assert auto.settings["objective"] == "log_probability"
    # the measure is taken on the last (jittered) step, the probability on the final image
    torch.testing.assert_close(
        auto.measure, auto.probabilities.to(auto.measure.dtype), rtol=0, atol=1e-2
    )
    raw = actmax(rep, [1, 2], objective="activation", **kw)
    assert raw.settings["objective"] == "activation"
    torch.testing.assert_close(
        raw.measure.double(), raw.codes.double()[[0, 1], [1, 2]], rtol=0.05, atol=1e-3
    )
    conv = CNN(net(), "3")
    assert actmax(conv, [1], **kw).settings["objective"] == "activation"
    with pytest.raises(
        ValueError,
        match=r"actmax: objective 'log_probability' needs a layer of "
        r"logits \(N, K\), got a code of shape \[1, 8, 8, 8\]",
    ):
        actmax(conv, [1], objective="log_probability", **kw)
    with pytest.raises(
        ValueError,
        match=r"actmax: expected objective in \('auto', "
        r"'activation', 'log_probability'\), got 'logit'",
    ):
        actmax(rep, [1], objective="logit", **kw)
    with pytest.raises(
        ValueError,
        match=r"actmax: expected units in \[0, 6\) for a code of "
        r"shape \[6\], got \[6\]",
    ):
        actmax(rep, [0, 6], **kw)


def test_stretch_spans_the_range_per_image():
    g = gen(12)
    faint = 0.45 + 0.1 * torch.rand(2, 3, 16, 16, generator=g)
    faint[1] = 0.5  # a flat image stays finite
    out = figures.stretch(faint)
    assert out.shape == faint.shape
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == 1.0
    assert torch.isfinite(out).all() and bool((out >= 0).all() & (out <= 1).all())
    torch.testing.assert_close(figures.stretch(faint[0]), out[0])
    # monotone: the order of the pixels is kept
    a, b = faint[0].flatten(), out[0].flatten()
    i, j = a.argmin(), a.argmax()
    assert b[i] <= b[j]
