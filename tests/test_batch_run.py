"""``pyinvert batch``: grouping and batching, CNN-style items, resume after kills, torchrun."""

import json
import signal
import subprocess

import cv2
import numpy as np
import pytest

from pyinvert import batch as pb
from pyinvert.batch import command, job as batch_job
from tests.test_batch import (
    INVERT_MODULE,
    PYTHON,
    ROOT,
    InvertSpy,
    MissingWeights,
    TinyCNN,
    _done_items,
    _env,
    _start,
    _wait_for_items,
    check_no_partial_files,
    good_and_bad_rows,
    many_items,
    read_summary,
    write_csv,
    write_photo,
)


# ---- grouping and batching ------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch):
    s = InvertSpy()
    monkeypatch.setattr(INVERT_MODULE, "invert", s)
    return s


def test_items_of_one_kind_run_in_ceil_n_over_batch_calls(tmp_path, spy):
    rows = many_items(tmp_path, 11)
    manifest = write_csv(tmp_path / "m.csv", rows)
    job = pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=4, verbose=False)
    assert job["exit_status"] == 0 and job["ok"] == 11
    assert sorted(c[0] for c in spy.calls) == [3, 4, 4]  # ceil(11 / 4) = 3 calls


def test_groups_split_by_size_rep_and_restarts(tmp_path, spy):
    rows = many_items(tmp_path, 6, sizes=(40, 48))
    rows += [
        {"id": "d", "image": "p0.png", "rep": "dsift"},
        {"id": "r2", "image": "p0.png", "rep": "hog", "restarts": 2},
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    job = pb.run_batch(manifest, tmp_path / "o", steps=2, batch_size=8, verbose=False)
    assert job["ok"] == 8
    assert sorted(spy.calls) == sorted(
        [(3, (40, 40), 1), (3, (48, 48), 1), (1, (40, 40), 1), (1, (40, 40), 2)]
    )


def test_pixel_budget_splits_batches(tmp_path, spy):
    manifest = write_csv(tmp_path / "m.csv", many_items(tmp_path, 5))
    pb.run_batch(
        manifest, tmp_path / "o", steps=2, batch_size=8, verbose=False, max_batch_pixels=2 * 40 * 40
    )
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
    rows = [
        {"id": "a", "image": "a.png", "rep": "cnn:tiny:conv1"},
        {"id": "b", "image": "b.png", "rep": "cnn:tiny:conv1"},
        {"id": "layer", "image": "a.png", "rep": "cnn:tiny:fc9"},
        {"id": "weights", "image": "a.png", "rep": "cnn:nosuchweights:conv1"},
    ]
    out = tmp_path / "o"
    job = pb.run_batch(write_csv(tmp_path / "m.csv", rows), out, steps=3, verbose=False)
    summary, _ = read_summary(out)
    by_id = {r["id"]: r for r in summary["items"]}
    assert by_id["a"]["status"] == by_id["b"]["status"] == "ok"
    assert cv2.imread(str(out / by_id["a"]["reconstruction"]), cv2.IMREAD_UNCHANGED).shape == (
        32,
        32,
        3,
    )
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

    write_photo(tmp_path / "p0.png", "rocket", size=40)  # changed input
    (out / "items" / "item001" / "reconstruction.png").write_bytes(b"broken")  # damaged output
    (out / "items" / "item002" / "item.json").unlink()  # no done marker
    third = pb.run_batch(manifest, out, steps=2, verbose=False)
    assert third["done_this_run"] == 3 and third["skipped"] == 1
    assert sorted(c[0] for c in s.calls) == [3]
    summary, _ = read_summary(out)
    runs = {r["id"]: r["run_id"] for r in summary["items"]}
    assert runs["item003"] == run1 and {runs[f"item00{i}"] for i in range(3)} == {third["run_id"]}
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
    first = {
        name: json.loads((out / "items" / name / "item.json").read_text()) for name in done_first
    }
    run1 = {r["run_id"] for r in first.values()}
    assert len(run1) == 1

    result = subprocess.run(
        [PYTHON, "-m", "pyinvert.batch", str(manifest), "--out", str(out), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
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
            assert record == first[r["id"]]  # untouched by the second run
        else:
            assert record["run_id"] == run2  # done (once) by the second run
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
        [
            PYTHON,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "pyinvert.batch",
            str(manifest),
            "--out",
            str(two),
            "--steps",
            "5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "[rank 0]" in result.stdout and "[rank 1]" in result.stdout, result.stderr
    assert result.returncode == 1  # torchrun: some process exited non-zero (items failed)
    s1, _ = read_summary(one)
    s2, csv2 = read_summary(two)
    assert [r["id"] for r in csv2] == [r["id"] for r in rows]  # one summary, every item
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
