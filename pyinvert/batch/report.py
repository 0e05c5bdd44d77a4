"""The job's summary (``summary.csv``, ``summary.json``) and report page (``index.html``).

Both are rebuilt from the items' records and written atomically, as batches finish and at
the end. The report is a static page (no server, relative links): the job's totals, then a
grid with, for every item, its original and reconstruction thumbnails, status, metrics or
error.

Nothing reaches the page unescaped: every value written into the HTML, whatever its source
(the manifest, a record read back from disk, the job's settings), goes through
:func:`html.escape`, numbers through a number format, links through :func:`urllib.parse.quote`.
In ``summary.csv`` a text cell that a spreadsheet would run as a formula (it begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return, after any spaces) is written with a
``'`` in front (the OWASP rule); ``summary.json`` keeps the values as they are.
"""

import csv
import html
import io
import math
from pathlib import Path
from typing import List, Optional
from urllib.parse import quote

from pyinvert import io as _io
from pyinvert.batch.records import is_file_name, record_problems

#: Columns of summary.csv (summary.json has the same keys per item).
COLUMNS = (
    "id",
    "status",
    "error",
    "line",
    "image",
    "rep",
    "recipe",
    "restarts",
    "height",
    "width",
    "feature_error",
    "psnr",
    "ssim",
    "original",
    "reconstruction",
    "figure",
    "record",
    "run_id",
    "finished_at",
)


def _finite(v):
    return (
        v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
    )


def summary_row(item, slug: str, record: Optional[dict], defaults: dict) -> dict:
    """One summary row: the item as written in the manifest, plus its record's outcome
    (status "pending" while it has none, or when the record is not valid:
    :func:`pyinvert.batch.records.record_problems`)."""
    row = {c: None for c in COLUMNS}
    row.update(
        id=item.id,
        line=item.line,
        image=item.image,
        rep=item.rep,
        recipe=item.recipe or defaults["recipe"],
        restarts=item.restarts or defaults["restarts"],
        status="pending",
    )
    if record is None or record_problems(record):
        return row
    metrics = record.get("metrics") or {}
    files = record.get("files") or {}
    folder = f"items/{slug}"
    size = record.get("size") or [None, None]
    row.update(
        status=record.get("status"),
        error=record.get("error"),
        height=size[0],
        width=size[1],
        feature_error=_finite(metrics.get("feature_error")),
        psnr=_finite(metrics.get("psnr")),
        ssim=_finite(metrics.get("ssim")),
        record=f"{folder}/item.json",
        run_id=record.get("run_id"),
        finished_at=record.get("finished_at"),
    )
    for key in ("original", "reconstruction", "figure"):
        if is_file_name(files.get(key)):
            row[key] = f"{folder}/{files[key]}"
    return row


def job_status(rows: List[dict]) -> int:
    """0 when every item is ok, else 1."""
    return 0 if rows and all(r["status"] == "ok" for r in rows) else 1


def totals(rows: List[dict]) -> dict:
    counts = {"items": len(rows), "ok": 0, "failed": 0, "pending": 0}
    for r in rows:
        counts[r["status"] if r["status"] in ("ok", "failed") else "pending"] += 1
    return counts


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A summary.csv cell: None as empty, a text that would start a spreadsheet formula
    prefixed with ``'`` (numbers are written as they are).

    Example:
        >>> print(csv_cell('=HYPERLINK("http://x", "y")'), csv_cell(-0.5), csv_cell("cat"))
        '=HYPERLINK("http://x", "y") -0.5 cat
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.lstrip(" ")[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


def summary_csv(rows: List[dict]) -> bytes:
    """summary.csv's bytes."""
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: csv_cell(r.get(k)) for k in COLUMNS})
    return buf.getvalue().encode("utf-8")


def write_summary(out: Path, rows: List[dict], job: dict) -> None:
    """summary.json ({"job": ..., "items": [...]}) and summary.csv, each atomically."""
    _io.write_json(out / "summary.json", {"job": job, "items": rows})
    _io.atomic_write_bytes(out / "summary.csv", summary_csv(rows))


def _fmt(v, spec, unit=""):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "&ndash;"
    return html.escape(f"{v:{spec}}{unit}")


def _int(v) -> str:
    return html.escape(str(v)) if isinstance(v, int) and not isinstance(v, bool) else "?"


