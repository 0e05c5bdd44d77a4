"""``pyinvert batch``: manifests, per-item failures, options; the helpers the other
``tests/test_batch_*.py`` files share (grouping, resume and kills, torchrun:
``test_batch_run.py``; the report: ``test_batch_report.py``; hardening:
``test_batch_hardening.py``; determinism: ``test_batch_determinism.py``)."""

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
from torch import nn

from pyinvert.batch import command, store
from pyinvert.batch.manifest import ManifestError, item_slug, read_manifest
from pyinvert.data import sample_path
from pyinvert.representations import Representation

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera")
# The batch job calls the package attribute pyinvert.invert at call time: spies replace it.
import pyinvert as INVERT_MODULE  # noqa: E402


def write_photo(path, name="chelsea", size=48, crop=0, gray=False):
    """A size x size image from a bundled photo (optionally a crop offset)."""
    image = cv2.imread(str(sample_path(name)), cv2.IMREAD_COLOR)
    image = image[crop:, crop:]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if gray:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert cv2.imwrite(str(path), image)
    return path


def write_csv(path, rows, header=("id", "image", "rep", "recipe", "restarts", "overrides")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(
                [
                    r.get(h, "") if not isinstance(r.get(h), dict) else json.dumps(r[h])
                    for h in header
                ]
            )
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def good_and_bad_rows(folder: Path):
    """Rows of a manifest with good items and one of every kind of bad item, and the
    expected reason (a regex) of each bad one."""
    (folder / "img").mkdir()
    for name in PHOTOS:
        write_photo(folder / "img" / f"{name}.png", name, gray=(name == "camera"))
    write_photo(folder / "img" / "chelsea-crop.png", "chelsea", crop=40)
    write_photo(folder / "img" / "tiny.png", "chelsea", size=3)
    (folder / "img" / "junk.png").write_bytes(b"this is not a PNG")
    good = [
        {"id": "cat", "image": "img/chelsea.png", "rep": "hog"},
        {"id": "astronaut", "image": "img/astronaut.png", "rep": "hog"},
        {"id": "camera-gray", "image": "img/camera.png", "rep": "hog"},
        {"id": "cat crop/1", "image": str(folder / "img" / "chelsea-crop.png"), "rep": "hogb"},
        {"id": "coffee-r2", "image": "img/coffee.png", "rep": "hog", "restarts": 2},
        {"id": "rocket-dsift", "image": "img/rocket.png", "rep": "dsift", "recipe": "ijcv2016"},
        {"id": "cat-tv", "image": "img/chelsea.png", "rep": "hog", "overrides": {"tv_weight": 2.0}},
    ]
    bad = [
        ({"id": "missing", "image": "img/nothere.png", "rep": "hog"}, r"image not found"),
        ({"id": "junk", "image": "img/junk.png", "rep": "hog"}, r"cannot read the image"),
        ({"id": "tiny", "image": "img/tiny.png", "rep": "hog"}, r"image too small: .* 3x3 pixels"),
        (
            {"id": "bad-rep", "image": "img/chelsea.png", "rep": "sift3000"},
            r"representation 'sift3000'",
        ),
        (
            {"id": "bad-layer", "image": "img/chelsea.png", "rep": "cnn:nosuchnet:conv9"},
            r"representation 'cnn:nosuchnet:conv9'",
        ),
        (
            {
                "id": "bad-field",
                "image": "img/chelsea.png",
                "rep": "hog",
                "overrides": {"tv_wieght": 2.0},
            },
            r"unknown recipe field 'tv_wieght'",
        ),
        (
            {
                "id": "bad-value",
                "image": "img/chelsea.png",
                "rep": "hog",
                "overrides": {"tv_weight": "lots"},
            },
            r"field 'tv_weight': expected a finite number",
        ),
        (
            {"id": "bad-recipe", "image": "img/chelsea.png", "rep": "hog", "recipe": "eccv2099"},
            r"recipe 'eccv2099'",
        ),
        (
            {
                "id": "diverges",
                "image": "img/chelsea.png",
                "rep": "hog",
                "overrides": {"stages": [[1e10, 4]]},
            },
            r"diverged: the loss became NaN/Inf",
        ),
    ]
    return good, bad


def read_summary(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return summary, rows


def run_job(manifest, out, *extra):
    """``pyinvert batch MANIFEST --out OUT --steps 3 --quiet [extra]``: the exit status."""
    return command.main([str(manifest), "--out", str(out), "--steps", "3", "--quiet", *extra])


def items_by_id(out):
    summary, _ = read_summary(out)
    return {r["id"]: r for r in summary["items"]}


def check_no_partial_files(out: Path):
    """Every item folder is complete: item.json parses, listed files exist with their
    checksums, PNGs decode; no temporary file is left."""
    folders = sorted((out / "items").iterdir()) if (out / "items").exists() else []
    for folder in folders:
        record = json.loads((folder / "item.json").read_text())
        for name, digest in record["checksums"].items():
            assert store.sha256_file(folder / name) == digest
        for png in folder.glob("*.png"):
            assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED) is not None, png
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") and ".partial" not in p.parts]
    assert not leftovers
    for name in ("summary.json", "index.html"):
        if (out / name).exists():
            (out / name).read_text()
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    return folders


# ---- shared helpers: spies, items, a CNN stand-in, subprocesses ----------------------


class InvertSpy:
    """Wraps pyinvert.invert, recording each call's batch size; fails batches larger
    than ``fail_above`` (to test the one-at-a-time fallback)."""

    def __init__(self, fail_above=None):
        self.real = INVERT_MODULE.invert
        self.calls = []
        self.fail_above = fail_above

    def __call__(self, images, **kwargs):
        self.calls.append((images.shape[0], tuple(images.shape[-2:]), kwargs.get("restarts")))
        if self.fail_above is not None and images.shape[0] > self.fail_above:
            raise RuntimeError("simulated out of memory")
        return self.real(images, **kwargs)


def many_items(folder: Path, n, size=40, rep="hog", sizes=None):
    rows = []
    for i in range(n):
        s = sizes[i % len(sizes)] if sizes else size
        name = PHOTOS[i % 4]
        write_photo(folder / f"p{i}.png", name, size=s, crop=3 * i)
        rows.append({"id": f"item{i:03d}", "image": f"p{i}.png", "rep": rep})
    return rows


class MissingWeights(FileNotFoundError):
    pass


class TinyCNN(Representation):
    """3-channel conv + ReLU: a stand-in for a "cnn:MODEL:LAYER" representation."""

    name = "cnn:tiny:conv1"
    channels = 3

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(8, 3, 3, 3, generator=g) / 10)
            self.conv.bias.zero_()
        self.conv.requires_grad_(False)

    @property
    def min_size(self):
        return 16

    def preprocess(self, images):
        return images[:, :3].expand(-1, 3, -1, -1) * 255 - 128

    def forward(self, x):
        return torch.relu(self.conv(x.to(self.conv.weight.dtype)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _done_items(out: Path):
    return (
        sorted(p.parent.name for p in (out / "items").glob("*/item.json"))
        if (out / "items").exists()
        else []
    )


def _start(manifest, out, *extra):
    return subprocess.Popen(
        [PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out), *extra],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_items(proc, out, n, timeout=180):
    deadline = time.monotonic() + timeout
    while len(_done_items(out)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)


# ---- a manifest with good and bad items -------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_good_items_have_outputs_bad_items_their_reason(tmp_path, fmt, capsys):
    good, bad = good_and_bad_rows(tmp_path)
    rows = good + [r for r, _ in bad]
    manifest = (
        write_csv(tmp_path / "m.csv", rows)
        if fmt == "csv"
        else write_jsonl(tmp_path / "m.jsonl", rows)
    )
    out = tmp_path / "out"
    code = command.main(
        [str(manifest), "--out", str(out), "--steps", "6", "--batch-size", "8", "--quiet"]
    )
    assert code == 1
    summary, csv_rows = read_summary(out)
    by_id = {r["id"]: r for r in summary["items"]}
    assert [r["id"] for r in csv_rows] == [r["id"] for r in rows]  # one row each, in order
    for r in good:
        row = by_id[r["id"]]
        assert row["status"] == "ok", row
        folder = out / "items" / item_slug(r["id"])
        record = json.loads((folder / "item.json").read_text())
        assert record["status"] == "ok" and record["id"] == r["id"]
        assert 0 < record["metrics"]["feature_error"] < 1.5
        assert math.isfinite(record["metrics"]["psnr"]) and -1 <= record["metrics"]["ssim"] <= 1
        names = (
            ["reconstruction.png"]
            if not r.get("restarts")
            else [f"reconstruction-r{k}.png" for k in range(r["restarts"])]
        )
        for name in names + ["original.png", "figure.png"]:
            im = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
            assert im is not None and im.shape[0] >= 48, name
        assert cv2.imread(str(folder / names[0]), cv2.IMREAD_UNCHANGED).shape == (48, 48)
        assert (
            row["reconstruction"]
            == f"items/{item_slug(r['id'])}/" + record["files"]["reconstruction"]
        )
        assert float(dict((c["id"], c) for c in csv_rows)[r["id"]]["psnr"]) == pytest.approx(
            row["psnr"]
        )
    for r, reason in bad:
        row = by_id[r["id"]]
        assert row["status"] == "failed", row
        assert row["error"] and __import__("re").search(reason, row["error"]), row["error"]
        record = json.loads((out / "items" / item_slug(r["id"]) / "item.json").read_text())
        assert record["status"] == "failed" and record["error"] == row["error"]
        assert not list((out / "items" / item_slug(r["id"])).glob("*.png"))
    job = summary["job"]
    assert (job["items"], job["ok"], job["failed"]) == (len(rows), len(good), len(bad))
    assert job["exit_status"] == 1 and job["done_this_run"] == len(rows)
    err = capsys.readouterr().err
    assert "item 'missing' (line" in err
    html_text = (out / "index.html").read_text()
    assert html_text.count('class="item ok"') == len(good)
    assert html_text.count('class="item failed"') == len(bad)
    check_no_partial_files(out)
    assert not (out / ".partial").exists()


def test_all_ok_exits_0(tmp_path):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    assert (
        command.main([str(manifest), "--out", str(tmp_path / "o"), "--steps", "3", "--quiet"]) == 0
    )


# ---- manifest validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, suffix, match",
    [
        ("id,image\na,x.png\n", ".csv", r"line 1: header: missing column\(s\) \['rep'\]"),
        (
            "id,image,rep\na,x.png,hog\nb,y.png,hog\na,z.png,hog\n",
            ".csv",
            r"line 4: field 'id': duplicate id 'a' \(first on line 2\)",
        ),
        (
            'id,image,rep,overrides\na,x.png,hog,"{tv_weight: 2}"\n',
            ".csv",
            r"line 2: field 'overrides': not valid JSON",
        ),
        (
            'id,image,rep,overrides\na,x.png,hog,"[1, 2]"\n',
            ".csv",
            r"line 2: field 'overrides': expected a JSON object",
        ),
        (
            "id,image,rep,restarts\na,x.png,hog,0\n",
            ".csv",
            r"line 2: field 'restarts': expected an integer in \[1, 100\], got '0'",
        ),
        ("id,image,rep\n,x.png,hog\n", ".csv", r"line 2: field 'id': empty"),
        ("id,image,rep\na,x.png,hog,extra\n", ".csv", r"line 2: 4 fields, but the header has 3"),
        ("id,image,rep\n", ".csv", r"no items"),
        (
            '{"id": "a", "image": "x.png", "rep": "hog"}\n{"id": "b", "image": "y.png"\n',
            ".jsonl",
            r"line 2: not valid JSON",
        ),
        ('{"id": "a", "image": "x.png"}\n', ".jsonl", r"line 1: field 'rep': missing"),
        ('["a", "x.png", "hog"]\n', ".jsonl", r"line 1: expected a JSON object, got list"),
        (
            '{"id": "a", "image": "x.png", "rep": "hog", "overrides": "{oops"}\n',
            ".jsonl",
            r"line 1: field 'overrides': not valid JSON",
        ),
        (
            '{"id": "a", "image": "x.png", "rep": "hog", "restarts": 1.5}\n',
            ".jsonl",
            r"line 1: field 'restarts'",
        ),
    ],
)
def test_manifest_errors_name_the_line_and_field(tmp_path, text, suffix, match):
    path = tmp_path / f"m{suffix}"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_bad_manifest_exits_2_and_lists_every_problem(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("id,image,rep,overrides\na,x.png,hog,{bad\na,y.png,hog,\n")
    out = tmp_path / "out"
    assert command.main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 2: field 'overrides'" in err and "line 3: field 'id': duplicate" in err
    assert not out.exists()  # nothing ran
    assert command.main([str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    assert "cannot read the manifest" in capsys.readouterr().err


def test_manifest_sniffing_paths_and_values(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "list.txt"  # no known extension: sniffed
    path.write_text(
        '{"id": 7, "image": "../a.png", "rep": "hog", "restarts": "2", '
        '"overrides": {"tv_weight": 2}}\n\n'
        '{"id": "b", "image": "/abs/b.png", "rep": "dsift", "overrides": null}\n'
    )
    a, b = read_manifest(path)
    assert a.id == "7" and a.path.resolve() == (tmp_path / "a.png").resolve()
    assert a.restarts == 2 and a.overrides == {"tv_weight": 2} and a.line == 1
    assert b.path == Path("/abs/b.png") and b.overrides == {} and b.line == 3
    csv_path = tmp_path / "m"
    csv_path.write_text("\ufeffID, Image ,REP,notes\n x , a.png , hog ,whatever\n")
    (c,) = read_manifest(csv_path)
    assert (c.id, c.image, c.rep, c.recipe, c.restarts) == ("x", "a.png", "hog", None, None)


def test_item_slugs_are_safe_and_distinct():
    assert item_slug("cat-01.v2") == "cat-01.v2"
    ids = ["a/b", "a_b", "../etc/passwd", "a b", ".hidden", "", "é"]
    slugs = [item_slug(i) for i in ids]
    assert len(set(slugs)) == len(slugs)
    for s in slugs:
        assert "/" not in s and not s.startswith(".") and s


def test_usage_errors_exit_2(tmp_path, capsys):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    out = str(tmp_path / "o")
    assert command.main([str(manifest), "--out", out, "--steps", "0"]) == 2
    assert "expected steps to be an int in [1, 100000], got 0" in capsys.readouterr().err
    assert command.main([str(manifest), "--out", out, "--batch-size", "0"]) == 2
    assert "expected batch_size" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert command.main([str(manifest), "--out", out, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert command.main([str(manifest), "--out", out, "--device", "tpu9"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        command.main([str(manifest)])  # --out is required
    assert exit_info.value.code == 2


def test_a_second_job_on_the_same_folder_is_refused(tmp_path, capsys):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    out = tmp_path / "o"
    out.mkdir()
    lock = store.JobLock(out)
    assert lock.acquire()
    try:
        code = subprocess.run(
            [PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out), "--steps", "2"],
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert code.returncode == 2 and "another job is writing" in code.stderr
    finally:
        lock.release()


def test_add_parser_wires_into_a_main_cli(tmp_path):
    import argparse

    parser = argparse.ArgumentParser(prog="pyinvert")
    sub = parser.add_subparsers(dest="command")
    command.add_parser(sub)
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    args = parser.parse_args(
        [
            "batch",
            str(manifest),
            "--out",
            str(tmp_path / "o"),
            "--steps",
            "2",
            "--quiet",
            "--batch-size",
            "4",
        ]
    )
    assert args.command == "batch" and args.batch_size == 4
    assert args.func(args) == 0
    assert (tmp_path / "o" / "items" / "a" / "item.json").exists()


@pytest.mark.parametrize(
    "module",
    [
        "pyinvert.batch.manifest",
        "pyinvert.batch.overrides",
        "pyinvert.batch.plan",
        "pyinvert.batch.report",
        "pyinvert.batch.signals",
    ],
)
def test_batch_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
