"""Issue 11 (hardening) on the command line, continued: the pixel limit (10), smaller problems
(11), bounded counts (15) and file modes (16). Helpers: tests/test_cli_hardening.py."""

import json
import os

import cv2
import numpy as np
import pytest

from pyinvert import cli
from tests.test_cli import write_photo
from tests.test_cli_hardening import (
    FAST,
    TINY,
    error_lines,
    failing_writes,
    png_header,
    run,
    summary,
)


# ---- 10. the pixel limit --------------------------------------------------------------------


@pytest.mark.parametrize("side", [60000, 32000, 8000])
def test_huge_image_next_to_a_good_one(tmp_path, capsys, side):
    (tmp_path / "huge.png").write_bytes(png_header(side, side))
    good = write_photo(tmp_path / "good.png")
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "invert", tmp_path / "huge.png", good, "--out", out, *FAST)
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: load_image: {tmp_path / 'huge.png'} is a "
        f"{side}x{side} PNG image ({side * side} pixels), over the "
        f"limit of 50000000 pixels (raise it with --max-pixels or "
        f"$PYINVERT_MAX_PIXELS)"
    ]
    assert set(summary(out)["images"]) == {"good"} and "good: feature error" in stdout


def test_pixel_limit_option_and_variable(tmp_path, capsys, monkeypatch):
    good, small = write_photo(tmp_path / "good.png"), write_photo(tmp_path / "s.png", size=20)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "invert", good, small, "--max-pixels", "1000", "--out", out, *FAST)
    assert rc == 1 and "good.png is a 40x40 PNG image (1600 pixels), over the limit of 1000" in err
    assert set(summary(out)["images"]) == {"s"}
    monkeypatch.setenv("PYINVERT_MAX_PIXELS", "1000")
    rc, _, err = run(capsys, "caricature", good, "--layer", "features.3", "--out", out, *TINY)
    assert rc == 2 and "over the limit of 1000 pixels" in err
    monkeypatch.setenv("PYINVERT_MAX_PIXELS", "lots")
    rc, stdout, err = run(capsys, "invert", good, "--out", out, *FAST)
    assert rc == 2 and stdout == ""
    assert error_lines(err) == [
        "pyinvert: error: expected $PYINVERT_MAX_PIXELS to be a whole "
        "number of pixels in [1, 1073741824], got 'lots'"
    ]
    with pytest.raises(SystemExit) as e:
        cli.main(["invert", good, "--max-pixels", "0"])
    assert e.value.code == 2 and "--max-pixels must be >= 1, got 0" in capsys.readouterr().err


# ---- 11. smaller problems -------------------------------------------------------------------


