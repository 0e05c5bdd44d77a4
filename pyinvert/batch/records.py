"""An item's record (``DIR/items/<slug>/item.json``): what it holds, and its check on read.

A record is written by the job and read back by a rerun (to skip the item) and by the
summary and report. Since the file may have been edited by hand or tampered with, every
record read is checked by :func:`record_problems` first; one that does not pass is treated
as absent (the item is done again) and never reaches ``summary.csv`` or ``index.html``.
"""

import re
from typing import List

from pyinvert.io import to_json

ITEM_FORMAT = "pyinvert-batch-item/1"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_METRICS = ("feature_error", "psnr", "ssim")


#: A JSON-safe copy (tensors and tuples become lists, NaN/Inf None): the one cleaner.
jsonable = to_json


def is_file_name(name) -> bool:
    """A plain file name of an item's folder (no folder part, no leading dot)."""
    return isinstance(name, str) and bool(_NAME.match(name)) and len(name) <= 255


def _number_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def record_problems(record) -> List[str]:
    """What is wrong with a record read from disk (an empty list: nothing).

    Checked: the format, ``status`` ("ok" / "failed"), the types of ``id``, ``error``,
    ``final``, ``fingerprint``, ``run_id``, ``finished_at``, ``size`` (two ints >= 1),
    ``metrics`` (numbers or null), ``files`` and ``checksums`` (plain file names, sha256
    hex digests; an ok record lists each of its files with a checksum).
    """
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []

    def expect(key, ok, what):
        if not ok(record.get(key)):
            problems.append(f"field {key!r}: expected {what}, got {record.get(key)!r:.80}")

    expect("format", lambda v: v == ITEM_FORMAT, repr(ITEM_FORMAT))
    expect("status", lambda v: v in ("ok", "failed"), "'ok' or 'failed'")
    expect("id", lambda v: isinstance(v, str), "a string")
    expect("error", lambda v: v is None or isinstance(v, str), "a string or null")
    expect("final", lambda v: isinstance(v, bool), "true or false")
    expect("fingerprint", lambda v: isinstance(v, str), "a string")
    expect("run_id", lambda v: isinstance(v, str), "a string")
    expect("finished_at", lambda v: v is None or isinstance(v, str), "a string or null")
    expect(
        "size",
        lambda v: v is None
        or (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in v)
        ),
        "null or [height, width] (ints >= 1)",
    )
    expect(
        "metrics",
        lambda v: v is None
        or (isinstance(v, dict) and all(_number_or_none(v.get(k)) for k in _METRICS)),
        "null or an object of numbers",
    )
    expect(
        "checksums",
        lambda v: isinstance(v, dict)
        and all(is_file_name(k) and isinstance(d, str) and _SHA256.match(d) for k, d in v.items()),
        "an object of file name -> sha256",
    )
    files = record.get("files")
    if files is not None:
        names = []
        if not isinstance(files, dict):
            problems.append("field 'files': expected an object of file names")
        else:
            for name in files.values():
                names += name if isinstance(name, list) else [name]
            if not all(is_file_name(n) for n in names):
                problems.append(f"field 'files': expected plain file names, got {files!r:.80}")
            checksums = record.get("checksums")
            if isinstance(checksums, dict) and not set(names) <= set(checksums):
                problems.append("field 'files': a file without a checksum")
    if record.get("status") == "ok" and (
        not isinstance(files, dict) or not record.get("checksums")
    ):
        problems.append("an ok record without files or checksums")
    return problems
