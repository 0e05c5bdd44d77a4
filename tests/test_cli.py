"""The command line end to end on a temporary directory: outputs, bad inputs, Table 1."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pyinvert import cli
from pyinvert.data import sample_path

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
    code = cli.main(["invert", a, b, "--steps", "8", "--out", str(out), "--no-progress",
                     "--seed", "1"])
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
    code = cli.main(["invert", good, missing, str(junk), small, rgba, deep, "--steps", "4",
                     "--out", str(out), "--no-progress"])
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
    assert cli.main(["invert", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 2
    assert "no image could be processed" in capsys.readouterr().err


def test_restarts_and_argument_errors(tmp_path, capsys):
    a = write_photo(tmp_path / "a.png")
    out = tmp_path / "out"
    assert cli.main(["invert", a, "--steps", "4", "--restarts", "2", "--out", str(out),
                     "--no-progress"]) == 0
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
    assert cli.main(["reproduce", "table1", *paths, "--reps", "hog,hogb", "--steps", "8",
                     "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "reported (paper)" in text and "28.10" in text and "66.20" in text
    payload = json.loads((out / "table1.json").read_text())
    assert set(payload["ours"]) == {"hog", "hogb"}
    assert len(payload["ours"]["hog"]["errors"]) == 3
    assert payload["reported"]["hog"] == {"mean": 28.1, "std": 7.9}
    assert (out / "table1-montage.png").is_file()
    assert cli.format_table1({}).count("-") > 0


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "pyinvert", "invert", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--rep REP" in proc.stdout and "cnn:MODEL:LAYER" in proc.stdout and "--recipe" in proc.stdout