def test_folder_fifo_and_corrupt_images(tmp_path, capfd):
    """A folder said "no such file"; OpenCV's and libpng's own lines leaked to stderr."""
    (tmp_path / "dir.png").mkdir()
    os.mkfifo(tmp_path / "fifo.png")
    ok, buf = cv2.imencode(
        ".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    )
    (tmp_path / "cut.png").write_bytes(buf.tobytes()[:300])
    (tmp_path / "crc.png").write_bytes(buf.tobytes()[:40] + b"x" + buf.tobytes()[41:])
    good = write_photo(tmp_path / "good.png")
    rc = cli.main(
        [
            "invert",
            str(tmp_path / "dir.png"),
            str(tmp_path / "fifo.png"),
            str(tmp_path / "cut.png"),
            str(tmp_path / "crc.png"),
            good,
            "--out",
            str(tmp_path / "out"),
            *FAST,
        ]
    )
    err = capfd.readouterr().err
    assert rc == 1
    lines = error_lines(err)
    assert len(lines) == 4
    assert f"{tmp_path / 'dir.png'} is a folder, expected an image file" in lines[0]
    assert f"{tmp_path / 'fifo.png'} is not a regular file" in lines[1]
    assert "cut.png as an image (unknown or corrupt format)" in lines[2]
    assert "crc.png as an image" in lines[3]


def test_long_channel_lists_give_short_errors(tmp_path, capsys):
    """`--channels 0:5000` printed a 25 KB line."""
    cat = write_photo(tmp_path / "cat.png", size=64)
    with pytest.raises(SystemExit):
        cli.main(["invert", cat, "--rep", "cnn:mobilenet_v2:features.3", "--channels", "0:5000"])
    err = capsys.readouterr().err
    assert "expected at most 1024 indices >= 0, got '0:5000'" in err and len(err) < 1500
    rc, _, err = run(
        capsys,
        "invert",
        cat,
        "--rep",
        "cnn:mobilenet_v2:features.3",
        "--channels",
        "0:1000",
        "--out",
        tmp_path / "o",
        *TINY,
    )
    assert rc == 2
    (line,) = error_lines(err)
    assert "expected channels in [0, 24)" in line and "more characters)" in line


def test_leading_dash_and_odd_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_photo(tmp_path / "-x.png")
    write_photo(tmp_path / "new\nline.png")
    rc, stdout, err = run(capsys, "invert", "--out", "o", *FAST, "--", "-x.png", "new\nline.png")
    assert rc == 0, err
    assert "-x: feature error" in stdout and "new\\nline: feature error" in stdout
    assert (tmp_path / "o" / "-x.png").is_file() and (tmp_path / "o" / "new\nline.png").is_file()
    rc, _, err = run(capsys, "invert", "missing\nfile.png", "--out", "o", *FAST)
    assert rc == 2 and error_lines(err)[0].endswith("no such file: missing\\nfile.png")


# ---- 15. bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["invert", "--restarts", "65"], "--restarts must be <= 64, got 65"),
        (["invert", "--restarts", "0"], "--restarts must be >= 1, got 0"),
        (["invert", "--steps", "100001"], "--steps must be <= 100000, got 100001"),
        (["invert", "--batch-size", "5000"], "--batch-size must be <= 4096, got 5000"),
        (["invert", "--seed", "-1"], "--seed must be >= 0, got -1"),
        (
            ["invert", "--rep", "cnn:mobilenet_v2:features.3", "--size", "5000"],
            "--size must be <= 4096, got 5000",
        ),
        (
            ["invert", "--rep", "cnn:mobilenet_v2:features.3", "--window", "0"],
            "--window must be >= 1, got 0",
        ),
        (
            [
                "invert",
                "--rep",
                "cnn:mobilenet_v2:features.3",
                "--data-weight",
                ",".join(str(i) for i in range(1, 34)),
            ],
            "expected 1 to 32 numbers",
        ),
        (
            ["invert", "--rep", "cnn:mobilenet_v2:features.3", "--data-weight", "1,nan"],
            "expected a finite number > 0, got nan",
        ),
        (
            ["dream", "x.png", "--layer", "features.3", "--octaves", "13"],
            "--octaves must be <= 12, got 13",
        ),
        (
            ["dream", "x.png", "--layer", "features.3", "--octave-scale", "0.5"],
            "--octave-scale must be in (1, 4], got 0.5",
        ),
        (["actmax", "--class", "0:2000"], "expected at most 1024 indices"),
        (["actmax", "--class", "5,5"], "expected distinct indices"),
        (["actmax", "--class", "1", "--size", "0"], "--size must be >= 1, got 0"),
        (["actmax", "--class", "1", "--columns", "65"], "--columns must be <= 64, got 65"),
        (["invert", "--steps", "9" * 5000], "expected an integer, got '99999"),
    ],
)
def test_counts_are_bounded(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err) < 3000


# ---- 16. file modes -------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_respect_the_umask(tmp_path, capsys, mask):
    cat = write_photo(tmp_path / "cat.png")
    old = os.umask(mask)
    try:
        assert run(capsys, "invert", cat, "--out", tmp_path / "out", *FAST)[0] == 0
    finally:
        os.umask(old)
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["cat-figure.png", "cat.json", "cat.png", "summary.json"]
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


# ---- reproduce table1: the same per-input errors, bounds and write failures -----------------


def test_reproduce_table1_bad_inputs_and_full_disk(tmp_path, capsys, monkeypatch):
    paths = [write_photo(tmp_path / f"{n}.png", n) for n in ("chelsea", "coffee")]
    (tmp_path / "junk.png").write_bytes(b"junk")
    (tmp_path / "huge.png").write_bytes(png_header(60000, 60000))
    out = tmp_path / "t1"
    rc, stdout, err = run(
        capsys,
        "reproduce",
        "table1",
        *paths,
        tmp_path / "junk.png",
        tmp_path / "huge.png",
        "--reps",
        "hog",
        "--out",
        out,
        *FAST,
    )
    assert rc == 1 and "ours HOG" in stdout
    lines = error_lines(err)
    assert len(lines) == 2 and "junk.png as an image" in lines[0] and "over the limit" in lines[1]
    assert json.loads((out / "table1.json").read_text())["images"] == paths
    rc, _, err = run(capsys, "reproduce", "table1", paths[0], "--reps", "hog", "--out", out, *FAST)
    assert rc == 2 and error_lines(err) == [
        "pyinvert: error: table1: expected at least 2 "
        "readable images (the error is normalized by their "
        "mean pairwise distance), got 1"
    ]
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "table1", "--reps", "hog,sift"])
    assert (
        "--reps: expected some of hoggle, hog, hogb, dsift, hog-decoder, dsift-decoder, got 'hog,sift'"
        in capsys.readouterr().err
    )
    failing_writes(monkeypatch, {"table1-montage.png"})
    rc, _, err = run(capsys, "reproduce", "table1", *paths, "--reps", "hog", "--out", out, *FAST)
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: cannot write the Table 1 results into {out}: No space left on device"
    ]
