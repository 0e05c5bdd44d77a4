"""``pyinvert texture`` and ``pyinvert style`` end to end (MobileNetV2, tiny sizes): the
figures, the per-result files and the JSON of per-layer errors and timings."""

import json

import cv2
import pytest
import torch

from pyinvert import cli
from pyinvert.data import sample_path


@pytest.fixture(autouse=True)
def one_thread(imagenet_mobilenet):  # the commands load the same weights: skip without them
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_photo(path, name, size):
    image = cv2.imread(str(sample_path(name)), cv2.IMREAD_COLOR)
    assert cv2.imwrite(str(path), cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return str(path)


def test_texture_command(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", "chelsea", 64)
    b = write_photo(tmp_path / "cup.png", "coffee", 64)
    out = tmp_path / "out"
    rc = cli.main(
        ["texture", a, b, "--steps", "12", "--restarts", "2", "--out", str(out), "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "cat.png",
        "cup.png",
        "result.json",
        "cat-texture-r0.png",
        "cat-texture-r1.png",
        "cup-texture-r0.png",
        "cup-texture-r1.png",
    }
    strip = cv2.imread(str(out / "cat.png"))
    assert strip.shape[1] >= 3 * 64  # source | texture 0 | texture 1
    record = json.loads((out / "result.json").read_text())
    assert set(record["gram_error"]) == set(record["settings"]["layers"])
    assert all(r > 1 for v in record["reduction"].values() for r in v)
    assert record["seconds"] > 0 and record["seconds_per_step"] > 0
    assert "Gram error fell by" in capsys.readouterr().out


def test_texture_command_shows_the_nonparametric_method_beside_gram(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", "chelsea", 32)
    out = tmp_path / "out"
    rc = cli.main(
        ["texture", a, "--steps", "4", "--nonparametric", "--out", str(out), "--no-progress"]
    )
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= {
        "cat.png",
        "cat-texture.png",
        "cat-nonparametric.png",
    }
    strip = cv2.imread(str(out / "cat.png"))
    assert strip.shape[1] >= 3 * 32  # source | Gram texture | non-parametric texture
    # Efros & Leung copy pixels: every pixel of that texture is a pixel of the source.
    src = cv2.imread(a).reshape(-1, 3)
    tex = cv2.imread(str(out / "cat-nonparametric.png")).reshape(-1, 3)
    assert {tuple(p) for p in tex.tolist()} <= {tuple(p) for p in src.tolist()}


def test_style_command(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", "chelsea", 64)
    b = write_photo(tmp_path / "cup.png", "coffee", 64)
    out = tmp_path / "out"
    rc = cli.main(
        [
            "style",
            a,
            b,
            "--style-weight",
            "1e1,1e3",
            "--steps",
            "12",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {
        "cat-cup.png",
        "cat-cup-w10.png",
        "cat-cup-w1000.png",
        "result.json",
    }
    assert cv2.imread(str(out / "cat-cup.png")).shape[1] >= 4 * 64
    record = json.loads((out / "result.json").read_text())
    assert record["style_weight"] == [10.0, 1000.0]
    assert len(record["content_error"]) == 2 and record["seconds"] > 0
    assert record["mean_gram_error"][1] < record["mean_gram_error"][0]
    assert "style weight 1000: Gram error" in capsys.readouterr().out


def test_argument_errors(tmp_path, capsys):
    a = write_photo(tmp_path / "cat.png", "chelsea", 32)
    with pytest.raises(SystemExit):
        cli.main(["style", a, a, "--style-weight", "0"])
    assert "expected a finite number > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["texture", a, "--steps", "0"])
    assert "--steps must be >= 1" in capsys.readouterr().err
    rc = cli.main(
        [
            "texture",
            a,
            "--layers",
            "features.99",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--steps",
            "2",
        ]
    )
    assert rc == 2 and "unknown layer 'features.99'" in capsys.readouterr().err
    rc = cli.main(
        ["style", str(tmp_path / "nope.png"), a, "--out", str(tmp_path / "o2"), "--no-progress"]
    )
    assert rc == 2 and "the content and the style image are both needed" in capsys.readouterr().err
