"""Issue 11 (hardening) on the command line: each failure of the issue reproduced, then its
variants. Tiny settings: 40-px images, 2 HOG steps; CNN commands with random weights, 64 px."""

import errno
import json
import os
import subprocess
import sys
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

import pyinvert
from pyinvert import cli, io
from tests.test_cli import write_photo

FAST = ["--steps", "2", "--no-progress"]
TINY = ["--weights", "random", "--size", "64", "--steps", "2", "--no-progress"]


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    c = capsys.readouterr()
    assert "Traceback" not in c.err
    return rc, c.out, c.err


def error_lines(err):
    lines = err.strip().splitlines()
    for line in lines:
        assert line.startswith("pyinvert: error: ") and len(line) < 700, line
    return lines


def summary(out):
    return json.loads((out / "summary.json").read_text())


def png_header(width, height):
    """A PNG file of a few bytes whose header says width x height (a decompression bomb)."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">II5B", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_work(monkeypatch):
    """Any optimization started fails the test: the checks must come before any work."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before the checks")

    for name in ("invert", "actmax", "caricature", "dream", "invariance_map"):
        monkeypatch.setattr(pyinvert, name, boom)


# ---- 3. non-finite pixels -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_pixels_are_a_per_input_error(tmp_path, capsys, value):
    good = write_photo(tmp_path / "good.png")
    a = np.full((40, 40, 3), 0.5, np.float32)
    a[3, 4, 0] = float(value)
    assert cv2.imwrite(str(tmp_path / "bad.tiff"), a)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "invert", good, tmp_path / "bad.tiff", "--out", out, *FAST)
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: load_image: {tmp_path / 'bad.tiff'} has 1 "
        f"non-finite pixel value(s) (NaN or Inf); expected finite "
        f"values in [0, 1]"
    ]
    assert "bad:" not in stdout and "good: feature error" in stdout
    s = summary(out)
    assert set(s["images"]) == {"good"} and list(s["errors"]) == [str(tmp_path / "bad.tiff")]
    assert not (out / "bad.png").exists()


def test_non_finite_pixels_in_the_cnn_commands(tmp_path, capsys):
    a = np.full((64, 64, 3), 0.5, np.float32)
    a[0, 0, 2] = np.nan
    assert cv2.imwrite(str(tmp_path / "bad.tiff"), a)
    good = write_photo(tmp_path / "good.png", size=64)
    for command in (
        ["caricature", "--layer", "features.3"],
        ["invert", "--rep", "cnn:mobilenet_v2:features.3"],
    ):
        out = tmp_path / command[0]
        rc, _, err = run(capsys, *command, good, tmp_path / "bad.tiff", "--out", out, *TINY)
        assert rc == 1 and "bad.tiff has 1 non-finite pixel value(s)" in err
        assert len(error_lines(err)) == 1


# ---- 5. output names ------------------------------------------------------------------------


def _records(out):
    s = summary(out)
    return {r["image"]: r for r in s["images"].values()}


