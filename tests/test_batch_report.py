"""``pyinvert batch``: the summary and the report page (in headless Chromium)."""

import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyinvert import batch as pb
from pyinvert.batch import report
from tests.test_batch import good_and_bad_rows, write_csv, write_photo


# ---- the report ---------------------------------------------------------------------------


def test_report_escapes_text_and_links_relatively(tmp_path):
    write_photo(tmp_path / "a.png")
    rows = [
        {"id": '<b>x</b>&"y"', "image": "a.png", "rep": "hog"},
        {"id": "bad <script>alert(1)</script>", "image": "<nope>.png", "rep": "hog"},
    ]
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
    pb.run_batch(
        write_csv(tmp_path / "m.csv", good + [bad[0][0], bad[2][0]]), out, steps=4, verbose=False
    )
    url = (out / "index.html").resolve().as_uri()
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    loaded = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', dom.stdout)
    assert loaded, dom.stdout[-2000:] + dom.stderr[-2000:]
    n_images = 2 * len(good)
    assert int(loaded.group(1)) == n_images and int(loaded.group(2)) == n_images

    shot = tmp_path / "shot.png"
    subprocess.run(
        flags + [f"--screenshot={shot}", "--window-size=1000,800", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def test_run_batch_documents_its_defaults():
    from tests.test_docs import documented_defaults

    doc = inspect.getdoc(pb.run_batch)
    found = documented_defaults(doc)
    params = inspect.signature(pb.run_batch).parameters
    assert set(found) == {n for n, p in params.items() if p.default is not inspect.Parameter.empty}
    for name, text in found.items():
        default = params[name].default
        assert text == repr(default) or text.strip("'\"") == str(default), (name, text)
