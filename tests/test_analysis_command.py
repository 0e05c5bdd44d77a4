"""The equivariance / equivalence subcommands (pyinvert.analysis.command), on a parser built
here (the lead registers them in pyinvert's CLI)."""

import argparse
import json

import numpy as np
import pytest
import torch

from pyinvert import io
from pyinvert.analysis.command import add_parser


def _parser():
    p = argparse.ArgumentParser(prog="pyinvert")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        # smooth random images: blurred noise, 8-bit
        x = torch.rand(1, 3, 12, 12, generator=g)
        x = torch.nn.functional.interpolate(x, size=(72, 72), mode="bilinear")
        io.save_image(d / f"p{i}.png", x[0])
    return d


def test_equivariance_command_writes_json_table_and_figures(photos, tmp_path, capsys):
    out = tmp_path / "out"
    args = _parser().parse_args(
        [
            "equivariance",
            "--rep",
            "hog",
            "--transforms",
            "hflip,rot45",
            str(photos),
            "--out",
            str(out),
            "--crops",
            "10",
            "--size",
            "32",
            "--invert-steps",
            "5",
        ]
    )
    assert args.func(args) == 0
    data = json.loads((out / "equivariance.json").read_text())
    rows = {r["transform"]: r for r in data["rows"]}
    assert rows["hflip"]["error_map"] < 1e-2 < rows["rot45"]["error_map"]
    assert data["settings"]["split"] == "photos" and data["settings"]["test"] == ["p2"]
    assert "hflip" in capsys.readouterr().out
    assert (out / "equivariance.txt").read_text().startswith("layer")
    for name in ("heat_error.png", "invert_hog_hflip.png", "invert_hog_rot45.png"):
        assert io.load_image(out / name).shape[0] == 3
    maps = torch.load(out / "equivariance_maps.pt")
    assert maps["hog/hflip"]["weight"].shape == (31, 31, 1, 1)


def test_equivalence_command(photos, tmp_path, capsys):
    out = tmp_path / "eq"
    args = _parser().parse_args(
        [
            "equivalence",
            "--a",
            "hog",
            "--b",
            "hog",
            str(photos),
            "--out",
            str(out),
            "--crops",
            "6",
            "--size",
            "32",
            "--invert-steps",
            "3",
            "--ridge",
            "1e-6",
            "--in-memory",
        ]
    )
    assert args.func(args) == 0
    data = json.loads((out / "equivalence.json").read_text())
    assert data["rows"][0]["stitch"] == "trained" and data["rows"][0]["error_map"] < 1e-6
    assert len(data["rows"]) == 1  # HOG into HOG: no network, no untrained baseline
    assert np.asarray(io.to_uint8(io.load_image(out / "stitch_invert.png"))).ndim == 3


def test_usage_errors(photos, tmp_path, capsys):
    p = _parser()
    args = p.parse_args(
        [
            "equivariance",
            "--rep",
            "hog",
            "--transforms",
            "shear",
            str(photos),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert args.func(args) == 2
    assert (
        "pyinvert equivariance: error: parse_transform: unknown transform 'shear'"
        in capsys.readouterr().err
    )
    args = p.parse_args(
        ["equivalence", "--a", "hog", "--b", "nope", str(photos), "--out", str(tmp_path / "y")]
    )
    assert args.func(args) == 2
    assert (
        "pyinvert equivalence: error: invert: expected representation in" in capsys.readouterr().err
    )
    args = p.parse_args(
        [
            "equivariance",
            "--rep",
            "hog",
            "--transforms",
            "hflip",
            str(photos),
            "--out",
            str(tmp_path / "w"),
            "--crops",
            "4",
            "--size",
            "32",
            "--invert-layer",
            "conv1",
            "--invert-steps",
            "2",
        ]
    )
    assert args.func(args) == 2
    assert "--invert-layer: expected layers of --rep (hog), got conv1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["equivariance", "--rep", "hog", "--ridge", "-1", str(photos), "--out", "z"])