def test_same_stems_get_their_own_outputs(tmp_path, capsys):
    """`a/cat.png b/cat.png cat-1.png` wrote two results and silently dropped one."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [
        write_photo(tmp_path / "a" / "cat.png", size=40),
        write_photo(tmp_path / "b" / "cat.png", size=48),
        write_photo(tmp_path / "cat-1.png", size=56),
    ]
    out = tmp_path / "out"
    rc, _, err = run(capsys, "invert", *paths, "--out", out, *FAST)
    assert rc == 0, err
    records = _records(out)
    assert set(records) == set(paths)
    files = set()
    for path, size in zip(paths, (40, 48, 56)):
        r = records[path]["results"][0]
        assert cv2.imread(str(out / r["reconstruction"]), cv2.IMREAD_UNCHANGED).shape[:2] == (
            size,
            size,
        )
        files |= {r["reconstruction"], r["figure"]}
    assert len(files) == 6


def test_an_input_named_like_another_inputs_output(tmp_path, capsys):
    """`foo.png foo-figure.png` overwrote foo's figure; `summary.png` had its JSON replaced
    by the run summary; `x.png x-r0.png` with restarts."""
    paths = [
        write_photo(tmp_path / "foo.png", size=40),
        write_photo(tmp_path / "foo-figure.png", size=48),
        write_photo(tmp_path / "summary.png", size=56),
    ]
    out = tmp_path / "out"
    rc, _, err = run(capsys, "invert", *paths, "--out", out, *FAST)
    assert rc == 0, err
    records = _records(out)
    foo, figure, summ = (records[p]["results"][0] for p in paths)
    assert foo["figure"] == "foo-figure.png" and figure["reconstruction"] != "foo-figure.png"
    assert cv2.imread(str(out / "foo-figure.png")).shape[1] > 3 * 40  # foo's figure, intact
    assert cv2.imread(str(out / figure["reconstruction"])).shape[:2] == (48, 48)
    assert summ["reconstruction"] == "summary-1.png"
    assert "settings" in summary(out)  # the run summary, not summary.png's record
    assert (
        json.loads((out / (summ["reconstruction"][:-4] + ".json")).read_text())["image"] == paths[2]
    )
    paths = [write_photo(tmp_path / "x.png", size=40), write_photo(tmp_path / "x-r0.png", size=48)]
    out = tmp_path / "restarts"
    rc, _, err = run(capsys, "invert", *paths, "--restarts", "2", "--out", out, *FAST)
    assert rc == 0, err
    assert cv2.imread(str(out / "x-r0.png")).shape[:2] == (40, 40)
    assert (
        len(
            {
                f
                for r in _records(out).values()
                for e in r["results"]
                for f in (e["reconstruction"], e["figure"])
            }
        )
        == 8
    )


def test_inputs_inside_the_output_folder_are_never_overwritten(tmp_path, capsys):
    paths = [
        write_photo(tmp_path / "cat.png", size=40),
        write_photo(tmp_path / "CAT-figure.png", size=48),
        write_photo(tmp_path / "summary.json.png", size=40),
    ]
    before = {p: open(p, "rb").read() for p in paths}
    rc, _, err = run(capsys, "invert", *paths, "--out", tmp_path, *FAST)
    assert rc == 0, err
    assert {p: open(p, "rb").read() for p in paths} == before
    assert len(_records(tmp_path)) == 3


def test_cnn_commands_names(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    paths = [write_photo(tmp_path / n, size=64) for n in ("a/x.png", "x.png", "x-window.png")]
    out = tmp_path / "cnn"
    rc, _, err = run(
        capsys,
        "invert",
        *paths,
        "--rep",
        "cnn:mobilenet_v2:features.3",
        "--window",
        "2",
        "--out",
        out,
        *TINY,
    )
    assert rc == 0, err
    names = summary(out)["images"]
    assert sorted(names.values()) == sorted(paths) and len(names) == 3
    files = {f for n in names for f in (f"{n}.png", f"{n}-window.png")}
    assert len(files) == 6 and all((out / "features.3" / f).is_file() for f in files)
    out = tmp_path / "car"
    rc, stdout, err = run(
        capsys, "caricature", *paths[:2], "--layer", "features.3", "--out", out, *TINY
    )
    assert rc == 0, err
    assert (out / "x.png").is_file() and (out / "x-1.png").is_file()
    assert "x-1: caricature" in stdout


# ---- 7. a full disk while writing -----------------------------------------------------------


def failing_writes(monkeypatch, names):
    real = io.atomic_write_bytes

    def write(path, data):
        if os.path.basename(path) in names:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(io, "atomic_write_bytes", write)


def test_full_disk_at_the_summary_keeps_the_old_one(tmp_path, capsys, monkeypatch):
    cat = write_photo(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert run(capsys, "invert", cat, "--out", out, *FAST)[0] == 0
    old = (out / "summary.json").read_text()
    failing_writes(monkeypatch, {"summary.json"})
    rc, stdout, err = run(
        capsys, "invert", cat, write_photo(tmp_path / "dog.png"), "--out", out, *FAST
    )
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: cannot write {out / 'summary.json'}: No "
        f"space left on device (the previous summary, if any, is kept)"
    ]
    assert (out / "summary.json").read_text() == old and (out / "dog.json").is_file()


def test_out_of_memory_in_one_inputs_figure_keeps_the_others(tmp_path, capsys, monkeypatch):
    """8000^2 wrote the reconstruction, then died (in SSIM) with no JSON: a failure while
    finishing one input's results is that input's error."""
    real = pyinvert.metrics.ssim

    def ssim(x, y, *args, **kwargs):
        if x.shape[-1] == 48:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(pyinvert.metrics, "ssim", ssim)
    paths = [write_photo(tmp_path / "big.png", size=48), write_photo(tmp_path / "dog.png")]
    rc, stdout, err = run(capsys, "invert", *paths, "--out", tmp_path / "out", *FAST)
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: cannot finish the results of {paths[0]}: "
        f"RuntimeError: DefaultCPUAllocator: not enough memory"
    ]
    assert set(summary(tmp_path / "out")["images"]) == {"dog"}


def test_full_disk_for_one_input_keeps_the_others(tmp_path, capsys, monkeypatch):
    failing_writes(monkeypatch, {"cat-figure.png"})
    paths = [write_photo(tmp_path / "cat.png"), write_photo(tmp_path / "dog.png")]
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "invert", *paths, "--out", out, *FAST)
    assert rc == 1
    assert error_lines(err) == [
        f"pyinvert: error: cannot write the results of {paths[0]} into "
        f"{out}: No space left on device"
    ]
    s = summary(out)
    assert set(s["images"]) == {"dog"} and list(s["errors"]) == [paths[0]]
    assert "dog: feature error" in stdout


@pytest.mark.parametrize(
    "command,fail",
    [
        (["caricature", "--layer", "features.3"], "result.json"),
        (["dream", "--layer", "features.3", "--octaves", "1"], "cat-dream.png"),
        (["invert", "--rep", "cnn:mobilenet_v2:features.3"], "layers.png"),
        (["invert", "--rep", "cnn:mobilenet_v2:features.3"], "result.json"),
        (["actmax", "--layer", "features.3", "--channel", "1"], "actmax.png"),
    ],
)
def test_full_disk_in_the_cnn_commands(tmp_path, capsys, monkeypatch, command, fail):
    failing_writes(monkeypatch, {fail})
    images = [] if command[0] == "actmax" else [write_photo(tmp_path / "cat.png", size=64)]
    rc, _, err = run(capsys, *command, *images, "--out", tmp_path / "o", *TINY)
    assert rc == 1
    (line,) = error_lines(err)
    assert "No space left on device" in line and "cannot write" in line


# ---- 8. the output folder, checked before any work ------------------------------------------

COMMANDS = [
    ["invert"],
    ["invert", "--rep", "cnn:mobilenet_v2:features.3"],
    ["caricature", "--layer", "features.3"],
    ["dream", "--layer", "features.3"],
    ["actmax", "--class", "1"],
    ["reproduce", "table1"],
]


def _images(command, tmp_path):
    return (
        []
        if command[0] == "actmax"
        else [write_photo(tmp_path / f"{n}.png", n, size=64) for n in ("chelsea", "coffee")]
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_out_is_a_file_or_under_a_file(tmp_path, capsys, no_work, command):
    images = _images(command, tmp_path)
    (tmp_path / "file").write_text("x")
    extra = FAST if command in (["invert"], ["reproduce", "table1"]) else TINY
    rc, stdout, err = run(capsys, *command, *images, "--out", tmp_path / "file", *extra)
    assert rc == 2 and stdout == ""
    assert error_lines(err) == [
        f"pyinvert: error: --out {tmp_path / 'file'} is a file, expected a folder"
    ]
    rc, stdout, err = run(capsys, *command, *images, "--out", tmp_path / "file" / "sub", *extra)
    assert rc == 2 and stdout == ""
    assert error_lines(err) == [
        f"pyinvert: error: cannot create the output folder "
        f"{tmp_path / 'file' / 'sub'}: a part of that path is a file"
    ]


def test_out_not_writable(tmp_path, capsys, no_work):
    cat = write_photo(tmp_path / "cat.png")
    if os.geteuid() == 0:  # root writes anywhere chmod allows: use a kernel folder
        target, reason = "/sys/kernel", "Permission denied"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target, reason = tmp_path / "ro", "Permission denied"
    rc, stdout, err = run(capsys, "invert", cat, "--out", target, *FAST)
    assert rc == 2 and stdout == ""
    assert error_lines(err) == [
        f"pyinvert: error: cannot write into the output folder {target}: {reason}"
    ]
    rc, _, err = run(capsys, "invert", cat, "--out", "/sys/kernel/pyinvert-test", *FAST)
    assert rc == 2 and "cannot create the output folder /sys/kernel/pyinvert-test" in err
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    rc, _, err = run(capsys, "invert", cat, "--out", tmp_path / "broken", *FAST)
    assert rc == 2 and error_lines(err) == [
        f"pyinvert: error: --out {tmp_path / 'broken'} is a broken symbolic link, expected a folder"
    ]


def test_out_on_a_full_disk_is_found_before_any_work(tmp_path):
    """A file-size limit of 8 KiB (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full
    disk) in a fresh process: the probe fails, nothing is optimized."""
    cat = write_photo(tmp_path / "cat.png")
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
        "from pyinvert.cli import main\n"
        f"sys.exit(main(['invert', {cat!r}, '--out', {str(tmp_path / 'o')!r}, '--steps', "
        f"'2', '--no-progress']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"pyinvert: error: cannot write into the output folder {tmp_path / 'o'}: File too large\n"
    )


# ---- 9. devices -----------------------------------------------------------------------------


def _bad_devices():
    n, expected = torch.cuda.device_count(), "expected cpu, cuda or cuda:N"
    return [
        ("foo", expected),
        ("cuda:x", expected),
        ("meta", expected),
        ("", expected),
        ("cuda", "CUDA is not available here")
        if not torch.cuda.is_available()
        else (f"cuda:{n}", f"no such GPU; {n} CUDA device(s) visible"),
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_bad_device_is_one_line_before_any_work(tmp_path, capsys, no_work, command):
    images = _images(command, tmp_path)
    for device, message in _bad_devices():
        rc, stdout, err = run(
            capsys, *command, *images, "--device", device, "--out", tmp_path / "o", "--no-progress"
        )
        assert rc == 2 and stdout == ""
        (line,) = error_lines(err)
        assert line.startswith("pyinvert: error: --device ") and message in line


@pytest.mark.parametrize(
    "command",
    [["invert"], ["caricature", "--model", "mobilenet_v2", "--layer", "features.3", *TINY[:4]]],
)
def test_an_unreadable_input_inside_out_is_never_overwritten(tmp_path, capsys, command):
    # Found by tests/test_cli_fuzz.py: `summary.png.png` (readable) and out/summary.png.png
    # (corrupt) - the first input's reconstruction `summary.png.png` took the second's path.
    out = tmp_path / "out"
    out.mkdir()
    write_photo(tmp_path / "summary.png.png")
    bad = out / "summary.png.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    before = bad.read_bytes()
    extra = FAST if command == ["invert"] else ["--steps", "2", "--no-progress"]
    rc, _, _ = run(capsys, *command, tmp_path / "summary.png.png", bad, *extra, "--out", out)
    assert rc == 1 and bad.read_bytes() == before
