"""Learned priors in use: denoising, the inversion term (invert(prior=...)), the feature-map
prior, and the train-prior / denoise subcommands."""

import json

import pytest
import torch
import torch.nn.functional as F

import pyinvert
from pyinvert import cli, metrics
from pyinvert.data import sample_path
from pyinvert.priors import FoE, train
from pyinvert.priors.denoise import DEFAULT_WEIGHTS, default_weight, denoise
from pyinvert.priors.objective import FeaturePrior, LearnedPrior, train_feature_prior
from pyinvert.priors.store import load
from pyinvert.representations import make_representation
from pyinvert.representations.base import to_gray
from pyinvert import io


def _photo(size=48):
    img = to_gray(io.load_image(sample_path("camera"))[None])
    return F.interpolate(img, size=(size, size), mode="area")


@pytest.mark.parametrize("prior", ["tv", "foe", "ica"])
def test_denoise_improves_psnr_over_the_noisy_image(prior):
    clean = _photo()
    sigma = 25 / 255
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    out = denoise(noisy, prior, sigma, steps=60).clamp(0, 1)
    gain = float(metrics.psnr(out, clean) - metrics.psnr(noisy.clamp(0, 1), clean))
    assert gain > 3.0, gain
    # skimage's PSNR agrees with ours
    skm = pytest.importorskip("skimage.metrics")
    ref = skm.peak_signal_noise_ratio(clean[0, 0].numpy(), out[0, 0].numpy(), data_range=1.0)
    assert abs(ref - float(metrics.psnr(out, clean))) < 1e-3


def test_denoise_defaults_and_errors():
    for name, table in DEFAULT_WEIGHTS.items():
        for s, w in table.items():
            assert default_weight(name, s / 255) == pytest.approx(w)
    lo, hi = sorted(DEFAULT_WEIGHTS["tv"])[:2]
    mid = default_weight("tv", (lo * hi) ** 0.5 / 255)
    assert min(DEFAULT_WEIGHTS["tv"][lo], DEFAULT_WEIGHTS["tv"][hi]) <= mid
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="denoise: expected sigma > 0"):
        denoise(x, "tv", 0.0)
    with pytest.raises(ValueError, match="denoise: expected noisy images of shape"):
        denoise(x[0], "tv", 0.1)
    with pytest.raises(ValueError, match="no default weight for prior 'path'"):
        denoise(x, "missing.pt", 0.1)
    with pytest.raises(ValueError, match="no default weight for prior 'model'"):
        denoise(x, FoE(3, 2), 0.1)
    with pytest.raises(ValueError, match="expected images of at least 5x5"):
        denoise(torch.rand(1, 1, 4, 4), "foe", 0.1)
    with pytest.raises(ValueError, match="expected weight >= 0"):
        denoise(x, "tv", 0.1, weight=-1.0)
    assert denoise(x[:0], "tv", 0.1).shape == (0, 1, 16, 16)


def test_learned_prior_term_rows_and_gray_model_on_rgb():
    model = load("foe")
    term = LearnedPrior(model, torch.tensor([1.0, 2.0]), input_scale=0.5)
    x = torch.rand(2, 3, 12, 12)
    v = term(None, x)
    per_channel = model.energy(0.5 * x.reshape(6, 1, 12, 12)).view(2, 3).sum(1)
    torch.testing.assert_close(v, per_channel * torch.tensor([1.0, 2.0]))
    rep = term.repeat_rows(2)
    assert rep.weight.tolist() == [1.0, 1.0, 2.0, 2.0] and not term.needs_code
    with pytest.raises(TypeError, match="LearnedPrior: expected a learned prior"):
        LearnedPrior(3)


