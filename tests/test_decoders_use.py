"""Decoders in use: ``invert(method="decoder")``, ``init="decoder"`` (a warm start that
converges in fewer iterations), the shipped decoder, the command line, the docstrings."""

import dataclasses
import doctest
import importlib
import json

import pytest
import torch

import pyinvert
from pyinvert import cli, io
from pyinvert.data import sample_path
from pyinvert.decoders import Decoder, load, train
from pyinvert.decoders.inversion import warm_recipe, warm_stages
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import as_representation


@pytest.fixture(scope="module")
def crops():
    """Two 64 x 64 crops of bundled samples, RGB."""
    a = io.load_image(sample_path("chelsea"))[:3, 40:104, 60:124]
    b = io.load_image(sample_path("coffee"))[:3, 80:144, 20:84]
    return torch.stack([a, b])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("dec") / "tiny.pt"
    photos = [io.load_image(sample_path(n))[:3] for n in ("astronaut", "rocket")]
    train("hog", photos, steps=3, batch_size=2, crop=32, width=4, progress=False, out=path)
    return path


def test_shipped_hog_decoder_loads():
    dec = load("hog")
    assert isinstance(dec, Decoder) and not dec.training
    meta = dec.metadata
    assert meta["representation"]["name"] == "hog" and meta["data"] == "builtin:training_photos"
    assert meta["steps_done"] == meta["recipe"]["steps"] and meta["data_hash"]
    assert meta["command"].startswith("pyinvert train-decoder --rep hog")
    large = load("hog-large")
    assert large.config["channels"] == [128, 64, 32, 8] and dec.config["channels"] == [
        64,
        32,
        16,
        4,
    ]
    code = torch.rand(1, 31, 5, 6)
    assert large(code, (41, 47)).shape == (1, 1, 41, 47)


def test_shipped_dsift_decoder_fits_inverts_dsift(crops):
    # the representation invert makes of "dsift" (the recipe's bin 5, step 4)
    res = pyinvert.invert(crops, representation="dsift", method="decoder", progress=False)
    assert res.images.shape == (2, 1, 64, 64) and res.settings["decoder"].endswith("dsift.pt")
    assert (res.feature_error < 0.5).all(), res.feature_error


def test_method_decoder_result_fields(crops):
    rep = as_representation("hog")
    res = pyinvert.invert(crops, method="decoder", decoder="hog", progress=False)
    assert res.images.shape == (2, 1, 64, 64)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert res.loss_history.shape == (2, 0) and res.error_history.shape == (2, 0)
    assert not res.failed.any() and (res.stopped_at == -1).all()
    with torch.no_grad():
        tgt = rep(rep.preprocess(crops))
        code = rep(rep.preprocess(res.images))
    assert torch.equal(res.targets, tgt) and torch.allclose(res.codes, code)
    fe = (code - tgt).flatten(1).square().sum(1) / tgt.flatten(1).square().sum(1)
    torch.testing.assert_close(res.feature_error, fe.double(), rtol=1e-5, atol=1e-7)
    assert res.settings["method"] == "decoder" and res.settings["decoder"].endswith(
        "decoder-hog.pt"
    )
    assert res.originals.shape == (2, 1, 64, 64)
    # from target codes, odd size
    odd = pyinvert.invert(
        targets=rep(rep.preprocess(crops[:, :, :57, :61])),
        image_size=(57, 61),
        method="decoder",
        progress=False,
    )
    assert odd.images.shape == (2, 1, 57, 61)


def test_method_decoder_errors(crops, tiny):
    with pytest.raises(ValueError, match="invert: expected method in"):
        pyinvert.invert(crops, method="net", progress=False)
    with pytest.raises(ValueError, match="invert: the decoder was trained on representation"):
        pyinvert.invert(
            crops, representation="dsift", method="decoder", decoder=tiny, progress=False
        )
    with pytest.raises(ValueError, match="method='decoder' gives one reconstruction"):
        pyinvert.invert(crops, method="decoder", restarts=2, progress=False)
    with pytest.raises(ValueError, match="invert: decoders.load: no decoder file 'hogb'"):
        pyinvert.invert(crops, representation="hogb", method="decoder", progress=False)


def _iterations_to(history, level):
    """The first iteration (1-based) whose error is <= level, per row (T + 1: never)."""
    hit = history <= level[:, None]
    T = history.shape[1]
    first = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full_like(level, T + 1).long())
    return first


