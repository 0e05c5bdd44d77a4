"""``pyinvert batch`` hardening (issue 11, batch items 2, 3, 6 and 15; 7, 12-14 and 16 are in
``test_batch_hardening_outputs.py``): every failure ends in a clear one-line reason or error,
the other items' results intact."""

import json
import re
import signal
import subprocess
import textwrap
import time

import cv2
import numpy as np
import pytest

import pyinvert
from pyinvert import batch as pb
from pyinvert.batch import command, manifest as manifest_mod, prepare, store
from pyinvert.batch.manifest import ManifestError, item_slug, read_manifest
from pyinvert.batch.overrides import ItemError, check_overrides
from tests.test_batch import (
    items_by_id,
    run_job,
    PYTHON,
    ROOT,
    _env,
    read_summary,
    write_csv,
    write_jsonl,
    write_photo,
)


# ---- 2. every override value finite and in its range -------------------------------------

BAD_OVERRIDES = [
    ({"tv_weight": -1.0}, r"field 'tv_weight': expected a finite number >= 0, got -1.0"),
    ({"tv_weight": float("nan")}, r"field 'tv_weight': expected a finite number >= 0, got nan"),
    ({"norm_weight": float("inf")}, r"field 'norm_weight': expected a finite number >= 0"),
    ({"data_weight": 0}, r"field 'data_weight': expected a finite number > 0, got 0"),
    ({"momentum": 1.5}, r"field 'momentum': expected a finite number in \[0, 1\), got 1.5"),
    ({"momentum": -0.1}, r"field 'momentum': expected a finite number in \[0, 1\)"),
    ({"beta": 0}, r"field 'beta': expected a finite number > 0"),
    ({"alpha": -6}, r"field 'alpha': expected a finite number > 0"),
    ({"sigma": 0.0}, r"field 'sigma': expected a finite number > 0"),
    ({"bound": -1}, r"field 'bound': expected a finite number > 0 or null"),
    ({"sigma_reference_numel": float("-inf")}, r"field 'sigma_reference_numel'"),
    ({"jitter": 0}, r"field 'jitter': expected an integer in \[1, 256\], got 0"),
    ({"jitter": 10**9}, r"field 'jitter': expected an integer in \[1, 256\]"),
    ({"jitter": 2.0}, r"field 'jitter': expected an integer"),
    ({"dsift_bin_size": 0}, r"field 'dsift_bin_size': expected an integer in \[1, 256\]"),
    ({"dsift_step": -4}, r"field 'dsift_step'"),
    ({"optimizer": "sgd"}, r"field 'optimizer': expected one of \('momentum'"),
    ({"init": 3}, r"field 'init': expected one of"),
    ({"lr_pixels": 1}, r"field 'lr_pixels': expected true or false, got 1"),
    (
        {"stages": [[-0.004, 10]]},
        r"field 'stages': expected \[lr > 0, iterations in "
        r"\[1, 100000\]\]",
    ),
    ({"stages": [[float("nan"), 10]]}, r"field 'stages': expected \[lr > 0"),
    ({"stages": [[0.004, 10**9]]}, r"field 'stages': expected \[lr > 0, iterations in"),
    (
        {"stages": [[0.004, 60000], [0.001, 60000]]},
        r"field 'stages': expected at most 100000 iterations in all, got 120000",
    ),
    ({"stages": [[0.004, 1]] * 101}, r"field 'stages': expected at most 100 stages, got 101"),
    ({"stages": []}, r"field 'stages': expected a non-empty list"),
    ({"tv_weight": "2"}, r"field 'tv_weight': expected a finite number >= 0, got '2'"),
    ({"tv_weight": True}, r"field 'tv_weight': expected a finite number"),
]


@pytest.mark.parametrize(
    "overrides, reason",
    BAD_OVERRIDES,
    ids=[f"{k}={v!r:.20}" for (o, _) in BAD_OVERRIDES for k, v in o.items()],
)
def test_override_out_of_range_is_an_item_error_naming_the_field(overrides, reason):
    with pytest.raises(ItemError, match=reason):
        check_overrides(overrides)