def test_invert_with_a_learned_prior():
    x = _photo(40).expand(-1, 3, -1, -1)
    kw = dict(representation="hog", steps=40, progress=False)
    base = pyinvert.invert(x, generator=torch.Generator().manual_seed(0), **kw)
    same = pyinvert.invert(x, generator=torch.Generator().manual_seed(0), prior="tv", **kw)
    assert torch.equal(base.images, same.images) and "prior" not in same.settings
    foe = pyinvert.invert(x, generator=torch.Generator().manual_seed(0), prior="foe", **kw)
    assert "LearnedPrior(foe" in foe.settings["prior"] and "tv=w[N]" in foe.settings["prior"]
    assert bool(torch.isfinite(foe.feature_error).all()) and float(foe.feature_error[0]) < 0.7
    assert not torch.equal(foe.images, base.images)
    own = pyinvert.invert(
        x,
        generator=torch.Generator().manual_seed(0),
        prior=LearnedPrior("ica", 1e-5, 1 / 255),
        **kw,
    )
    assert float(own.feature_error[0]) < 0.7
    with pytest.raises(TypeError, match="invert: expected prior to be 'tv', 'foe'"):
        pyinvert.invert(x, prior=3, **kw)


def test_feature_prior_on_mobilenet_features3():
    rep = make_representation("cnn:mobilenet_v2:features.3")
    g = torch.Generator().manual_seed(0)
    photos = F.interpolate(
        torch.stack([io.load_image(sample_path(n)) for n in ("coffee", "rocket")]), size=64
    )
    model = train_feature_prior(rep, photos, n_experts=6, steps=20, batch_size=4)
    assert model.channels == 24 and model.kind == "foe"
    term = FeaturePrior(model, rep, weight=0.01)
    x = rep.preprocess(photos)
    noise = rep.preprocess(torch.rand(photos.shape, generator=g))
    # the prior trained on natural photos' features finds noise's features less likely
    assert bool((term(None, x) < term(None, noise)).all())
    res = pyinvert.invert(photos[:1], representation=rep, steps=6, progress=False, prior=term)
    assert "FeaturePrior" in res.settings["prior"] and bool(torch.isfinite(res.feature_error).all())