def test_warm_start_converges_in_fewer_iterations(crops):
    kw = dict(
        representation="hog", steps=60, progress=False, generator=torch.Generator().manual_seed(0)
    )
    noise = pyinvert.invert(crops, **kw)
    warm = pyinvert.invert(crops, init="decoder", decoder="hog", **kw)
    assert warm.settings["init"] == "decoder"
    need = _iterations_to(warm.error_history, noise.error_history[:, -1])
    assert (need <= 30).all(), need  # at most half of the noise start's 60 iterations
    assert (warm.feature_error <= noise.feature_error).all()
    # its first iterate is the decoder's image: already far below the noise start's
    first = pyinvert.invert(crops, method="decoder", progress=False).feature_error
    assert (first < noise.error_history[:, 0]).all()


def test_warm_start_full_recipe_within_half(crops):
    # the judged budget: the recipe's 800 iterations; noise starts keep the recipe's schedule
    kw = dict(progress=False, generator=torch.Generator().manual_seed(0))
    noise = pyinvert.invert(crops, **kw)
    warm = pyinvert.invert(crops, init="decoder", decoder="hog", **kw)
    assert noise.settings["recipe"]["stages"] == [
        {"lr": 0.004 * f, "iterations": 200, "jitter": False} for f in (1.0, 0.1, 0.01, 0.001)
    ]
    assert warm.settings["recipe"]["stages"] == [
        dataclasses.asdict(s) for s in warm_stages(get_recipe("cvpr2015"))
    ]
    need = _iterations_to(warm.error_history, noise.error_history[:, -1])
    assert (need <= 400).all(), need


def test_warm_stages_rule():
    rec = get_recipe("cvpr2015")
    st = warm_stages(rec)
    assert sum(s.iterations for s in st) == 800
    assert st[0].lr == rec.stages[0].lr and st[-1].lr == rec.stages[-1].lr
    assert all(s.iterations == 6 for s in st[:-1])
    assert all(a.lr > b.lr for a, b in zip(st, st[1:]))  # every stage resets the momentum
    assert sum(s.iterations for s in warm_stages(rec.scaled(100))) == 100
    assert warm_stages(rec.scaled(11)) == rec.scaled(11).stages  # too short for a decay
    ijcv = get_recipe("ijcv2016")
    assert warm_recipe(ijcv) is ijcv  # AdaGrad: the decoder's image and the recipe as they are


def test_cli_train_decoder_and_invert_with_it(tmp_path, capsys):
    for n in ("astronaut", "rocket"):
        io.save_image(tmp_path / "data" / f"{n}.png", io.load_image(sample_path(n)))
    out = tmp_path / "d.pt"
    code = cli.main(
        [
            "train-decoder",
            "--rep",
            "hog",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--size",
            "32",
            "--width",
            "4",
            "--quiet",
        ]
    )
    assert code == 0 and "trained 2 steps" in capsys.readouterr().out
    assert load(out).metadata["command"].startswith("pyinvert train-decoder --rep hog --data ")
    img = tmp_path / "cat.png"
    io.save_image(img, io.load_image(sample_path("chelsea"))[:, :48, :56])
    code = cli.main(
        ["invert", str(img), "--decoder", str(out), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert code == 0
    rec = json.loads((tmp_path / "o" / "cat.json").read_text())
    assert (tmp_path / "o" / "cat.png").is_file() and rec["results"][0]["feature_error"] > 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["settings"]["method"] == "decoder"
    code = cli.main(
        [
            "invert",
            str(img),
            "--init",
            "decoder",
            "--decoder",
            str(out),
            "--steps",
            "3",
            "--out",
            str(tmp_path / "w"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert (
        json.loads((tmp_path / "w" / "summary.json").read_text())["settings"]["init"] == "decoder"
    )


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = cli.main(
        [
            "train-decoder",
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "d.pt"),
            "--steps",
            "1",
            "--quiet",
        ]
    )
    assert code == 2 and "no image files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train-decoder", "--steps", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["invert", "--rep", "cnn:mobilenet_v2:features.3", "--decoder", "hog"])
    assert e.value.code == 2
    assert "--decoder and --init need a hog" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module",
    [
        "pyinvert.decoders.architecture",
        "pyinvert.decoders.store",
        "pyinvert.decoders.training",
        "pyinvert.decoders.modular",
        "pyinvert.decoders.inversion",
    ],
)
def test_doctests(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_table1_decoder_rows_are_measured_like_the_others(tmp_path):
    import importlib

    t1 = importlib.import_module("pyinvert.experiments.table1")
    assert {"hog-decoder", "dsift-decoder"} <= set(t1.default_rows())
    # the shipped DSIFT decoder has the cvpr2015 bins: left out of an ijcv2016 table
    assert "dsift-decoder" not in t1.default_rows("ijcv2016")
    res = t1.table1(reps=("hog-decoder", "dsift-decoder"), out=tmp_path, progress=False)
    for row in ("hog-decoder", "dsift-decoder"):
        assert len(res[row]["errors"]) == 5 and 0 < res[row]["mean"] < 66.2
    assert (tmp_path / "table1-montage.png").is_file()
