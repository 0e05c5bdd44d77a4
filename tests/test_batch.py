"""``pyinvert batch``: manifests, per-item failures, grouping, resume after kills, torchrun,
and the report page (in headless Chromium)."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pyinvert import batch as pb
from pyinvert.batch import command, job as batch_job, report, store
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
            w.writerow([r.get(h, "") if not isinstance(r.get(h), dict) else json.dumps(r[h])
                        for h in header])
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def good_and_bad_rows(folder: Path):
    """Rows of a manifest with good items and one of every kind of bad item, and the
    expected reason (a regex) of each bad one."""
    (folder / "img").mkdir()
    for i, name in enumerate(PHOTOS):
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
        {"id": "rocket-dsift", "image": "img/rocket.png", "rep": "dsift",
         "recipe": "ijcv2016"},
        {"id": "cat-tv", "image": "img/chelsea.png", "rep": "hog",
         "overrides": {"tv_weight": 2.0}},
    ]
    bad = [
        ({"id": "missing", "image": "img/nothere.png", "rep": "hog"}, r"image not found"),
        ({"id": "junk", "image": "img/junk.png", "rep": "hog"}, r"cannot read the image"),
        ({"id": "tiny", "image": "img/tiny.png", "rep": "hog"},
         r"image too small: .* 3x3 pixels"),
        ({"id": "bad-rep", "image": "img/chelsea.png", "rep": "sift3000"},
         r"representation 'sift3000'"),
        ({"id": "bad-layer", "image": "img/chelsea.png", "rep": "cnn:nosuchnet:conv9"},
         r"representation 'cnn:nosuchnet:conv9'"),
        ({"id": "bad-field", "image": "img/chelsea.png", "rep": "hog",
          "overrides": {"tv_wieght": 2.0}}, r"unknown recipe field 'tv_wieght'"),
        ({"id": "bad-value", "image": "img/chelsea.png", "rep": "hog",
          "overrides": {"tv_weight": "lots"}}, r"field 'tv_weight': expected a finite number"),
        ({"id": "bad-recipe", "image": "img/chelsea.png", "rep": "hog", "recipe": "eccv2099"},
         r"recipe 'eccv2099'"),
        ({"id": "diverges", "image": "img/chelsea.png", "rep": "hog",
          "overrides": {"stages": [[1e10, 4]]}}, r"diverged: the loss became NaN/Inf"),
    ]
    return good, bad


def read_summary(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return summary, rows


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
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")
                 and ".partial" not in p.parts]
    assert not leftovers
    for name in ("summary.json", "index.html"):
        if (out / name).exists():
            (out / name).read_text()
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    return folders


# ---- a manifest with good and bad items -------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_good_items_have_outputs_bad_items_their_reason(tmp_path, fmt, capsys):
    good, bad = good_and_bad_rows(tmp_path)
    rows = good + [r for r, _ in bad]
    manifest = (write_csv(tmp_path / "m.csv", rows) if fmt == "csv"
                else write_jsonl(tmp_path / "m.jsonl", rows))
    out = tmp_path / "out"
    code = command.main([str(manifest), "--out", str(out), "--steps", "6", "--batch-size", "8",
                         "--quiet"])
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
        names = ["reconstruction.png"] if not r.get("restarts") else \
            [f"reconstruction-r{k}.png" for k in range(r["restarts"])]
        for name in names + ["original.png", "figure.png"]:
            im = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
            assert im is not None and im.shape[0] >= 48, name
        assert cv2.imread(str(folder / names[0]), cv2.IMREAD_UNCHANGED).shape == (48, 48)
        assert row["reconstruction"] == f"items/{item_slug(r['id'])}/" + \
            record["files"]["reconstruction"]
        assert float(dict((c["id"], c) for c in csv_rows)[r["id"]]["psnr"]) == \
            pytest.approx(row["psnr"])
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
    assert command.main([str(manifest), "--out", str(tmp_path / "o"), "--steps", "3",
                         "--quiet"]) == 0


# ---- manifest validation ------------------------------------------------------------------

@pytest.mark.parametrize("text, suffix, match", [
    ("id,image\na,x.png\n", ".csv", r"line 1: header: missing column\(s\) \['rep'\]"),
    ("id,image,rep\na,x.png,hog\nb,y.png,hog\na,z.png,hog\n", ".csv",
     r"line 4: field 'id': duplicate id 'a' \(first on line 2\)"),
    ('id,image,rep,overrides\na,x.png,hog,"{tv_weight: 2}"\n', ".csv",
     r"line 2: field 'overrides': not valid JSON"),
    ('id,image,rep,overrides\na,x.png,hog,"[1, 2]"\n', ".csv",
     r"line 2: field 'overrides': expected a JSON object"),
    ("id,image,rep,restarts\na,x.png,hog,0\n", ".csv",
     r"line 2: field 'restarts': expected an integer in \[1, 100\], got '0'"),
    ("id,image,rep\n,x.png,hog\n", ".csv", r"line 2: field 'id': empty"),
    ("id,image,rep\na,x.png,hog,extra\n", ".csv", r"line 2: 4 fields, but the header has 3"),
    ("id,image,rep\n", ".csv", r"no items"),
    ('{"id": "a", "image": "x.png", "rep": "hog"}\n{"id": "b", "image": "y.png"\n', ".jsonl",
     r"line 2: not valid JSON"),
    ('{"id": "a", "image": "x.png"}\n', ".jsonl", r"line 1: field 'rep': missing"),
    ('["a", "x.png", "hog"]\n', ".jsonl", r"line 1: expected a JSON object, got list"),
    ('{"id": "a", "image": "x.png", "rep": "hog", "overrides": "{oops"}\n', ".jsonl",
     r"line 1: field 'overrides': not valid JSON"),
    ('{"id": "a", "image": "x.png", "rep": "hog", "restarts": 1.5}\n', ".jsonl",
     r"line 1: field 'restarts'"),
])
def test_manifest_errors_name_the_line_and_field(tmp_path, text, suffix, match):
    path = tmp_path / f"m{suffix}"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_bad_manifest_exits_2_and_lists_every_problem(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text('id,image,rep,overrides\na,x.png,hog,{bad\na,y.png,hog,\n')
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
    path.write_text('{"id": 7, "image": "../a.png", "rep": "hog", "restarts": "2", '
                    '"overrides": {"tv_weight": 2}}\n\n'
                    '{"id": "b", "image": "/abs/b.png", "rep": "dsift", "overrides": null}\n')
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
        code = subprocess.run([PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out),
                               "--steps", "2"], cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=120)
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
    args = parser.parse_args(["batch", str(manifest), "--out", str(tmp_path / "o"),
                              "--steps", "2", "--quiet", "--batch-size", "4"])
    assert args.command == "batch" and args.batch_size == 4
    assert args.func(args) == 0
    assert (tmp_path / "o" / "items" / "a" / "item.json").exists()


# ---- grouping and batching ------------------------------------------------------------

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


@pytest.fixture
def spy(monkeypatch):
    s = InvertSpy()
    monkeypatch.setattr(INVERT_MODULE, "invert", s)
    return s


def many_items(folder: Path, n, size=40, rep="hog", sizes=None):
    rows = []
    for i in range(n):
        s = sizes[i % len(sizes)] if sizes else size
        name = PHOTOS[i % 4]
        write_photo(folder / f"p{i}.png", name, size=s, crop=3 * i)
        rows.append({"id": f"item{i:03d}", "image": f"p{i}.png", "rep": rep})
    return rows


def test_items_of_one_kind_run_in_ceil_n_over_batch_calls(tmp_path, spy):
    rows = many_items(tmp_path, 11)
    manifest = write_csv(tmp_path / "m.csv", rows)
    job = pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=4, verbose=False)
    assert job["exit_status"] == 0 and job["ok"] == 11
    assert sorted(c[0] for c in spy.calls) == [3, 4, 4]  # ceil(11 / 4) = 3 calls


def test_groups_split_by_size_rep_and_restarts(tmp_path, spy):
    rows = many_items(tmp_path, 6, sizes=(40, 48))
    rows += [{"id": "d", "image": "p0.png", "rep": "dsift"},
             {"id": "r2", "image": "p0.png", "rep": "hog", "restarts": 2}]
    manifest = write_csv(tmp_path / "m.csv", rows)
    job = pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=8, verbose=False)
    assert job["ok"] == 8
    assert sorted(spy.calls) == sorted([(3, (40, 40), 1), (3, (48, 48), 1), (1, (40, 40), 1),
                                        (1, (40, 40), 2)])


def test_pixel_budget_splits_batches(tmp_path, spy):
    manifest = write_csv(tmp_path / "m.csv", many_items(tmp_path, 5))
    pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=8, verbose=False,
                 max_batch_pixels=2 * 40 * 40)
    assert sorted(c[0] for c in spy.calls) == [1, 2, 2]


def test_a_broken_batch_falls_back_to_one_at_a_time(tmp_path, monkeypatch, capsys):
    s = InvertSpy(fail_above=1)
    monkeypatch.setattr(INVERT_MODULE, "invert", s)
    manifest = write_csv(tmp_path / "m.csv", many_items(tmp_path, 4))
    job = pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=4, verbose=False)
    assert job["exit_status"] == 0 and job["ok"] == 4
    assert [c[0] for c in s.calls] == [4, 1, 1, 1, 1]
    assert "running its items one at a time" in capsys.readouterr().err


def test_an_exception_for_one_item_fails_only_that_item_and_is_retried(tmp_path, monkeypatch):
    real = InvertSpy().real
    bad_seed = batch_job.item_seed(0, "item001")

    def flaky(images, **kwargs):
        if bad_seed in kwargs["seeds"]:
            raise RuntimeError("simulated kernel failure")
        return real(images, **kwargs)

    monkeypatch.setattr(INVERT_MODULE, "invert", flaky)
    manifest = write_csv(tmp_path / "m.csv", many_items(tmp_path, 3))
    out = tmp_path / "o"
    job = pb.run_batch(manifest, out, steps=2, batch_size=3, verbose=False)
    assert (job["ok"], job["failed"], job["exit_status"]) == (2, 1, 1)
    record = json.loads((out / "items" / "item001" / "item.json").read_text())
    assert "simulated kernel failure" in record["error"] and record["final"] is False
    monkeypatch.setattr(INVERT_MODULE, "invert", real)
    job = pb.run_batch(manifest, out, steps=2, batch_size=3, verbose=False)
    assert (job["ok"], job["done_this_run"], job["skipped"]) == (3, 1, 2)


def test_results_do_not_depend_on_batching(tmp_path):
    rows = many_items(tmp_path, 5)
    manifest = write_csv(tmp_path / "m.csv", rows)
    pb.run_batch(manifest, tmp_path / "a", steps=4, batch_size=5, verbose=False)
    pb.run_batch(manifest, tmp_path / "b", steps=4, batch_size=1, verbose=False)
    for r in rows:
        a = (tmp_path / "a" / "items" / r["id"] / "reconstruction.png").read_bytes()
        b = (tmp_path / "b" / "items" / r["id"] / "reconstruction.png").read_bytes()
        assert a == b
    pb.run_batch(manifest, tmp_path / "c", steps=4, batch_size=5, seed=1, verbose=False)
    c = (tmp_path / "c" / "items" / rows[0]["id"] / "reconstruction.png").read_bytes()
    assert c != (tmp_path / "a" / "items" / rows[0]["id"] / "reconstruction.png").read_bytes()


# ---- CNN-style representations (a tiny registered stand-in) -----------------------------

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


def test_cnn_representations_and_their_errors(tmp_path, monkeypatch):
    import pyinvert.representations as reps

    real = reps.make_representation

    def make(name, **kwargs):
        if isinstance(name, str) and name.startswith("cnn:"):
            _, model, layer = name.split(":")
            if model == "nosuchweights":
                raise MissingWeights(f"cnn: no weights for {model}")
            if layer != "conv1":
                raise ValueError(f"cnn: unknown layer {layer!r}; expected one of ['conv1']")
            return TinyCNN()
        return real(name, **kwargs)

    monkeypatch.setattr(reps, "make_representation", make)
    write_photo(tmp_path / "a.png", size=32)
    write_photo(tmp_path / "b.png", "coffee", size=32)
    rows = [{"id": "a", "image": "a.png", "rep": "cnn:tiny:conv1"},
            {"id": "b", "image": "b.png", "rep": "cnn:tiny:conv1"},
            {"id": "layer", "image": "a.png", "rep": "cnn:tiny:fc9"},
            {"id": "weights", "image": "a.png", "rep": "cnn:nosuchweights:conv1"}]
    out = tmp_path / "o"
    job = pb.run_batch(write_csv(tmp_path / "m.csv", rows), out, steps=3, verbose=False)
    summary, _ = read_summary(out)
    by_id = {r["id"]: r for r in summary["items"]}
    assert by_id["a"]["status"] == by_id["b"]["status"] == "ok"
    assert cv2.imread(str(out / by_id["a"]["reconstruction"]), cv2.IMREAD_UNCHANGED).shape == \
        (32, 32, 3)
    assert "unknown layer 'fc9'" in by_id["layer"]["error"]
    assert "no weights for nosuchweights" in by_id["weights"]["error"]
    assert job["exit_status"] == 1


# ---- resume -------------------------------------------------------------------------------

def test_rerun_skips_complete_items_and_redoes_changed_or_damaged_ones(tmp_path, monkeypatch):
    rows = many_items(tmp_path, 4)
    manifest = write_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    first = pb.run_batch(manifest, out, steps=2, verbose=False)
    run1 = first["run_id"]
    stamps = {r["id"]: (out / "items" / r["id"] / "item.json").stat().st_mtime_ns for r in rows}

    s = InvertSpy()
    monkeypatch.setattr(INVERT_MODULE, "invert", s)
    again = pb.run_batch(manifest, out, steps=2, verbose=False)
    assert s.calls == [] and again["skipped"] == 4 and again["done_this_run"] == 0
    assert again["exit_status"] == 0
    for r in rows:
        record = json.loads((out / "items" / r["id"] / "item.json").read_text())
        assert record["run_id"] == run1
        assert (out / "items" / r["id"] / "item.json").stat().st_mtime_ns == stamps[r["id"]]

    write_photo(tmp_path / "p0.png", "rocket", size=40)                      # changed input
    (out / "items" / "item001" / "reconstruction.png").write_bytes(b"broken")  # damaged output
    (out / "items" / "item002" / "item.json").unlink()                         # no done marker
    third = pb.run_batch(manifest, out, steps=2, verbose=False)
    assert third["done_this_run"] == 3 and third["skipped"] == 1
    assert sorted(c[0] for c in s.calls) == [3]
    summary, _ = read_summary(out)
    runs = {r["id"]: r["run_id"] for r in summary["items"]}
    assert runs["item003"] == run1 and {runs[f"item00{i}"] for i in range(3)} == \
        {third["run_id"]}
    check_no_partial_files(out)

    s.calls.clear()
    pb.run_batch(manifest, out, steps=3, verbose=False)  # other settings: all redone
    assert sorted(c[0] for c in s.calls) == [4]


def test_failed_items_are_kept_unless_retry_failed(tmp_path, spy):
    manifest = write_csv(tmp_path / "m.csv", [{"id": "m", "image": "gone.png", "rep": "hog"}])
    out = tmp_path / "o"
    assert pb.run_batch(manifest, out, steps=2, verbose=False)["exit_status"] == 1
    run1 = json.loads((out / "items" / "m" / "item.json").read_text())["run_id"]
    assert pb.run_batch(manifest, out, steps=2, verbose=False)["skipped"] == 1
    assert json.loads((out / "items" / "m" / "item.json").read_text())["run_id"] == run1
    job = pb.run_batch(manifest, out, steps=2, verbose=False, retry_failed=True)
    assert job["done_this_run"] == 1
    write_photo(tmp_path / "gone.png")  # the image appears: its fingerprint changes
    job = pb.run_batch(manifest, out, steps=2, verbose=False)
    assert job["exit_status"] == 0 and job["ok"] == 1 and len(spy.calls) == 1


def test_stale_partial_files_are_removed_on_start(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", many_items(tmp_path, 1))
    out = tmp_path / "o"
    (out / ".partial" / "item000.x.0").mkdir(parents=True)
    (out / ".partial" / "item000.x.0" / "reconstruction.png").write_bytes(b"half")
    (out / ".summary.json.abc.tmp").write_text("{")
    pb.run_batch(manifest, out, steps=2, verbose=False)
    assert not (out / ".partial").exists() and not list(out.glob("*.tmp"))


# ---- kill and resume (subprocesses) ----------------------------------------------------------

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _done_items(out: Path):
    return sorted(p.parent.name for p in (out / "items").glob("*/item.json")) \
        if (out / "items").exists() else []


def _start(manifest, out, *extra):
    return subprocess.Popen([PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out),
                             *extra], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_items(proc, out, n, timeout=180):
    deadline = time.monotonic() + timeout
    while len(_done_items(out)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_job_resumes_every_item_done_exactly_once(tmp_path, sig):
    # 10 items of ~0.2 s each (128 px, 80 steps, one at a time): killed after the second.
    n = 10
    rows = many_items(tmp_path, n, size=128)
    manifest = write_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    args = ("--steps", "80", "--batch-size", "1")
    proc = _start(manifest, out, *args)
    _wait_for_items(proc, out, 2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        assert "stopped by SIGTERM" in stderr
        summary, _ = read_summary(out)
        assert summary["job"]["interrupted"] is True
        assert summary["job"]["pending"] == n - summary["job"]["ok"]
    else:
        assert proc.returncode == -signal.SIGKILL
    done_first = _done_items(out)
    assert 2 <= len(done_first) < n
    check_no_partial_files(out)
    first = {name: json.loads((out / "items" / name / "item.json").read_text())
             for name in done_first}
    run1 = {r["run_id"] for r in first.values()}
    assert len(run1) == 1

    result = subprocess.run([PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out),
                             *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(done_first)} item(s) already done (skipped)" in result.stdout
    check_no_partial_files(out)
    assert not (out / ".partial").exists()
    summary, csv_rows = read_summary(out)
    assert [r["id"] for r in csv_rows] == [r["id"] for r in rows]
    assert all(r["status"] == "ok" for r in summary["items"])
    run2 = summary["job"]["run_id"]
    for r in summary["items"]:
        record = json.loads((out / "items" / r["id"] / "item.json").read_text())
        if r["id"] in first:
            assert record == first[r["id"]]            # untouched by the second run
        else:
            assert record["run_id"] == run2            # done (once) by the second run
    assert summary["job"]["done_this_run"] == n - len(done_first)


# ---- torchrun -------------------------------------------------------------------------------

def test_torchrun_two_processes_match_one_process(tmp_path):
    good, bad = good_and_bad_rows(tmp_path)
    rows = good + [r for r, _ in bad][:3] + many_items(tmp_path, 5)
    manifest = write_csv(tmp_path / "m.csv", rows)
    one, two = tmp_path / "one", tmp_path / "two"
    assert command.main([str(manifest), "--out", str(one), "--steps", "5", "--quiet"]) == 1
    env = _env()
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "pyinvert.batch", str(manifest), "--out", str(two), "--steps", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "[rank 0]" in result.stdout and "[rank 1]" in result.stdout, result.stderr
    assert result.returncode == 1  # torchrun: some process exited non-zero (items failed)
    s1, _ = read_summary(one)
    s2, csv2 = read_summary(two)
    assert [r["id"] for r in csv2] == [r["id"] for r in rows]   # one summary, every item
    assert s2["job"]["world_size"] == 2 and s2["job"]["exit_status"] == 1
    ranks = set()
    for a, b in zip(s1["items"], s2["items"]):
        assert (a["id"], a["status"], a["error"]) == (b["id"], b["status"], b["error"])
        if a["status"] == "ok":
            for key in ("original", "reconstruction", "figure"):
                assert (one / a[key]).read_bytes() == (two / b[key]).read_bytes(), key
            assert a["feature_error"] == pytest.approx(b["feature_error"], rel=1e-12)
        ranks.add(json.loads((two / b["record"]).read_text())["rank"])
    assert ranks == {0, 1}
    assert "2 process(es)" in (two / "index.html").read_text()


# ---- the report ---------------------------------------------------------------------------

def test_report_escapes_text_and_links_relatively(tmp_path):
    write_photo(tmp_path / "a.png")
    rows = [{"id": "<b>x</b>&\"y\"", "image": "a.png", "rep": "hog"},
            {"id": "bad <script>alert(1)</script>", "image": "<nope>.png", "rep": "hog"}]
    out = tmp_path / "o"
    pb.run_batch(write_csv(tmp_path / "m.csv", rows), out, steps=2, verbose=False)
    text = (out / "index.html").read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert str(tmp_path / "o") + "/items" not in text and 'src="items/' in text
    assert text.count("<img") == 2


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("PYINVERT_REQUIRE_CHROMIUM") == "1" or os.environ.get("CI"):
        pytest.fail("Chromium is not installed (apt-get install -y chromium); CI requires it")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


@pytest.mark.slow
def test_report_renders_thumbnails_in_headless_chromium(tmp_path):
    browser = _chromium()
    good, bad = good_and_bad_rows(tmp_path)
    out = tmp_path / "o"
    pb.run_batch(write_csv(tmp_path / "m.csv", good + [bad[0][0], bad[2][0]]), out, steps=4,
                 verbose=False)
    url = (out / "index.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    import re
    loaded = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', dom.stdout)
    assert loaded, dom.stdout[-2000:] + dom.stderr[-2000:]
    n_images = 2 * len(good)
    assert int(loaded.group(1)) == n_images and int(loaded.group(2)) == n_images

    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1000,800", url],
                   capture_output=True, text=True, timeout=120)
    image = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape == (800, 1000)
    assert image.std() > 20  # not blank
    # The first thumbnail (the cat, top left of the grid) is drawn: its pixels vary like a
    # photo's, unlike the white page around it.
    cards = image[110:250, 20:260].astype(np.float64)
    assert cards.std() > 30 and (cards < 200).mean() > 0.2


def test_summary_rows_and_totals():
    item = read_manifest_item()
    row = report.summary_row(item, item.slug, None, {"recipe": "cvpr2015", "restarts": 1})
    assert row["status"] == "pending" and row["recipe"] == "cvpr2015"
    assert report.totals([row]) == {"items": 1, "ok": 0, "failed": 0, "pending": 1}
    assert report.job_status([row]) == 1 and report.job_status([]) == 1


def read_manifest_item():
    from pyinvert.batch.manifest import Item
    return Item(id="a b", image="x.png", path=Path("/x.png"), rep="hog", line=2)


@pytest.mark.cuda
def test_cuda_job_matches_cpu_job(tmp_path):
    rows = many_items(tmp_path, 3)
    manifest = write_csv(tmp_path / "m.csv", rows)
    cpu = pb.run_batch(manifest, tmp_path / "cpu", steps=5, verbose=False)
    gpu = pb.run_batch(manifest, tmp_path / "gpu", steps=5, device="cuda", verbose=False)
    assert cpu["ok"] == gpu["ok"] == 3 and gpu["device"].startswith("cuda")
    a, _ = read_summary(tmp_path / "cpu")
    b, _ = read_summary(tmp_path / "gpu")
    for x, y in zip(a["items"], b["items"]):
        assert x["feature_error"] == pytest.approx(y["feature_error"], rel=1e-3, abs=1e-4)
        ra = cv2.imread(str(tmp_path / "cpu" / x["reconstruction"]), cv2.IMREAD_UNCHANGED)
        rb = cv2.imread(str(tmp_path / "gpu" / y["reconstruction"]), cv2.IMREAD_UNCHANGED)
        assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 2


def test_run_batch_documents_its_defaults():
    import inspect

    from tests.test_docs import documented_defaults

    doc = inspect.getdoc(pb.run_batch)
    found = documented_defaults(doc)
    params = inspect.signature(pb.run_batch).parameters
    assert set(found) == {n for n, p in params.items() if p.default is not inspect.Parameter.empty}
    for name, text in found.items():
        default = params[name].default
        assert text == repr(default) or text.strip("'\"") == str(default), (name, text)
