"""Evaluations (randomization test, deletion / insertion, pointing game) and top patches."""

import numpy as np
import pytest
import torch

from pyinvert.attribution import attribute
from pyinvert.attribution.evaluation import (
    deletion_insertion,
    pointing_game,
    randomization_figure,
    randomization_test,
    spearman,
    ssim,
)
from pyinvert.attribution.patches import receptive_field, top_patches
from pyinvert.data import sample_path
from pyinvert.models import describe, load_model, prepare_image
from tests.test_attribution import imagenet_mobilenet_or_skip

torch.set_num_threads(1)

PHOTOS = [sample_path(n) for n in ("chelsea", "coffee", "astronaut", "rocket")]


@pytest.fixture(scope="module")
def mnv2():
    return imagenet_mobilenet_or_skip()


def test_spearman_and_ssim_against_definitions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 8, 8, generator=g), torch.rand(2, 8, 8, generator=g)
    ra = a.flatten(1).argsort(1).argsort(1).double().numpy()
    rb = b.flatten(1).argsort(1).argsort(1).double().numpy()
    ref = [np.corrcoef(ra[i], rb[i])[0, 1] for i in range(2)]
    np.testing.assert_allclose(spearman(a, b).numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(spearman(a, a), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(spearman(a, -a), -torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(ssim(a, 3 * a + 1), torch.ones(2, dtype=torch.float64))
    assert (ssim(a, b) < 0.5).all()


def test_randomization_test_reproduces_the_papers_finding(mnv2, tmp_path):
    """Adebayo et al. 2018, fig. 2: the gradient's maps decorrelate as soon as the top layer is
    randomized and stay decorrelated; guided backprop's barely change until the lower
    layers are randomized."""
    layers = ["classifier.1", "features.18", "features.14", "features.7", "features.0"]
    r = randomization_test(
        PHOTOS[:3], mnv2, ["saliency", "guided_backprop"], size=64, layers=layers
    )
    assert r["stages"] == ["trained"] + layers
    sal = r["saliency"]["spearman_abs"].flatten(1).mean(1)
    gbp = r["guided_backprop"]["spearman_abs"].flatten(1).mean(1)
    assert sal[0] == pytest.approx(1.0)
    assert (sal[1:] < 0.5).all() and sal[-1] < 0.3, sal
    assert gbp[1] > 0.9 and gbp[-1] < 0.5, gbp
    assert r["saliency"]["ssim"].shape == (6, 3, 1)
    fig = randomization_figure(r)
    assert fig.ndim == 3 and fig.shape[2] == 3 and fig.std() > 10


def test_gradcam_beats_random_maps_on_deletion(mnv2):
    a = attribute(PHOTOS, mnv2, "gradcam", size=96)
    kw = dict(steps=12, modes=("deletion",))
    ours = deletion_insertion(a.images, mnv2, a.maps["gradcam"], a.targets, **kw)
    g = torch.Generator().manual_seed(0)
    rand = []
    for _ in range(2):  # random maps as smooth as Grad-CAM's (its 3x3 layer, upsampled)
        low = torch.rand(4, 1, 3, 3, generator=g)
        m = torch.nn.functional.interpolate(low, size=(96, 96), mode="bilinear")
        rand.append(deletion_insertion(a.images, mnv2, m, a.targets, **kw)["deletion_auc"])
    assert ours["deletion_auc"].mean() < torch.stack(rand).mean()


def test_deletion_insertion_curve_ends(mnv2):
    a = attribute(PHOTOS[:1], mnv2, "saliency", size=64)
    r = deletion_insertion(a.images, mnv2, a.maps["saliency"], a.targets, steps=4, blur_sigma=2.0)
    p0 = torch.softmax(mnv2(__import__("pyinvert").models.normalize(a.images)), 1)
    torch.testing.assert_close(r["deletion"][0, 0, 0], p0[0, a.targets[0, 0]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        r["insertion"][0, 0, -1], p0[0, a.targets[0, 0]], atol=1e-5, rtol=1e-4
    )
    assert r["deletion"].shape == (1, 1, 5) and r["insertion_auc"].shape == (1, 1)
    with pytest.raises(ValueError, match="expected maps of shape"):
        deletion_insertion(a.images, mnv2, a.maps["saliency"][:, :, :8], a.targets)
    with pytest.raises(ValueError, match="expected modes in"):
        deletion_insertion(a.images, mnv2, a.maps["saliency"], a.targets, modes=("x",))


def test_pointing_game():
    maps = torch.zeros(2, 2, 50, 50)
    maps[0, 0, 10, 10] = 1  # inside the box
    maps[0, 1, 40, 40] = 1  # 20 px from the box's corner (> 15)
    maps[1, 0, 30, 30] = 1  # within tolerance of the second box
    maps[1, 1, 0, 0] = 1
    boxes = [[(5, 5, 20, 20), (0, 0, 26, 26)], [[(0, 0, 2, 2), (31, 31, 40, 40)], (20, 20, 30, 30)]]
    r = pointing_game(maps, boxes)
    assert r["hits"].tolist() == [[True, False], [True, False]] and r["accuracy"] == 0.5
    with pytest.raises(ValueError, match="expected boxes for 2 images"):
        pointing_game(maps, boxes[:1])


def test_top_patches_streamed_equals_brute_force(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(6, 6, 3, padding=1),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 16 * 16, 3),
    ).eval()
    x = torch.rand(5, 3, 32, 32)
    a = top_patches(x, net, "3", "0:3", k=3, size=32, batch_size=2)
    b = top_patches(x, net, "3", [0, 1, 2], k=3, size=32, batch_size=5)
    key = [[(h["image"], h["y"], h["x"]) for h in row] for row in a.hits]
    assert key == [[(h["image"], h["y"], h["x"]) for h in row] for row in b.hits]
    with torch.no_grad():
        xp = prepare_image(x, 32)  # top_patches' resize + centre crop
        acts = net[:4](xp)[:, :3]
    for c in range(3):
        per_image = acts[:, c].flatten(1).max(1).values
        assert [h["value"] for h in a.hits[c]] == pytest.approx(
            per_image.topk(3).values.tolist(), rel=1e-6
        )
        h = a.hits[c][0]
        assert acts[h["image"], c, h["y"], h["x"]].item() == pytest.approx(h["value"])
    jump, rf, start = a.receptive_field
    row = [r for r in describe(net, 32) if r["layer"] == "3"][0]
    assert (jump, rf) == (row["stride"], row["receptive_field"]) == (2, 6)
    h = a.hits[0][0]
    y0 = int(round(start + h["y"] * jump - (rf - 1) / 2))
    x0 = int(round(start + h["x"] * jump - (rf - 1) / 2))
    padded = torch.nn.functional.pad(xp[h["image"]], (6, 6, 6, 6), value=0.5)
    torch.testing.assert_close(a.crops[0][0], padded[:, y0 + 6 : y0 + 12, x0 + 6 : x0 + 12])
    assert a.figure.shape[2] == 3 and a.save(tmp_path / "p.png").is_file()


def test_top_patches_folder_and_errors(tmp_path):
    from pyinvert.io import save_image

    for i in range(3):
        save_image(tmp_path / f"im{i}.png", torch.rand(3, 40, 40))
    net = load_model("mobilenet_v2")
    r = top_patches(tmp_path, net, "features.3", [1, 5], k=2, size=32, batch_size=2)
    assert all(str(tmp_path) in h["image"] for h in r.hits[0])
    assert r.receptive_field == receptive_field(net, net.features[3], 32)
    with pytest.raises(ValueError, match=r"expected channels in \[0, 24\)"):
        top_patches(tmp_path, net, "features.3", [30], size=32)
    with pytest.raises(ValueError, match="no images"):
        top_patches(tmp_path / "none", net, "features.3", [1], size=32) if (
            tmp_path / "none"
        ).mkdir() is None else None
    with pytest.raises(ValueError, match="expected k to be an int >= 1"):
        top_patches(tmp_path, net, "features.3", [1], k=0)
