"""Parameterizations: the pixel canvas is the engine's path bit for bit; the decorrelated
Fourier image gives valid, smooth images, exact gradients and working optimizations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyinvert
from pyinvert import FourierImage, PixelCanvas
from pyinvert.optim.parameterizations import init_rows
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import as_representation


def gen(s=0):
    return torch.Generator().manual_seed(s)


def images(n=2, size=40):
    x = torch.rand(n, 3, size // 4, size // 4, generator=gen())
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def tv(im):
    return (im[..., 1:, :] - im[..., :-1, :]).abs().mean() + (
        im[..., :, 1:] - im[..., :, :-1]
    ).abs().mean()


def test_pixel_canvas_is_the_default_bit_for_bit():
    x = images()
    for recipe in ("cvpr2015", "ijcv2016"):
        a = pyinvert.invert(x, recipe=recipe, steps=15, generator=gen(1), progress=False)
        b = pyinvert.invert(
            x,
            recipe=recipe,
            steps=15,
            generator=gen(1),
            progress=False,
            parameterization=PixelCanvas(),
        )
        assert torch.equal(a.images, b.images) and torch.equal(a.loss_history, b.loss_history)
        assert b.settings["parameterization"] == {"name": "pixels"}


def test_pixel_canvas_init():
    rec = get_recipe("ijcv2016")
    rep = as_representation("hog")
    p = PixelCanvas().init(rec, (1, 10, 10), [5, 6], 80.0, torch.float64, "cpu", rep)
    assert torch.equal(p, init_rows(rec, (1, 10, 10), [5, 6], 80.0, torch.float64))
    start = torch.ones(2, 1, 8, 8)
    q = PixelCanvas().init(rec, (1, 10, 10), [5, 6], 80.0, torch.float64, "cpu", rep, start=start)
    assert torch.equal(q[:, :, 1:9, 1:9], start) and q.sum() == 128
    assert PixelCanvas().image(p, rep) is p


@pytest.mark.parametrize("canvas", [(3, 16, 16), (3, 15, 17), (1, 12, 9)])
def test_fourier_image_is_valid_and_smooth(canvas):
    rep = as_representation(lambda im: im) if canvas[0] == 3 else as_representation("hog")
    param = FourierImage()
    p = param.init(get_recipe("ijcv2016"), canvas, [0, 1], 80.0, torch.float64, "cpu", rep)
    assert p.shape == (2, canvas[0], canvas[1], canvas[2] // 2 + 1, 2)
    x = param.image(p, rep, canvas[1:])
    assert x.shape == (2, *canvas)
    im = rep.postprocess(x)
    assert float(im.min()) > 0 and float(im.max()) < 1  # a sigmoid: no clamping needed
    assert abs(float(im.mean()) - 0.5) < 0.05  # a small spectrum starts near grey
    assert not torch.equal(im[0], im[1])  # rows have their own seeds


def test_fourier_image_favours_low_frequencies():
    rep = as_representation(lambda im: im)
    param = FourierImage()
    p = param.init(get_recipe("ijcv2016"), (3, 64, 64), [0], 80.0, torch.float64, "cpu", rep)
    im = rep.postprocess(param.image(p, rep, (64, 64)))
    # Smoother than pixel noise of the same spread: with amplitudes ~ 1/f the gradient energy
    # per unit variance falls by ~ sqrt(2 ln(N/2)) (2.6 at N = 64) from white noise's.
    noise = 0.5 + (im - 0.5).std() * torch.randn(im.shape, generator=gen(), dtype=im.dtype)
    assert float(tv(im)) < 0.7 * float(tv(noise))
    flat = FourierImage(decay_power=0.0)
    q = flat.init(get_recipe("ijcv2016"), (3, 64, 64), [0], 80.0, torch.float64, "cpu", rep)
    white = rep.postprocess(flat.image(q, rep, (64, 64)))
    assert float(tv(im)) / float(im.std()) < 0.6 * float(tv(white)) / float(white.std())


def test_fourier_gradient_is_exact():
    rep = as_representation(lambda im: im)
    param = FourierImage()
    p = param.init(get_recipe("ijcv2016"), (3, 6, 7), [0], 80.0, torch.float64, "cpu", rep)
    p = (p * 10).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: param.image(t, rep, (6, 7)), (p,))


def test_fourier_start_round_trip():
    rep = as_representation(lambda im: im)
    param = FourierImage()
    start_images = images(1, 16) * 0.8 + 0.1
    start = rep.preprocess(start_images).double()
    p = param.init(
        get_recipe("caricature"), (3, 16, 16), [0], 80.0, torch.float64, "cpu", rep, start=start
    )
    back = rep.postprocess(param.image(p, rep, (16, 16)))
    torch.testing.assert_close(back, start_images.double(), atol=1e-6, rtol=0)


def test_fourier_inversion_and_actmax_work():
    x = images(1, 48)
    res = pyinvert.invert(
        x,
        representation="hog",
        steps=150,
        generator=gen(),
        progress=False,
        parameterization=FourierImage(),
    )
    assert float(res.feature_error[0]) < 0.15, res.feature_error
    assert res.settings["parameterization"]["name"] == "fourier"
    torch.manual_seed(0)
    cnn = pyinvert.CNN(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2)), "0")
    kw = dict(image_size=32, generator=gen(), progress=False, parameterization=FourierImage())
    before = pyinvert.actmax(cnn, [0, 5], steps=1, **kw)
    after = pyinvert.actmax(cnn, [0, 5], steps=60, **kw)
    gain = after.measure - before.measure
    assert bool((gain > 0.01).all()) and float(gain.mean()) > 0.05, (before.measure, after.measure)
    assert float(after.images.min()) >= 0 and float(after.images.max()) <= 1


def test_fourier_errors():
    with pytest.raises(ValueError, match="FourierImage: expected lr to be a number >= 0, got -1"):
        FourierImage(lr=-1)
