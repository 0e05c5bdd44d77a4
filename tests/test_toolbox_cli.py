"""The toolbox's subcommands end to end on a temporary directory."""

import json

import cv2
import pytest

from pyinvert import cli
from pyinvert.data import sample_path
from tests.test_cli import write_photo

NAMES = ["camera", "chelsea", "coffee", "rocket", "astronaut"]


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for n in NAMES:
        write_photo(folder / f"{n}.png", n, size=80)
    return folder


def test_filters(tmp_path):
    assert cli.main(["filters", "--out", str(tmp_path / "f")]) == 0
    rec = json.loads((tmp_path / "f" / "filters.json").read_text())
    assert rec["weight_shape"] == [32, 3, 3, 3] and rec["rgb"]
    assert cv2.imread(str(tmp_path / "f" / "filters.png")) is not None
    assert cli.main(["filters", "--model", "dsift", "--out", str(tmp_path / "d")]) == 0
    assert cli.main(["filters", "--layer", "nope", "--out", str(tmp_path / "x")]) == 2


def test_neighbors_finds_the_query_itself_first(tmp_path, gallery, capsys):
    out = tmp_path / "n"
    code = cli.main(
        [
            "neighbors",
            str(gallery / "coffee.png"),
            str(gallery / "rocket.png"),
            "--gallery",
            str(gallery),
            "--k",
            "3",
            "--size",
            "64",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    rec = json.loads((out / "neighbors.json").read_text())
    assert [row[0]["name"] for row in rec["neighbors"]] == ["coffee.png", "rocket.png"]
    assert rec["neighbors"][0][0]["distance"] < 1e-3 and len(rec["neighbors"][0]) == 3
    fig = cv2.imread(str(out / "neighbors.png"))
    assert fig.shape[0] > 2 * 64  # two rows
    assert (
        cli.main(
            [
                "neighbors",
                str(gallery / "coffee.png"),
                "--gallery",
                str(tmp_path / "none"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "is not a folder" in capsys.readouterr().err


def test_embed(tmp_path, gallery):
    out = tmp_path / "e"
    assert (
        cli.main(["embed", str(gallery), "--method", "pca", "--size", "64", "--out", str(out)]) == 0
    )
    rec = json.loads((out / "embedding.json").read_text())
    assert sorted(rec["points"]) == sorted(f"{n}.png" for n in NAMES)
    assert cv2.imread(str(out / "embedding.png")).shape == (1024, 1024, 3)


def test_fool(tmp_path, capsys):
    out = tmp_path / "fo"
    code = cli.main(
        [
            "fool",
            str(sample_path("coffee")),
            "--target",
            "1",
            "--size",
            "96",
            "--steps",
            "10",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr()
    rec = json.loads((out / "result.json").read_text())
    assert rec["rows"][0]["class"] == 1 and rec["rows"][0]["linf"] <= 8 / 255 + 1e-6
    assert (out / "coffee.png").is_file() and (out / "fool.png").is_file()
    with pytest.raises(SystemExit):
        cli.main(["fool", str(sample_path("coffee")), "--target", "1", "--eps", "x"])


def test_neighbors_fits_queries_as_the_gallery_when_already_at_size(tmp_path, gallery):
    # Images already at --size are not re-cropped, neither in the gallery nor as queries: a
    # query equal to a gallery image is at distance 0 (it was 0.44 when only queries were).
    out = tmp_path / "n"
    args = ["neighbors", str(gallery / "chelsea.png"), "--gallery", str(gallery), "--k", "2"]
    assert cli.main([*args, "--size", "80", "--out", str(out)]) == 0
    rec = json.loads((out / "neighbors.json").read_text())
    assert rec["neighbors"][0][0]["name"] == "chelsea.png"
    assert rec["neighbors"][0][0]["distance"] < 1e-4  # float32 codes, batches of 1 and 5
