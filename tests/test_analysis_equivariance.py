"""Equivariance, invariance and stitching (pyinvert.analysis), on HOG, tiny CNNs and
MobileNetV2 at 64 px, with the thresholds the maps must meet."""

from pathlib import Path

import pytest
import torch
from torch import nn

from pyinvert import CNN
from pyinvert.analysis import equivalence, equivariance
from pyinvert.analysis.grids import hog_channel_permutation
from pyinvert.analysis.transforms import parse_transform

DATA = Path(__file__).resolve().parents[1] / "pyinvert" / "data"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_hog_hflip_map_is_the_closed_form_permutation():
    # continuous-valued images: no gradient exactly between two orientation bins
    x = torch.rand(6, 1, 64, 64, dtype=torch.float64)
    res = equivariance(
        "hog",
        x,
        ["hflip", "vflip"],
        crops=12,
        test_crops=4,
        size=48,
        ridge=1e-9,
        prior="zero",
        generator=gen(),
    )
    # UoCTTI HOG has one exact linear dependency between its channels: the undirected
    # channels sum to 0.5 sqrt(18) times the sum of the texture channels. The map is unique
    # up to it: compare on its orthogonal complement (the ridge finds the min-norm map).
    v = torch.zeros(31, dtype=torch.float64)
    v[18:27], v[27:] = 1.0, -0.5 * 18**0.5
    Q = torch.eye(31, dtype=torch.float64) - torch.outer(v, v) / (v @ v)
    for name in ("hflip", "vflip"):
        W, b = res.maps[("hog", name)].linear()
        P = torch.eye(31, dtype=W.dtype)[hog_channel_permutation(parse_transform(name))]
        torch.testing.assert_close(W @ Q, P @ Q, rtol=0, atol=1e-4)
        assert float((W @ v).abs().max()) < 1e-4
        assert float(b.abs().max()) < 1e-5
        assert res.error("hog", name) < 1e-9
        assert res.error("hog", name, "permutation") > 0.05  # the cells alone are not enough


def test_hog_on_photos_hflip_exact_rot45_worse_but_better_than_nothing():
    res = equivariance(
        "hog", DATA, ["hflip", "rot45"], crops=24, test_crops=8, size=64, generator=gen()
    )
    hflip, rot = res.error("hog", "hflip"), res.error("hog", "rot45")
    assert hflip <= 1e-2
    assert rot > 5 * hflip
    assert rot < 0.5 * res.error("hog", "rot45", "none")
    assert rot < res.error("hog", "rot45", "identity")
    assert res.settings["split"] == "photos" and res.settings["test"] == ["rocket"]
    assert "hflip" in res.table() and res.matrix().shape == (1, 2)