_STYLE = """
body { font: 14px/1.35 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 6px; }
.totals { margin: 0 0 14px; } .totals b { margin-right: 2px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.item { width: 236px; margin: 0; padding: 6px; border: 1px solid #ccc; border-radius: 4px; }
.item.failed { border-color: #c33; background: #fff4f4; }
.item.pending { border-color: #aaa; background: #f6f6f6; color: #666; }
.pair { display: flex; gap: 4px; min-height: 20px; }
.pair img { width: 114px; height: auto; display: block; image-rendering: pixelated;
            background: #eee; }
figcaption { margin-top: 4px; word-wrap: break-word; overflow-wrap: anywhere; }
.status { font-weight: bold; } .ok .status { color: #181; } .failed .status { color: #c33; }
.error { font-family: monospace; font-size: 12px; white-space: pre-wrap; }
.muted { color: #777; font-size: 12px; }
"""

# Records, once the page has loaded, how many of its images decoded (for checks).
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok));
});
"""


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


def render_report(rows: List[dict], job: dict) -> str:
    """The report page's HTML."""
    esc = html.escape
    t = totals(rows)
    seconds = job.get("seconds")
    rate = job.get("items_per_second")
    # A very long page loads its images as they scroll into view.
    lazy = ' loading="lazy"' if len(rows) > 400 else ""
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>pyinvert batch: {esc(str(job.get('manifest', '')))}</title>\n",
        f"<style>{_STYLE}</style>\n</head>\n<body>\n",
        "<h1>pyinvert batch</h1>\n",
        f'<p class="muted">manifest {esc(str(job.get("manifest", "")))} &middot; run '
        f"{esc(str(job.get('run_id', '')))} &middot; {esc(str(job.get('updated_at', '')))}"
        f"</p>\n",
        '<p class="totals" id="totals">'
        f"<b>{_int(t['items'])}</b> items &middot; <b>{_int(t['ok'])}</b> ok &middot; "
        f"<b>{_int(t['failed'])}</b> failed"
        + (f" &middot; <b>{_int(t['pending'])}</b> pending" if t["pending"] else "")
        + f" &middot; this run: <b>{_int(job.get('done_this_run', 0))}</b> done, "
        f"{_int(job.get('skipped', 0))} skipped (done before) in "
        f"<b>{_fmt(seconds, '.1f', ' s')}</b> ({_fmt(rate, '.3g', ' items/s')}) on "
        f"{_int(job.get('world_size', 1))} process(es)</p>\n",
        '<div class="grid">\n',
    ]
    for r in rows:
        status = r["status"] if r["status"] in ("ok", "failed") else "pending"
        cls = status
        parts.append(
            f'<figure class="item {cls}" id="item-{esc(str(r["id"]), quote=True)}">'
            '<div class="pair">'
        )
        for key in ("original", "reconstruction"):
            if isinstance(r.get(key), str):
                parts.append(
                    f'<a href="{_href(r[key])}"><img src="{_href(r[key])}" '
                    f'alt="{key} of {esc(str(r["id"]), quote=True)}" '
                    f'title="{key}"{lazy}></a>'
                )
        parts.append("</div><figcaption>")
        parts.append(
            f'<b>{esc(str(r["id"]))}</b> <span class="status">{esc(status)}</span>'
            f'<br><span class="muted">{esc(str(r.get("rep")))} &middot; '
            f"{esc(str(r.get('recipe')))}"
            + (
                f" &middot; {_int(r['height'])}&times;{_int(r['width'])}"
                if r.get("height") is not None
                else ""
            )
            + "</span><br>"
        )
        if status == "ok":
            parts.append(
                f"feature error {_fmt(r.get('feature_error'), '.4f')} &middot; "
                f"PSNR {_fmt(r.get('psnr'), '.2f', ' dB')} &middot; "
                f"SSIM {_fmt(r.get('ssim'), '.3f')}<br>"
            )
        elif status == "failed":
            parts.append(f'<span class="error">{esc(str(r.get("error")))}</span><br>')
        links = [
            f'<a href="{_href(r[k])}">{k}</a>'
            for k in ("figure", "record")
            if isinstance(r.get(k), str)
        ]
        if links:
            parts.append(" &middot; ".join(links))
        parts.append("</figcaption></figure>\n")
    parts.append(f"</div>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")
    return "".join(parts)


def write_report(out: Path, rows: List[dict], job: dict) -> Path:
    """Write ``out/index.html`` atomically."""
    return _io.atomic_write_bytes(out / "index.html", render_report(rows, job).encode("utf-8"))
