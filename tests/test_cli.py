"""The command line end to end on a temporary directory: outputs, bad inputs, Table 1."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pyinvert import cli
from pyinvert.data import sample_path
from pyinvert.experiments import format_table1

SIZE = 40


def write_photo(path, name="chelsea", size=SIZE, mode="rgb"):
    image = cv2.imread(str(sample_path(name)), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if mode == "gray":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif mode == "rgba":
        image = np.concatenate([image, np.full((size, size, 1), 200, np.uint8)], -1)
    elif mode == "16bit":
        image = image.astype(np.uint16) * 257
    assert cv2.imwrite(str(path), image)
    return str(path)


def test_invert_end_to_end(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png")
    b = write_photo(tmp_path / "coffee.png", "coffee", mode="gray")
    out = tmp_path / "out"
    code = cli.main(
        ["invert", a, b, "--steps", "8", "--out", str(out), "--no-progress", "--seed", "1"]
    )
    assert code == 0
    for name in ("cat", "coffee"):
        rec = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert rec.shape == (SIZE, SIZE)
        fig = cv2.imread(str(out / f"{name}-figure.png"), cv2.IMREAD_UNCHANGED)
        assert fig.shape[0] > SIZE and fig.shape[1] > 3 * SIZE and fig.shape[2] == 3
        record = json.loads((out / f"{name}.json").read_text())
        r = record["results"][0]
        assert r["feature_error"] < 1.0 and not r["failed"]
        assert {"psnr", "ssim", "reconstruction", "figure"} <= set(r)
        assert record["representation"] == "hog" and record["recipe"] == "cvpr2015"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["images"]) == {"cat", "coffee"} and summary["errors"] == {}
    assert "cat: feature error" in capsys.readouterr().out


def test_bad_inputs_are_reported_and_others_kept(tmp_path, capsys):
    good = write_photo(tmp_path / "good.png")
    rgba = write_photo(tmp_path / "rgba.png", mode="rgba")
    deep = write_photo(tmp_path / "deep.png", mode="16bit")
    small = write_photo(tmp_path / "small.png", size=3)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    missing = str(tmp_path / "missing.png")
    out = tmp_path / "out"
    code = cli.main(
        [
            "invert",
            good,
            missing,
            str(junk),
            small,
            rgba,
            deep,
            "--steps",
            "4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "missing.png" in err
    assert "cannot read" in err and "junk.png" in err
    assert "small.png is 3x3, smaller than the 4x4 pixels" in err
    for name in ("good", "rgba", "deep"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.json").is_file()
    assert not (out / "small.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["errors"]) == 3


def test_nothing_readable_exits_nonzero(tmp_path, capsys):
    assert (
        cli.main(
            ["invert", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"), "--no-progress"]
        )
        == 2
    )
    assert "no image could be processed" in capsys.readouterr().err


def test_restarts_and_argument_errors(tmp_path, capsys):
    a = write_photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert (
        cli.main(
            ["invert", a, "--steps", "4", "--restarts", "2", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    assert (out / "a-r0.png").is_file() and (out / "a-r1.png").is_file()
    with pytest.raises(SystemExit) as e:
        cli.main(["invert", a, "--steps", "0"])
    assert e.value.code == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["invert", a, "--rep", "sift"])
    assert "invalid choice: 'sift'" in capsys.readouterr().err


def test_reproduce_table1(tmp_path, capsys):
    paths = [write_photo(tmp_path / f"{n}.png", n) for n in ("chelsea", "coffee", "astronaut")]
    out = tmp_path / "t1"
    assert (
        cli.main(
            [
                "reproduce",
                "table1",
                *paths,
                "--reps",
                "hog,hogb",
                "--steps",
                "8",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "reported (paper)" in text and "28.10" in text and "66.20" in text
    payload = json.loads((out / "table1.json").read_text())
    assert set(payload["ours"]) == {"hog", "hogb"}
    assert len(payload["ours"]["hog"]["errors"]) == 3
    assert payload["reported"]["hog"] == {"mean": 28.1, "std": 7.9}
    assert (out / "table1-montage.png").is_file()
    assert format_table1({}).count("-") > 0


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "pyinvert", "invert", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert (
        "--rep REP" in proc.stdout
        and "cnn:MODEL:LAYER" in proc.stdout
        and "--recipe" in proc.stdout
    )


# ---- CNN subcommands on tiny settings (random weights, 64 px, 3 steps) ----------------------

TINY = ["--weights", "random", "--size", "64", "--steps", "3", "--no-progress"]


def _png(path):
    a = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert a is not None, path
    return a


def test_cnn_invert_several_layers_writes_the_grid(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", size=80)
    b = write_photo(tmp_path / "coffee.png", name="coffee", size=80)
    out = tmp_path / "out"
    rc = cli.main(
        [
            "invert",
            a,
            b,
            "--rep",
            "cnn:mobilenet_v2:features.3,classifier.1",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    grid = _png(out / "layers.png")
    assert grid.shape[0] > 2 * 128 and grid.shape[1] > 3 * 128  # 2 rows x 3 tiles >= 128 px
    for layer in ("features.3", "classifier.1"):
        for n in ("cat", "coffee"):
            assert _png(out / layer / f"{n}.png").shape[:2] == (64, 64)
        assert (out / layer / "result.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["results"]["cat"]["classifier.1"]
    assert {"feature_error", "psnr", "ssim", "target_top1", "reconstruction_top1"} <= set(entry)
    assert "features.3" in summary["results"]["coffee"]
    assert "cat [features.3]: feature error" in capsys.readouterr().out


def test_cnn_invert_joint_window_channels(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", size=64)
    out = tmp_path / "w"
    rc = cli.main(
        [
            "invert",
            a,
            "--rep",
            "cnn:mobilenet_v2:features.6",
            "--window",
            "2",
            "--channels",
            "0:8",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert _png(out / "features.6" / "cat-window.png").shape[0] >= 128
    out = tmp_path / "j"
    rc = cli.main(
        [
            "invert",
            a,
            "--rep",
            "cnn:mobilenet_v2:features.3,features.6",
            "--joint",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (out / "features.3+features.6" / "cat.png").exists() and (out / "layers.png").exists()


def test_cnn_invert_restarts_invariance(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", size=64)
    out = tmp_path / "inv"
    rc = cli.main(
        [
            "invert",
            a,
            "--rep",
            "cnn:mobilenet_v2:features.3",
            "--restarts",
            "2",
            "--invariance",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    d = out / "features.3"
    for f in (
        "cat-r0.png",
        "cat-r1.png",
        "cat-spread.png",
        "cat-invariance.png",
        "invariance.json",
        "result.json",
    ):
        assert (d / f).exists(), f
    rc = cli.main(
        [
            "invert",
            a,
            "--rep",
            "cnn:mobilenet_v2:features.3",
            "--invariance",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 2
    assert "--invariance needs --restarts R >= 2" in capsys.readouterr().err


def test_cnn_errors_exit_status_and_message(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", size=64)
    rc = cli.main(["invert", a, "--rep", "cnn:mobilenet_v2:nope", "--out", str(tmp_path), *TINY])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown layer 'nope'; valid layers are: features.0" in err and "classifier.1" in err
    rc = cli.main(["caricature", a, "--layer", "features.99", "--out", str(tmp_path), *TINY])
    assert rc == 2 and "unknown layer 'features.99'" in capsys.readouterr().err
    rc = cli.main(["actmax", "--out", str(tmp_path), *TINY])
    assert rc == 2
    assert "actmax: expected --class K or --layer L --channel K" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["invert", a, "--rep", "hog", "--size", "64"])
    assert "--size needs a cnn:MODEL:LAYER representation" in capsys.readouterr().err


def test_actmax_classes_and_channels(tmp_path, capsys):
    out = tmp_path / "am"
    rc = cli.main(["actmax", "--class", "281,945", "--out", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "281 tabby" in stdout and "945 bell pepper" in stdout and "p=" in stdout
    assert _png(out / "unit0281.png").shape[:2] == (64, 64)
    grid = _png(out / "actmax.png")
    assert grid.shape[0] >= 128
    rec = json.loads((out / "result.json").read_text())
    assert len(rec["probability"]) == 2 and rec["labels"][0] == "281 tabby"
    out = tmp_path / "ch"
    rc = cli.main(
        [
            "actmax",
            "--layer",
            "features.6",
            "--channel",
            "1,2",
            "--neuron",
            "center",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (out / "unit0001.png").exists() and (out / "actmax.png").exists()
    assert json.loads((out / "result.json").read_text())["settings"]["neuron"] == [3, 3]


def test_caricature_and_dream(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", size=80)
    out = tmp_path / "car"
    rc = cli.main(["caricature", a, "--layer", "features.6", "--out", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    assert _png(out / "cat.png").shape[:2] == (64, 64)
    assert _png(out / "cat-caricature.png").shape[0] >= 128
    assert (out / "result.json").exists()
    out = tmp_path / "dream"
    rc = cli.main(["dream", a, "--layer", "features.6", "--octaves", "2", "--out", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    assert _png(out / "cat.png").shape[:2] == (64, 64)  # back to the input size
    assert (out / "cat-dream.png").exists()
    rec = json.loads((out / "result.json").read_text())
    assert rec["settings"]["sizes"] == [[46, 46], [64, 64]]


def test_models_and_batch_help(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2" in out and "alexnet" in out
    assert cli.main(["models", "mobilenet_v2"]) == 0
    assert "features.6" in capsys.readouterr().out
    assert cli.main(["models", "nonet"]) == 2
    assert "nonet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["batch", "--help"])
    assert exit_info.value.code == 0
    assert "usage: pyinvert batch" in capsys.readouterr().out