def test_train_prior_and_denoise_commands(tmp_path, capsys):
    data = tmp_path / "photos"
    data.mkdir()
    for n in ("coffee", "rocket"):
        io.save_image(data / f"{n}.png", F.interpolate(io.load_image(sample_path(n))[None], 64)[0])
    out = tmp_path / "p.pt"
    args = ["train-prior", str(data), "--kind", "foe", "--out", str(out), "--steps", "6"]
    assert cli.main([*args, "--experts", "4", "--filter-size", "3", "--no-progress"]) == 0
    assert "trained foe (3x3, 4 filters) for 6 steps" in capsys.readouterr().out
    model = load(out)
    assert model.metadata["steps"] == 6 and model.metadata["seconds"] >= 0
    ck = ["--experts", "4", "--filter-size", "3", "--no-progress", "--checkpoint-every", "3"]
    assert cli.main([*args[:-1], "3", "--out", str(tmp_path / "q.pt"), *ck]) == 0
    assert (tmp_path / "q.pt.ckpt").is_file()
    assert cli.main(["train-prior", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "expected a folder of images or 'builtin'" in capsys.readouterr().err
    dout = tmp_path / "d"
    img = str(data / "coffee.png")
    code = cli.main(["denoise", img, "--prior", "foe", "--steps", "30", "--out", str(dout)])
    assert code == 0
    summary = json.loads((dout / "summary.json").read_text())
    rec = summary["images"]["coffee"]
    assert rec["prior"]["psnr"] > rec["noisy"]["psnr"] + 2 and rec["tv"]["ssim"] > 0
    assert (dout / "coffee-denoise.png").is_file()
    assert (
        cli.main(
            [
                "denoise",
                img,
                "--prior",
                str(out),
                "--steps",
                "5",
                "--weight",
                "0.1",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 0
    )
    assert cli.main(["denoise", img, "--prior", "nope", "--out", str(tmp_path / "f")]) == 2
    assert "--prior: expected foe, ica, tv or a prior file" in capsys.readouterr().err


def test_invert_command_prior_flag(tmp_path):
    img = tmp_path / "c.png"
    io.save_image(img, F.interpolate(io.load_image(sample_path("camera"))[None], 40)[0])
    code = cli.main(
        [str(img), "--prior", "foe", "--steps", "10", "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "LearnedPrior(foe" in summary["settings"]["prior"]
    with pytest.raises(SystemExit):
        cli.main([str(img), "--prior", "foe", "--invariance", "--restarts", "2"])


def test_training_on_a_list_of_tensors_is_seeded():
    imgs = [torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    a, b = FoE(3, 3), FoE(3, 3)
    train(a, imgs, steps=3, batch_size=4, seed=7, progress=False)
    train(b, imgs, steps=3, batch_size=4, seed=7, progress=False)
    assert torch.equal(a.filters, b.filters)
    c = FoE(3, 3)
    train(c, imgs, steps=3, batch_size=4, seed=8, progress=False)
    assert not torch.equal(a.filters, c.filters)


def _conv_path(monkeypatch, model):
    """Route ``model.energy`` through the conv2d formulation (the training path)."""
    monkeypatch.setattr(type(model), "energy", type(model).reference_energy)


@pytest.mark.parametrize("name", ["foe", "ica"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fused_inference_path_equals_the_conv_path(monkeypatch, name, dtype, tol):
    model = load(name).to(dtype)
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 3, 20, 17, generator=g, dtype=dtype) * 255 - 128).requires_grad_(True)
    term = LearnedPrior(model, 0.7, input_scale=1 / 255)
    clean = _photo(24).to(dtype)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=dtype)
    runs = []
    for path in ("fused", "conv"):
        if path == "conv":
            _conv_path(monkeypatch, model)
        value, _ = term.evaluate(None, x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        # a few L-BFGS steps: in float32 rounding differences grow with the iterations (8 steps:
        # 3e-5); 2 steps keep the float32 comparison at 1e-5.
        out = denoise(noisy, model, 0.1, weight=0.1, steps=8 if dtype == torch.float64 else 2)
        runs.append((value.detach(), grad, out))
    for fused, conv in zip(*runs):
        torch.testing.assert_close(fused, conv, rtol=tol, atol=tol * float(conv.abs().max()))


def test_shipped_foe_beats_tv_at_the_default_weights_on_a_training_photo():
    # the judged comparison in small (a training photo: camera downscaled to 64 x 64, sigma 25,
    # both at their tabulated weights): a guard on the shipped model, its padding and weights
    clean = _photo(64)
    sigma = 25 / 255
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    tv, foe = (
        float(metrics.psnr(denoise(noisy, name, sigma, steps=100).clamp(0, 1), clean))
        for name in ("tv", "foe")
    )
    assert foe > tv + 0.3, (foe, tv)


def test_denoise_pads_the_learned_energy_by_reflection():
    from pyinvert.priors.denoise import padded_energy

    model = load("foe")
    x = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    value = padded_energy(model, x)
    torch.testing.assert_close(value, model.energy(F.pad(x, (2, 2, 2, 2), mode="reflect")))
    # a corner pixel now lies in more cliques than the valid energy gives it, so its gradient
    # differs; a pixel whose 25 cliques are all inside (and which no reflection copies) keeps
    # its gradient; "tv" is left as it is
    (g_pad,) = torch.autograd.grad(value.sum(), x)
    (g_valid,) = torch.autograd.grad(model.energy(x).sum(), x)
    assert not torch.allclose(g_pad[..., 0, 0], g_valid[..., 0, 0])
    torch.testing.assert_close(g_pad[..., 4, 5], g_valid[..., 4, 5])
    y = x.detach()
    torch.testing.assert_close(padded_energy("tv", y), pyinvert.priors.tv_norm(y, 1.0, 1e-4))
