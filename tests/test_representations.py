"""The representation protocol: Code, as_representation (names, HOG()/DenseSIFT() modules, CNN,
any nn.Module, any callable, registered names), render_code, and every kind of representation
in invert / visualize / actmax."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyinvert
from pyinvert.features.dsift import keypoints
from pyinvert.objectives import Activation
from pyinvert.representations import (
    CNN,
    Code,
    DSIFTRepresentation,
    FunctionRepresentation,
    HOGRepresentation,
    Representation,
    RepresentationProtocol,
    as_representation,
    make_representation,
    register_representation,
)
from pyinvert.representations import registry


def smooth_images(n=2, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def encoder():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()
    )


@pytest.fixture(autouse=True)
def clean_registry():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


# ---- Code -----------------------------------------------------------------------------------


def test_code_flat_view_slices_and_round_trip():
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 7)
    code = Code({"a": a, "b": b})
    assert code.layers == ["a", "b"] and code.batch_size == 2 and len(code) == 2
    assert code.slices == [(0, 60), (60, 67)]
    assert torch.equal(code.flat, torch.cat([a.flatten(1), b], 1))
    back = Code.from_flat(code.flat, code.shapes)
    assert torch.equal(back["a"], a) and torch.equal(back["b"], b)
    one = code.select(1)
    assert one["a"].shape == (1, 3, 4, 5) and torch.equal(one["b"], b[1:])
    assert "a: [2, 3, 4, 5]" in repr(code)


def test_code_errors():
    with pytest.raises(ValueError, match="Code: expected a non-empty dict"):
        Code({})
    with pytest.raises(ValueError, match=r"Code: expected maps of one batch size, got \[1, 2\]"):
        Code({"a": torch.zeros(1, 3), "b": torch.zeros(2, 3)})
    with pytest.raises(TypeError, match="Code: expected 'a' to be a Tensor"):
        Code({"a": 3})
    with pytest.raises(ValueError, match="Code.from_flat: expected 6 values per row"):
        Code.from_flat(torch.zeros(1, 7), {"a": (2, 3)})


# ---- as_representation ---------------------------------------------------------------------


def test_every_kind_satisfies_the_protocol():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    reps = [
        as_representation("hog"),
        as_representation("dsift"),
        as_representation(pyinvert.HOG()),
        as_representation(pyinvert.DenseSIFT()),
        as_representation(CNN(net, "1")),
        as_representation(net),
        as_representation(lambda im: im.mean((2, 3))),
    ]
    for rep in reps:
        assert isinstance(rep, Representation) and isinstance(rep, RepresentationProtocol)
        assert rep.kind in ("handcrafted", "cnn") and isinstance(rep.config(), dict)
        assert isinstance(rep.min_size, int) and isinstance(rep.stride, int)
    c = CNN(net, "1")
    assert as_representation(c) is c


def test_feature_modules_keep_their_parameters():
    rep = as_representation(pyinvert.HOG(cell_size=4, bilinear_orientations=True))
    assert isinstance(rep, HOGRepresentation) and rep.cell_size == 4 and rep.name == "hogb"
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(
        rep(x), pyinvert.hog(x, cell_size=4, bilinear_orientations=True), rtol=0, atol=0
    )
    dt = as_representation(pyinvert.HOG(variant="dalaltriggs", num_orientations=6))
    assert dt(x).shape[1] == 24 and dt.config()["variant"] == "dalaltriggs"
    ds = as_representation(
        pyinvert.DenseSIFT(step=2, bin_size=4, flat_window=True), backend="reference"
    )
    assert isinstance(ds, DSIFTRepresentation) and (ds.step, ds.bin_size) == (2, 4)
    torch.testing.assert_close(
        ds(x), pyinvert.reference.dsift(x, step=2, bin_size=4, flat_window=True)[0]
    )


def test_hog_module_inverts_as_the_name_does():
    x = smooth_images()
    a = pyinvert.invert(x, representation=pyinvert.HOG(), steps=30, generator=gen(), progress=False)
    b = pyinvert.invert(x, representation="hog", steps=30, generator=gen(), progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.feature_error, b.feature_error)
    # The CVPR recipe's DSIFT is bin size 5: the module with those parameters is the name.
    c = pyinvert.invert(
        x,
        representation=pyinvert.DenseSIFT(bin_size=5, step=4),
        steps=30,
        generator=gen(),
        progress=False,
    )
    d = pyinvert.invert(x, representation="dsift", steps=30, generator=gen(), progress=False)
    assert torch.equal(c.images, d.images)


@pytest.mark.parametrize("rep", [pyinvert.HOG(), pyinvert.DenseSIFT()])
def test_issue_calls_feature_modules_reconstruct(rep):
    x = smooth_images(size=64)
    res = pyinvert.invert(x, representation=rep, steps=200, generator=gen(), progress=False)
    assert res.images.shape == (2, 1, 64, 64)
    assert bool((res.feature_error < 0.15).all()), res.feature_error


def test_issue_call_any_module_and_any_callable_reconstruct():
    x = smooth_images(size=40)
    for rep, limit in ((encoder(), 0.1), (lambda im: F.avg_pool2d(im, 4), 0.1)):
        res = pyinvert.invert(x, representation=rep, steps=120, generator=gen(), progress=False)
        assert res.images.shape == (2, 3, 40, 40)
        assert bool((res.feature_error < limit).all()), res.feature_error
        # Sensible images: closer to the originals than a grey image is.
        grey = (x - 0.5).abs().mean()
        assert float((res.images - x).abs().mean()) < float(grey)


def test_function_representation_sees_images_in_0_1():
    seen = []

    def phi(im):
        seen.append(im.detach())
        return im.mean((2, 3))

    rep = as_representation(phi)
    assert isinstance(rep, FunctionRepresentation) and rep.name == "phi"
    im = torch.rand(2, 1, 8, 8)
    x = rep.preprocess(im)
    assert x.shape == (2, 3, 8, 8)  # gray repeated to RGB
    rep(x)
    torch.testing.assert_close(seen[-1], im.expand(-1, 3, -1, -1))
    torch.testing.assert_close(rep.postprocess(x), im.expand(-1, 3, -1, -1))
    assert rep.min_size == 1 and rep.stride == 1  # not spatial
    assert as_representation(encoder()).stride == 4


def test_function_representation_errors():
    with pytest.raises(
        TypeError,
        match="as_representation: expected representation to be a "
        "name, an nn.Module or a callable, got int",
    ):
        as_representation(3)
    with pytest.raises(TypeError, match="invert: expected representation to be a name"):
        pyinvert.invert(torch.rand(1, 3, 8, 8), representation=3.0, progress=False)
    with pytest.raises(
        TypeError, match="bad: expected the representation to return a Tensor, got tuple"
    ):
        FunctionRepresentation(lambda im: (im,), name="bad")(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="FunctionRepresentation: expected channels 1 or 3"):
        FunctionRepresentation(lambda im: im, channels=2)


def test_declared_protocol_keeps_its_own_scale():
    class Mine(nn.Module):
        channels = 1
        kind = "handcrafted"
        name = "mine"
        min_size = 4

        def preprocess(self, images):
            return images[:, :1] * 10.0

        def postprocess(self, x):
            return (x / 10.0).clamp(0, 1)

        def forward(self, x):
            return F.avg_pool2d(x, 2)

        def layers_info(self):
            return "kept"

    rep = as_representation(Mine())
    assert rep.name == "mine" and rep.min_size == 4 and rep.channels == 1
    assert rep.layers_info() == "kept"
    torch.testing.assert_close(
        rep.preprocess(torch.ones(1, 3, 4, 4)), torch.full((1, 1, 4, 4), 10.0)
    )
    with pytest.raises(ValueError, match="invert: expected images of at least 4x4 pixels for mine"):
        pyinvert.invert(torch.rand(1, 1, 3, 3), representation=Mine(), progress=False)


# ---- names ----------------------------------------------------------------------------------


def test_registered_names_work_wherever_a_name_does():
    register_representation("pool4", lambda: (lambda im: F.avg_pool2d(im, 4)))
    assert "pool4" in registry.registered_representations()
    register_representation("gone", lambda: None)
    registry.unregister_representation("GONE")
    assert "gone" not in registry.registered_representations()
    with pytest.raises(KeyError, match="unregister_representation: 'gone' is not registered"):
        registry.unregister_representation("gone")
    x = smooth_images(1, 32)
    res = pyinvert.invert(x, representation="POOL4", steps=20, generator=gen(), progress=False)
    assert res.settings["representation"]["name"] == "<lambda>"
    assert isinstance(make_representation("pool4"), FunctionRepresentation)
    with pytest.raises(ValueError, match="register_representation: 'pool4' is already registered"):
        register_representation("pool4", lambda: None)
    with pytest.raises(ValueError, match="register_representation: 'hog' is a built-in"):
        register_representation("hog", lambda: None)
    with pytest.raises(TypeError, match="register_representation: expected factory to be callable"):
        register_representation("other", 3)
    with pytest.raises(
        ValueError,
        match=r"visualize: expected representation in \('hog', "
        r"'hogb', 'dsift'\), a registered name \('pool4',\)",
    ):
        pyinvert.visualize(Activation(0), representation="nope", B=1, image_size=8, progress=False)


# ---- codes as maps, and their pictures ------------------------------------------------------


def test_as_code_layouts():
    im = torch.rand(2, 3, 40, 48)
    d = as_representation("dsift")
    x = d.preprocess(im)
    code = d.code(x)
    kp = keypoints(40, 48, step=4, bin_size=8)
    ny, nx = len(kp[:, 1].unique()), len(kp[:, 0].unique())
    assert code["dsift"].shape == (2, 128, ny, nx)
    # descriptor k sits at (k // nx, k % nx) of the map
    raw = d(x)
    assert torch.equal(code["dsift"][:, :, 1, 2], raw[:, nx + 2])
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    net(torch.zeros(1, 3, 16, 16))
    cnn = CNN(net, ["1", "3"])
    c = cnn.code(cnn.preprocess(torch.rand(2, 3, 16, 16)))
    assert c.layers == ["1", "3"] and c["1"].shape == (2, 4, 7, 7) and c["3"].shape == (2, 5)
    assert c.slices == [(0, 196), (196, 201)]


def test_render_code():
    im = torch.rand(1, 3, 32, 40)
    hog = as_representation("hog")
    code = hog(hog.preprocess(im))[0]
    pic = hog.render_code(code)
    ref = pyinvert.render_hog(code, glyph_size=11).clamp_min(0)
    torch.testing.assert_close(pic, ref / ref.max())
    assert torch.equal(pyinvert.figures.code_picture(code, "hog"), pic)
    assert torch.equal(pyinvert.figures.code_picture(code, hog), pic)
    assert torch.equal(hog.render_code(hog.code(hog.preprocess(im))), pic)
    generic = as_representation(lambda t: t.mean((2, 3)))
    vec = generic.render_code(torch.tensor([1.0, -2.0, 4.0]))
    assert torch.equal(vec, torch.tensor([[[0.25, 0.0, 1.0]]]))
    fig = pyinvert.figures.side_by_side(im[0], im[0], code, representation=hog)
    assert fig.ndim == 3 and fig.shape[2] == 3


# ---- every representation in every task -----------------------------------------------------


def test_any_module_and_callable_in_visualize_and_actmax():
    # A function sees images in [0, 1]: its activations are small next to an ImageNet CNN's,
    # so the data weight is raised to match (the recipe's 1 is for those).
    for rep in (encoder(), lambda im: F.avg_pool2d(im, 4)):
        kw = dict(image_size=32, generator=gen(), progress=False, data_weight=1000.0)
        start = pyinvert.actmax(rep, [1], steps=1, **kw)
        res = pyinvert.actmax(rep, [1], steps=40, **kw)
        assert res.images.shape == (1, 3, 32, 32)
        assert float(res.measure[0]) > float(start.measure[0]) + 0.15, (start.measure, res.measure)
    # the mean green of the image, maximized: the image turns green
    assert float(res.images[0, 1].mean()) > 0.85 > float(res.images[0, 0].mean()) + 0.3
    vis = pyinvert.visualize(
        Activation(torch.tensor([0, 2])),
        representation=pyinvert.HOG(),
        B=2,
        image_size=32,
        steps=20,
        generator=gen(),
        progress=False,
    )
    assert vis.images.shape == (2, 1, 32, 32) and bool((vis.measure > 0).all())
