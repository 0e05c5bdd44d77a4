"""A fuzz of the command line over file names and output folders (hypothesis).

Names: unicode, spaces, leading dashes, dots, "..", very long names, names equal to the CLI's
own outputs (summary.json, *-figure.png, *-r0.png, *.json), case variants; inputs in several
folders and inside the output folder; some inputs corrupt or missing. Output folders: new and
nested, the inputs' own folder, with "..", an existing file, under a file.

Checked on every run: exit status 0 (all inputs done), 1 (some failed) or 2 (nothing could be
done / a bad output folder), as documented; no traceback; every error on one line; every input
has its outputs (its own size: no other input wrote them) or an error line naming it; no input
file is changed; no file is claimed by two inputs.
"""

import contextlib
import io as _io
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pyinvert import cli
from pyinvert.io import load_image
from pyinvert.cli.common import shown

SPECIAL = [
    "summary",
    "summary.json",
    "cat-figure",
    "cat",
    "Cat",
    "CAT-FIGURE",
    "cat-1",
    "cat-r0",
    "cat.json",
    "-",
    "--",
    "-x",
    "--out",
    "..",
    ".",
    "...",
    " ",
    " cat ",
    ".hidden",
    "x" * 200,
    "\u00e9" * 120,
    "caf\u00e9",
    "cafe\u0301",
    "\u732b",
    "a b",
    "\U0001f408",
    "layers",
    "result",
    "new\nline",
    "tab\there",
    os.fsdecode(b"bad\xff"),
]

name_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=40,
)
stems = st.one_of(st.sampled_from(SPECIAL), name_text)
kinds = st.sampled_from(["ok", "ok", "ok", "corrupt", "missing", "folder"])
folders = st.sampled_from(["", "a", "b", "a/..", "out", "sp ace", "-d"])
inputs = st.lists(
    st.tuples(stems, kinds, folders, st.sampled_from([".png", ".PNG", ".jpg", ".png.png", ""])),
    min_size=1,
    max_size=5,
)
outs = st.sampled_from(
    [
        "out",
        "out/deeper/\u00e9 x",
        "a",
        "",
        "a/../out2",
        "-o",
        "file",
        "file/sub",
        "out/..",
        "sp ace/-",
    ]
)


def _fit(stem, suffix):
    """A valid file name (at most 255 bytes; not "." or "..")."""
    name = stem + suffix
    while len(os.fsencode(name)) > 250:
        stem = stem[:-1]
        name = stem + suffix
    return None if name in ("", ".", "..") else name


def _write_image(path, size, corrupt):
    if corrupt:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
        return
    rng = np.random.default_rng(size)
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (size, size), dtype=np.uint8))
    path.write_bytes(buf.tobytes())


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples here and in CI; the regressions found are tests
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(inputs, outs)
def test_cli_names_fuzz(spec, out_name):
    root = Path(tempfile.mkdtemp(prefix="pyinvert-fuzz-"))
    try:
        _check(root, spec, out_name)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _main(argv):
    """(exit status, error lines) of the command line on ``argv``; no traceback, every error
    on one line."""
    stdout, stderr = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    err = stderr.getvalue()
    event(f"exit status {rc}")
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("pyinvert: error: ") for line in lines), err
    return rc, lines


def _make_inputs(root, spec):
    """The input files of ``spec``: (paths as given, {path: side} of the readable ones)."""
    for d in ("a", "b", "out", "sp ace", "-d"):
        (root / d).mkdir(exist_ok=True)
    (root / "file").write_text("not a folder")
    paths, expect, sizes, seen = [], {}, {}, {}
    for k, (stem, kind, folder, suffix) in enumerate(spec):
        name = _fit(stem, suffix)
        if name is None:
            continue
        path = root / folder / name if folder else root / name
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:  # the same file twice
            paths.append(seen[key])
            continue
        if os.path.lexists(path):  # e.g. "a" (a folder of the test) or "file"
            continue
        seen[key] = str(path)
        size = 8 + k  # each input its own size: a PNG of another size was written by another
        if kind in ("ok", "corrupt"):
            _write_image(path, size, kind == "corrupt")
        elif kind == "folder":
            path.mkdir(exist_ok=True)
        if kind == "ok":
            sizes[str(path)] = size
        expect[str(path)] = kind
        paths.append(str(path))
    return paths, sizes


def _check(root, spec, out_name):
    paths, sizes = _make_inputs(root, spec)
    if not paths:
        event("no input")
        return
    out = root / out_name if out_name else root
    before = {p: Path(p).read_bytes() for p in paths if Path(p).is_file()}
    rc, lines = _main(["invert", "--steps", "1", "--no-progress", f"--out={out}", "--", *paths])
    err = "\n".join(lines)
    assert {p: Path(p).read_bytes() for p in before} == before, "an input file was changed"
    bad_out = out_name in ("file", "file/sub")
    good = [p for p in paths if p in sizes]
    if bad_out or not good:
        assert rc == 2, (rc, err)
        return
    assert rc == (1 if len(good) < len(paths) else 0), (rc, err)
    summary = json.loads((out / "summary.json").read_text())
    claimed = set()
    done = {}
    for name, record in summary["images"].items():
        done.setdefault(record["image"], []).append(record)
        for entry in record["results"]:
            for f in (entry["reconstruction"], entry["figure"], f"{name}.json"):
                key = os.path.normcase(f).casefold()
                assert key not in claimed, f"{f} claimed twice"
                claimed.add(key)
            image = load_image(out / entry["reconstruction"])
            assert tuple(image.shape[-2:]) == (sizes[record["image"]],) * 2, record
        assert json.loads((out / f"{name}.json").read_text()) == record
    for p in paths:
        if p in sizes:
            assert p in done, f"{p!r} has no outputs"
        else:
            assert p in summary["errors"] and any(shown(p) in line for line in lines), p


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(inputs, outs)
def test_cli_names_fuzz_caricature(spec, out_name):
    """The same over ``caricature`` (a CNN command: random weights, 32 px, 1 step)."""
    root = Path(tempfile.mkdtemp(prefix="pyinvert-fuzz-"))
    try:
        paths, sizes = _make_inputs(root, spec)
        if not paths:
            return
        out = root / out_name if out_name else root
        before = {p: Path(p).read_bytes() for p in paths if Path(p).is_file()}
        rc, lines = _main(
            [
                "caricature",
                "--layer",
                "features.2",
                "--weights",
                "random",
                "--size",
                "32",
                "--steps",
                "1",
                "--no-progress",
                f"--out={out}",
                "--",
                *paths,
            ]
        )
        assert {p: Path(p).read_bytes() for p in before} == before, "an input file was changed"
        good = [p for p in paths if p in sizes]
        if out_name in ("file", "file/sub") or not good:
            assert rc == 2, (rc, lines)
            return
        assert rc == (1 if len(good) < len(paths) else 0), (rc, lines)
        names = json.loads((out / "result.json").read_text())["names"]
        keys = [
            os.path.normcase(f).casefold()
            for n in names
            for f in (f"{n}.png", f"{n}-caricature.png")
        ]
        assert len(names) == len(good) and len(set(keys)) == len(keys)
        for n in names:
            assert load_image(out / f"{n}.png").shape == (3, 32, 32)
            assert (out / f"{n}-caricature.png").is_file()
        for p in paths:
            if p not in sizes:
                assert any(shown(p) in line for line in lines), p
    finally:
        shutil.rmtree(root, ignore_errors=True)