class _D4Pool(nn.Module):
    """conv with filters symmetric under flips and 90-degree rotations, ReLU, global average
    pooling: invariant to the exact transforms by construction."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        w = torch.randn(6, 3, 3, 3)
        ws = [w, w.flip(-1)]
        ws = ws + [torch.rot90(v, k, (-2, -1)) for v in ws for k in (1, 2, 3)]
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.conv.weight.data = torch.stack(ws).mean(0)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_an_invariant_representation_gives_the_identity():
    rep = CNN(_D4Pool(), "pool")
    x = torch.rand(8, 3, 40, 40)
    res = equivariance(
        rep,
        x,
        ["hflip", "rot90"],
        crops=24,
        test_crops=6,
        size=24,
        ridge=1e-9,
        prior="zero",
        generator=gen(),
    )
    for name in ("hflip", "rot90"):
        W, b = res.maps[("pool", name)].linear()
        torch.testing.assert_close(W, torch.eye(6, dtype=W.dtype), rtol=0, atol=1e-4)
        assert res.error("pool", name) < 1e-8 and res.error("pool", name, "identity") < 1e-10
        assert res.row("pool", name)["top1_map"] == 1.0


def test_streaming_equals_in_memory():
    x = torch.rand(5, 3, 48, 48)
    kw = dict(crops=20, test_crops=4, size=32, ridge=1e-3, chunk=3, kernel=3)
    a = equivariance("hog", x, ["rot90", "scale0.8"], streaming=True, generator=gen(), **kw)
    b = equivariance("hog", x, ["rot90", "scale0.8"], streaming=False, generator=gen(), **kw)
    for key in a.maps:
        torch.testing.assert_close(a.maps[key].weight, b.maps[key].weight, rtol=0, atol=1e-7)
    assert a.error("hog", "rot90") == pytest.approx(b.error("hog", "rot90"), rel=1e-6)


def test_self_stitching_mobilenet_gives_the_identity_and_keeps_top1():
    res = equivalence(
        "cnn:mobilenet_v2:features.6",
        "cnn:mobilenet_v2:features.6",
        DATA,
        crops=16,
        test_crops=20,
        size=64,
        prior="zero",
        untrained=False,
        generator=gen(),
    )
    row = res.row("trained")
    assert row["error_map"] < 1e-6 and row["top1_map"] >= 0.95
    assert res.settings["identity_distance"] < 1e-3


def test_stitching_two_seeds_beats_naive_and_untrained():
    from pyinvert.analysis.seeds import seed_experiment

    out = seed_experiment("features.10", steps=150, images=256)
    assert all(t["accuracy"] > 0.5 for t in out["training"])  # 5 classes: chance is 0.2
    res = out["result"]
    trained, untrained = res.row("trained"), res.row("untrained")
    assert trained["error_map"] < 0.8 * untrained["error_map"]
    assert trained["error_map"] < trained["error_identity"]
    assert trained["top1_map"] > trained["top1_identity"] + 0.2


def test_learned_refinement_lowers_the_task_loss():
    from pyinvert.analysis.seeds import SmallNet, small_cnn_rep

    torch.manual_seed(0)
    rep = small_cnn_rep(SmallNet().eval(), "features.6", "smallnet")
    x = torch.rand(16, 3, 32, 32)
    res = equivariance(
        rep,
        x,
        ["rot90"],
        method="learned",
        crops=32,
        test_crops=8,
        size=32,
        epochs=3,
        lr=3e-3,
        chunk=8,
        generator=gen(),
    )
    loss = res.settings["learn"]["loss"]["('features.6', 'rot90')"]
    assert loss["last"] < loss["first"]


def test_errors():
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="equivariance: expected method in"):
        equivariance("hog", x, method="lasso")
    with pytest.raises(ValueError, match="equivariance: expected an odd kernel >= 1, got 2"):
        equivariance("hog", x, kernel=2)
    with pytest.raises(ValueError, match="equivariance: expected crops to be an int >= 1"):
        equivariance("hog", x, crops=0)
    with pytest.raises(ValueError, match="equivariance: method='learned' needs a CNN"):
        equivariance("hog", x, method="learned")
    with pytest.raises(ValueError, match="equivariance: expected prior in"):
        equivariance("hog", x, prior="mean")
    with pytest.raises(ValueError, match="equivariance: expected size to be an int >= 4"):
        equivariance("hog", x, size=2)
    with pytest.raises(ValueError, match="equivalence: expected rep_a with one layer"):
        equivalence("cnn:mobilenet_v2:features.1,features.2", "hog", x)
    with pytest.raises(ValueError, match="split_sources: expected 0 < holdout < 1"):
        equivariance("hog", x, holdout=1.0)


def test_a_linear_layer_is_a_one_cell_grid():
    rep = CNN(_D4Pool(), "fc")  # logits [B, 3]: invariant, a 1 x 1 grid
    res = equivariance(
        rep,
        torch.rand(8, 3, 40, 40),
        ["hflip", "rot90"],
        crops=24,
        test_crops=6,
        size=24,
        ridge=1e-9,
        prior="zero",
        generator=gen(),
    )
    for name in ("hflip", "rot90"):
        row = res.row("fc", name)
        W, _ = res.maps[("fc", name)].linear()
        torch.testing.assert_close(W, torch.eye(3, dtype=W.dtype), rtol=0, atol=1e-4)
        assert row["cells"] == 6 and row["error_map"] < 1e-8 and row["top1_map"] == 1.0