def test_every_recipe_field_has_a_range_check():
    import dataclasses

    from pyinvert.optim.recipes import Recipe, get_recipe

    base = get_recipe("cvpr2015")
    for f in dataclasses.fields(Recipe):
        if f.name in ("name", "extra"):
            continue
        value = getattr(base, f.name)
        value = [[s.lr, s.iterations] for s in value] if f.name == "stages" else value
        assert f.name in check_overrides({f.name: value})  # the defaults pass


def test_bad_overrides_fail_their_items_and_the_others_run(tmp_path):
    write_photo(tmp_path / "a.png")
    rows = [{"id": "good", "image": "a.png", "rep": "hog", "overrides": {"tv_weight": 2.0}}]
    rows += [
        {"id": f"bad{i}", "image": "a.png", "rep": "hog", "overrides": o}
        for i, (o, _) in enumerate(BAD_OVERRIDES)
    ]
    out = tmp_path / "o"
    # JSON lines (NaN / Infinity are JSON extensions the manifest reader accepts).
    assert run_job(write_jsonl(tmp_path / "m.jsonl", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["good"]["status"] == "ok"
    assert (out / by_id["good"]["reconstruction"]).is_file()
    for i, (_, reason) in enumerate(BAD_OVERRIDES):
        row = by_id[f"bad{i}"]
        assert row["status"] == "failed" and re.search(reason, row["error"]), row
        assert "\n" not in row["error"]
        assert not list((out / "items" / f"bad{i}").glob("*.png"))


# ---- 3. non-finite pixels: one clear reason ------------------------------------------------


def write_float_tiff(path, value, size=48, where=(5, 7)):
    image = (
        cv2.resize(
            cv2.imread(str(pyinvert.data.sample_path("chelsea")), cv2.IMREAD_GRAYSCALE),
            (size, size),
        ).astype(np.float32)
        / 255
    )
    image[where] = value
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize("rep", ["hog", "hogb", "dsift"])
def test_non_finite_pixels_fail_the_item_with_that_reason(tmp_path, rep):
    write_float_tiff(tmp_path / "nan.tiff", np.nan)
    write_float_tiff(tmp_path / "inf.tiff", np.inf)
    write_float_tiff(tmp_path / "ninf.tiff", -np.inf)
    write_float_tiff(tmp_path / "fine.tiff", 0.5)
    rows = [{"id": n, "image": f"{n}.tiff", "rep": rep} for n in ("nan", "inf", "ninf", "fine")]
    out = tmp_path / "o"
    assert run_job(write_csv(tmp_path / "m.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["fine"]["status"] == "ok"
    for name in ("nan", "inf", "ninf"):
        error = by_id[name]["error"]
        # The detail is batch's own check ("1 of 2304 values are NaN (1) or infinite (0)") or,
        # where pyinvert.io.load_image refuses such images itself, its message.
        assert re.match(rf"non-finite pixel values in .*/{name}\.tiff: .*\b1\b", error), error
        assert "flat image" not in error and "diverged" not in error and "\n" not in error


def test_non_finite_pixels_found_when_the_image_is_read_again(tmp_path, monkeypatch):
    # Images not kept in memory are read again when their batch runs: checked there too.
    monkeypatch.setattr(prepare, "KEEP_VALUES", 0)
    write_photo(tmp_path / "a.png")
    write_float_tiff(tmp_path / "b.tiff", 0.5)
    rows = [
        {"id": "a", "image": "a.png", "rep": "hog"},
        {"id": "b", "image": "b.tiff", "rep": "hog"},
    ]
    real = prepare.load_checked
    calls = {"b": 0}

    def loader(path, final=True):
        if path.name == "b.tiff":
            calls["b"] += 1
            if calls["b"] == 2:  # the second read: the file now holds a NaN
                write_float_tiff(path, np.nan)
        return real(path, final)

    monkeypatch.setattr(prepare, "load_checked", loader)
    monkeypatch.setattr("pyinvert.batch.execute.load_checked", loader)
    out = tmp_path / "o"
    assert run_job(write_csv(tmp_path / "m.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["a"]["status"] == "ok"
    assert re.match(r"non-finite pixel values in .*/b\.tiff: ", by_id["b"]["error"])


def test_pixels_that_overflow_the_representation_are_out_of_range(tmp_path):
    # A finite float pixel far outside [0, 1] becomes Inf in the representation's scale.
    write_float_tiff(tmp_path / "huge.tiff", 3e38)
    write_photo(tmp_path / "a.png")
    rows = [
        {"id": "huge", "image": "huge.tiff", "rep": "hog"},
        {"id": "a", "image": "a.png", "rep": "hog"},
    ]
    out = tmp_path / "o"
    assert run_job(write_csv(tmp_path / "m.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["a"]["status"] == "ok"
    assert re.match(
        r"pixel values out of range: .*huge\.tiff has values in \[0\.\d+, 3e\+38\], "
        r"which the representation 'hog' turns into NaN/Inf \(expected \[0, 1\]\)$",
        by_id["huge"]["error"],
    ), by_id["huge"]["error"]


def test_a_code_that_is_not_finite_is_said_so(tmp_path, monkeypatch):
    import pyinvert.representations as reps
    from tests.test_batch import TinyCNN

    class Overflowing(TinyCNN):
        def forward(self, x):
            return super().forward(x) * float("inf")

    real = reps.make_representation
    monkeypatch.setattr(
        reps,
        "make_representation",
        lambda name, **kw: Overflowing() if name == "cnn:tiny:inf" else real(name, **kw),
    )
    write_photo(tmp_path / "a.png", size=32)
    rows = [
        {"id": "inf", "image": "a.png", "rep": "cnn:tiny:inf"},
        {"id": "a", "image": "a.png", "rep": "hog"},
    ]
    out = tmp_path / "o"
    assert run_job(write_csv(tmp_path / "m.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["a"]["status"] == "ok"
    assert by_id["inf"]["error"] == (
        "the representation's code of the image is not finite "
        "(NaN or Inf): the image cannot be inverted"
    )


# ---- 6. folder names are injective -------------------------------------------------------


def test_an_id_that_looks_like_a_hashed_folder_gets_its_own(tmp_path):
    assert item_slug("a b") == "a_b-c8687a08aa"
    assert item_slug("a_b-c8687a08aa") != item_slug("a b")
    write_photo(tmp_path / "a.png")
    write_photo(tmp_path / "b.png", "coffee")
    rows = [
        {"id": "a b", "image": "a.png", "rep": "hog"},
        {"id": "a_b-c8687a08aa", "image": "b.png", "rep": "hog"},
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    out = tmp_path / "o"
    assert run_job(manifest, out) == 0
    records = {json.loads(p.read_text())["id"] for p in (out / "items").glob("*/item.json")}
    assert records == {"a b", "a_b-c8687a08aa"}
    # A rerun skips both (before, each run overwrote the other's folder: a flip-flop).
    job = pb.run_batch(manifest, out, steps=3, verbose=False)
    assert job["skipped"] == 2 and job["done_this_run"] == 0


@pytest.mark.parametrize(
    "text, match",
    [
        (
            '{"id": 1.5, "image": "a.png", "rep": "hog"}\n'
            '{"id": 1.5, "image": "b.png", "rep": "hog"}\n',
            r"line 2: field 'id': duplicate id '1.5' \(first on line 1\)",
        ),
        (
            '{"id": 2, "image": "a.png", "rep": "hog"}\n'
            '{"id": "2", "image": "b.png", "rep": "hog"}\n',
            r"line 2: field 'id': duplicate id '2'",
        ),
        (
            '{"id": NaN, "image": "a.png", "rep": "hog"}\n',
            r"line 1: field 'id': expected a string or a finite number, got nan",
        ),
        (
            '{"id": "Cat", "image": "a.png", "rep": "hog"}\n'
            '{"id": "cat", "image": "b.png", "rep": "hog"}\n',
            r"line 2: field 'id': id 'cat' would share the folder items/cat with id 'Cat' \(line 1\) "
            r"on a case-insensitive file system",
        ),
        (
            '{"id": "A b", "image": "a.png", "rep": "hog"}\n{"id": "A_B-C8687A08AA", "image": "b", '
            '"rep": "hog"}\n{"id": "a b", "image": "c.png", "rep": "hog"}\n',
            None,
        ),
    ],
)
def test_ids_that_would_share_a_folder_reject_the_manifest(tmp_path, text, match):
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    if match is None:  # distinct folders, even ignoring case
        items = read_manifest(path)
        assert len({i.slug.casefold() for i in items}) == len(items) == 3
        return
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_a_hash_collision_is_caught_after_sanitizing(tmp_path, monkeypatch):
    # Force every hashed name to collide: the check after sanitizing still catches it.
    monkeypatch.setattr(manifest_mod, "item_slug", lambda item_id: "same")
    path = write_csv(
        tmp_path / "m.csv",
        [
            {"id": "x y", "image": "a.png", "rep": "hog"},
            {"id": "x/y", "image": "b.png", "rep": "hog"},
        ],
    )
    with pytest.raises(
        ManifestError,
        match=r"line 3: field 'id': id 'x/y' would share the "
        r"folder items/same with id 'x y' \(line 2\)$",
    ):
        read_manifest(path)


# ---- 15. every count is bounded; SIGTERM works during set-up -------------------------------


@pytest.mark.parametrize(
    "text, suffix, match",
    [
        (
            '{"id": "a", "image": "a.png", "rep": "hog", "restarts": 1e300}\n',
            ".jsonl",
            r"line 1: field 'restarts': expected an integer in \[1, 100\], got 1e\+300",
        ),
        (
            '{"id": "a", "image": "a.png", "rep": "hog", "restarts": Infinity}\n',
            ".jsonl",
            r"line 1: field 'restarts': expected an integer in \[1, 100\], got inf",
        ),
        (
            "id,image,rep,restarts\na,a.png,hog,1e300\n",
            ".csv",
            r"line 2: field 'restarts': expected an integer in \[1, 100\], got '1e300'",
        ),
        ("id,image,rep,restarts\na,a.png,hog,101\n", ".csv", r"line 2: field 'restarts'"),
    ],
)
def test_restarts_are_bounded_in_the_manifest(tmp_path, text, suffix, match):
    path = tmp_path / f"m{suffix}"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--restarts", "1000"], r"expected restarts to be an int in \[1, 100\], got 1000"),
        (["--steps", str(10**9)], r"expected steps to be an int in \[1, 100000\]"),
        (["--batch-size", str(10**6)], r"expected batch_size to be an int in \[1, 4096\]"),
        (["--max-batch-pixels", str(2**40)], r"expected max_batch_pixels to be an int in"),
    ],
)
def test_job_options_are_bounded(tmp_path, capsys, args, match):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    assert command.main([str(manifest), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.startswith("pyinvert batch: error: "), err
    assert not (tmp_path / "o").exists()


def test_item_and_image_counts_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_mod, "MAX_ITEMS", 2)
    path = write_csv(
        tmp_path / "m.csv", [{"id": str(i), "image": "a.png", "rep": "hog"} for i in range(3)]
    )
    with pytest.raises(ManifestError, match=r"3 items, more than the 2 a job takes"):
        read_manifest(path)
    monkeypatch.setattr(manifest_mod, "MAX_MANIFEST_BYTES", path.stat().st_size - 1)
    with pytest.raises(ManifestError, match=r"\d+ bytes, more than the \d+ a manifest may have"):
        read_manifest(path)
    monkeypatch.setattr(manifest_mod, "MAX_MANIFEST_BYTES", 1 << 28)
    monkeypatch.setattr(prepare, "MAX_IMAGE_PIXELS", 40 * 40)
    write_photo(tmp_path / "a.png", size=40)
    write_photo(tmp_path / "b.png", size=41)
    rows = [
        {"id": "a", "image": "a.png", "rep": "hog"},
        {"id": "b", "image": "b.png", "rep": "hog"},
    ]
    out = tmp_path / "o"
    assert run_job(write_csv(tmp_path / "m2.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["a"]["status"] == "ok"
    assert re.match(
        r"image too large: .*b\.png is 41x41 pixels, more than the 1600 a batch "
        r"item takes$",
        by_id["b"]["error"],
    )
    monkeypatch.setattr(prepare, "MAX_BATCH_PIXELS_LIMIT", 3 * 40 * 40)
    rows = [
        {"id": "r3", "image": "a.png", "rep": "hog", "restarts": 3},
        {"id": "r4", "image": "a.png", "rep": "hog", "restarts": 4},
    ]
    assert run_job(write_csv(tmp_path / "m3.csv", rows), out) == 1
    by_id = items_by_id(out)
    assert by_id["r3"]["status"] == "ok"
    assert by_id["r4"]["error"] == (
        "image too large for 4 restarts: 40x40 pixels x 4 is more "
        "than the 4800 pixels one optimization takes"
    )


# A job whose set-up step ("manifest": reading the manifest, "hash": checking the items'
# images, "model": loading a representation) takes forever in Python code, as a very large
# manifest, a slow disk or a large model would; it writes a marker when it gets there.
SLOW_SETUP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pyinvert.batch.job as job, pyinvert.batch.store as store
    import pyinvert.representations as reps
    phase, marker = sys.argv[1], Path(sys.argv[2])

    def forever(*args, **kwargs):
        marker.write_text(phase)
        n = 0
        while True:
            n += 1

    if phase == "manifest":
        job.read_manifest = forever
    elif phase == "hash":
        store.image_digest = forever
    else:
        reps.make_representation = forever
    from pyinvert.batch.command import main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("phase", ["manifest", "hash", "model"])
def test_sigterm_stops_the_job_during_set_up(tmp_path, phase):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    out, marker = tmp_path / "o", tmp_path / "marker"
    proc = subprocess.Popen(
        [
            PYTHON,
            "-c",
            SLOW_SETUP,
            phase,
            str(marker),
            str(manifest),
            "--out",
            str(out),
            "--steps",
            "2",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    if phase == "manifest":
        assert (
            stderr.strip() == "pyinvert batch: stopped by SIGTERM during set-up; nothing "
            "was written"
        )
        assert not out.exists()
    else:
        assert "stopped by SIGTERM; finished items are kept" in stderr
        summary, _ = read_summary(out)
        assert summary["job"]["interrupted"] is True and summary["job"]["pending"] == 1
        assert not (out / "items").exists() or not list((out / "items").iterdir())


# ---- errors raised by batch name it ----------------------------------------------------------


def test_errors_raised_by_batch_name_it(tmp_path):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    out = tmp_path / "o"
    for kwargs, match in [
        ({"steps": 0}, r"^batch: expected steps"),
        ({"restarts": True}, r"^batch: expected restarts"),
        ({"recipe": "eccv2099"}, r"^batch: expected recipe in"),
        ({"backend": "gpu"}, r"^batch: expected backend"),
        ({"seed": 1.5}, r"^batch: expected seed"),
        ({"device": "tpu9"}, r"^batch: expected device"),
    ]:
        with pytest.raises(pb.UsageError, match=match):
            pb.run_batch(manifest, out, verbose=False, **kwargs)
    with pytest.raises(ManifestError, match=r"^batch: invalid manifest"):
        pb.run_batch(tmp_path / "none.csv", out, verbose=False)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(pb.UsageError, match=r"^batch: cannot write the output folder .*file/o"):
        pb.run_batch(manifest, tmp_path / "file" / "o", verbose=False)
    out.mkdir()
    lock = store.JobLock(out)
    assert lock.acquire()
    try:
        with pytest.raises(pb.JobLocked, match=r"^batch: another job is writing"):
            pb.run_batch(manifest, out, verbose=False)
    finally:
        lock.release()


def test_a_bad_torchrun_environment_is_a_usage_error(tmp_path, monkeypatch, capsys):
    write_photo(tmp_path / "a.png")
    manifest = write_csv(tmp_path / "m.csv", [{"id": "a", "image": "a.png", "rep": "hog"}])
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert command.main([str(manifest), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        "pyinvert batch: error: expected $WORLD_SIZE to be an "
        "integer (as torchrun sets it), got 'two'\n"
    )
