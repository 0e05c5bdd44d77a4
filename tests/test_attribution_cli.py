"""The attribute and patches subcommands, through their own argparse parser."""

import argparse
import json


from pyinvert.attribution.command import add_parser
from pyinvert.data import sample_path
from pyinvert.io import load_image


def _run(argv):
    parser = argparse.ArgumentParser(prog="pyinvert")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_attribute_command_writes_grids_and_json(tmp_path):
    out = tmp_path / "out"
    rc = _run(
        [
            "attribute",
            str(sample_path("chelsea")),
            str(sample_path("coffee")),
            "--methods",
            "saliency,guided_backprop,gradcam,occlusion",
            "--size",
            "64",
            "--window",
            "16",
            "--stride",
            "16",
            "--targets",
            "281,285",
            "--weights",
            "random",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [im["targets"] for im in summary["images"]] == [[281, 285], [281, 285]]
    assert summary["images"][0]["labels"][0].startswith("tabby")
    assert set(summary["images"][-1]["batch_timings_s"]) == {
        "saliency",
        "guided_backprop",
        "gradcam",
        "occlusion",
    }
    grid = load_image(out / "000_chelsea_grid.png")
    assert grid.shape[0] == 3 and grid.shape[2] >= 5 * 96  # original + 4 methods
    assert grid.shape[1] > 2 * 96  # two target rows
    assert (out / "001_coffee_occlusion.npy").is_file()


def test_attribute_command_errors(tmp_path, capsys):
    assert _run(["attribute", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "no such image or folder" in capsys.readouterr().err
    assert (
        _run(["attribute", str(sample_path("chelsea")), "--methods", "lrp", "--out", str(tmp_path)])
        == 2
    )
    assert "unknown methods ['lrp']" in capsys.readouterr().err
    assert (
        _run(["attribute", str(sample_path("chelsea")), "--targets", "cat", "--out", str(tmp_path)])
        == 2
    )
    assert "expected --targets auto or comma-separated ints" in capsys.readouterr().err


def test_patches_command(tmp_path, capsys):
    from pyinvert.io import save_image

    folder = tmp_path / "imgs"
    for name in ("chelsea", "coffee", "astronaut"):
        save_image(folder / f"{name}.png", load_image(sample_path(name)))
    out = tmp_path / "p.png"
    assert (
        _run(
            [
                "patches",
                str(folder),
                "--model",
                "mobilenet_v2",
                "--layer",
                "features.4",
                "--channels",
                "0:4",
                "--k",
                "2",
                "--size",
                "64",
                "--weights",
                "random",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    hits = json.loads(out.with_suffix(".json").read_text())
    assert hits["channels"] == [0, 1, 2, 3] and len(hits["hits"][0]) == 2
    assert load_image(out).shape[1] > 4 * 48
    assert _run(["patches", str(folder), "--layer", "nope", "--out", str(out)]) == 2
    assert "has no layer 'nope'" in capsys.readouterr().err
