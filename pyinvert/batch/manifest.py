"""Reading and validating a batch manifest (CSV with a header, or JSON lines).

Fields: ``id``, ``image``, ``rep`` (required); ``recipe``, ``restarts``, ``overrides``
(optional). Unknown columns are ignored.

What is a manifest error and what is a failed item:

* The manifest is rejected as a whole (:class:`ManifestError`, exit status 2, nothing runs)
  for problems of its *form*: a file that is neither CSV nor JSON lines, a line that is not
  valid JSON (or not an object), a missing required column or field, an empty ``id``,
  ``image`` or ``rep``, an ``id`` that is not a string or a finite number, a duplicate
  ``id``, two ids whose folder names (:func:`item_slug`) would be the same or differ only in
  case, ``restarts`` that is not an integer in [1, 100], ``overrides`` that is not valid
  JSON or not a JSON object, no items at all, more than
  :data:`pyinvert.batch.options.MAX_ITEMS` items or
  :data:`pyinvert.batch.options.MAX_MANIFEST_BYTES` bytes. Every such problem is listed,
  each with its line number and field.
* Problems of *content*, found when an item is prepared or run, make only that item fail
  (recorded with its reason; the others go on): a missing or unreadable image, an image too
  small for the representation, an unknown representation or layer, missing weights, an
  unknown recipe, an unknown override field or a value of the wrong type or out of its
  range (:mod:`pyinvert.batch.overrides`), non-finite pixel values, a diverging optimization.
"""

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from pyinvert.batch.options import MAX_ITEMS, MAX_MANIFEST_BYTES, MAX_RESTARTS

REQUIRED = ("id", "image", "rep")
OPTIONAL = ("recipe", "restarts", "overrides")

_MAX_LISTED = 25


class ManifestError(ValueError):
    """The manifest cannot be used (its form is wrong); ``problems`` lists every problem."""

    def __init__(self, path, problems: List[str]):
        self.path = str(path)
        self.problems = list(problems)
        shown = self.problems[:_MAX_LISTED]
        more = len(self.problems) - len(shown)
        text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(f"batch: invalid manifest {self.path}:\n  {text}")


@dataclass(frozen=True)
class Item:
    """One row of the manifest.

    Attributes:
        id: the item's id (unique in the manifest).
        image: the image path as written in the manifest.
        path: the image path resolved (relative paths from the manifest's folder).
        rep: the representation string ("hog", "hogb", "dsift", "cnn:MODEL:LAYER", ...).
        recipe: the recipe name, or None for the job's default.
        restarts: reconstructions of this image, or None for the job's default.
        overrides: recipe constants to override (a JSON object).
        line: the line of the manifest the item starts on (1-based).
    """

    id: str
    image: str
    path: Path
    rep: str
    recipe: Optional[str] = None
    restarts: Optional[int] = None
    overrides: dict = field(default_factory=dict, compare=False)
    line: int = 0

    @property
    def slug(self) -> str:
        """The name of the item's output folder (see :func:`item_slug`)."""
        return item_slug(self.id)

    @property
    def overrides_key(self) -> str:
        """The overrides as canonical JSON (sorted keys), for grouping and fingerprints."""
        return canonical_json(self.overrides)


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


_HASHED = re.compile(r".*-[0-9A-Fa-f]{10}\Z", re.DOTALL)


def item_slug(item_id: str) -> str:
    """A file-system-safe folder name for an id.

    The id itself when it is made of letters, digits, ``.``, ``_`` and ``-`` only, is at most
    80 characters, does not start with a dot and does not end like a hashed name
    (``-`` and 10 hex digits); otherwise a cleaned version followed by ``-`` and 10 hex
    digits of the id's sha256. The two kinds of names never meet (only hashed names end
    like one), so distinct ids share a folder only if their hashes agree;
    :func:`read_manifest` rejects a manifest where two ids' names would be the same or
    differ only in case (one folder on a case-insensitive file system).

    Example:
        >>> item_slug("cat-01"), item_slug("a b")
        ('cat-01', 'a_b-c8687a08aa')
        >>> item_slug("a_b-c8687a08aa")
        'a_b-c8687a08aa-3a9b77c6e5'
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).lstrip(".")[:80] or "item"
    if clean == item_id and not _HASHED.match(item_id):
        return clean
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:10]
    return f"{clean}-{digest}"


def detect_format(path: Path, text: str) -> str:
    """ "csv" or "jsonl", from the extension (.csv; .jsonl / .ndjson) or else the content."""
    ext = path.suffix.lower()
    if ext == ".csv":
        return "csv"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    first = text.lstrip()[:1]
    return "jsonl" if first == "{" else "csv"


def read_manifest(path) -> List[Item]:
    """Read and validate a manifest.

    Args:
        path: a .csv file (with a header row) or a .jsonl file (one JSON object a line); any
            other extension is sniffed (a first character ``{`` means JSON lines).

    Returns:
        The items, in the manifest's order.

    Raises:
        ManifestError: the file cannot be read or its form is wrong (every problem listed
            with its line and field).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                path,
                [
                    f"{size} bytes, more than the {MAX_MANIFEST_BYTES} a "
                    f"manifest may have (split it)"
                ],
            )
        raw = path.read_bytes()
    except OSError as error:
        raise ManifestError(
            path, [f"cannot read the manifest: {error.strerror or error}"]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(path, [f"not UTF-8 text ({error})"]) from None
    fmt = detect_format(path, text)
    rows, problems = (_read_csv if fmt == "csv" else _read_jsonl)(text)
    base = path.resolve().parent
    if len(rows) > MAX_ITEMS:
        raise ManifestError(
            path,
            problems
            + [f"{len(rows)} items, more than the {MAX_ITEMS} a job takes (split the manifest)"],
        )
    items, seen, folders = [], {}, {}
    for line, row in rows:
        item = _make_item(line, row, base, problems)
        item_id = _id_text(row.get("id"))
        if item_id is None:
            continue
        if item_id in seen:
            problems.append(
                f"line {line}: field 'id': duplicate id {item_id!r} (first on line {seen[item_id]})"
            )
            continue
        seen[item_id] = line
        folder = item_slug(item_id)
        other = folders.get(folder.casefold())
        if other is not None:
            problems.append(
                f"line {line}: field 'id': id {item_id!r} would share the folder "
                f"items/{folder} with id {other[0]!r} (line {other[1]})"
                + ("" if item_slug(other[0]) == folder else " on a case-insensitive file system")
            )
            continue
        folders[folder.casefold()] = (item_id, line)
        if item is not None:
            items.append(item)
    if not rows and not problems:
        problems.append(
            "no items (expected a header and at least one row for CSV, or at "
            "least one JSON object for JSON lines)"
        )
    if problems:
        raise ManifestError(path, problems)
    return items


def _read_csv(text):
    problems, rows = [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    previous_end = 0
    try:
        for fields in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [h.strip().lower() for h in fields]
                dup = sorted({h for h in header if header.count(h) > 1 and h})
                if dup:
                    problems.append(f"line {start}: header: duplicate column(s) {dup}")
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    problems.append(
                        f"line {start}: header: missing column(s) {missing} (expected columns "
                        f"{', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}; got "
                        f"{[h for h in header]})"
                    )
                    return [], problems
                continue
            if len(fields) > len(header):
                problems.append(
                    f"line {start}: {len(fields)} fields, but the header has {len(header)} columns"
                )
                continue
            row = {h: f for h, f in zip(header, fields) if h}
            rows.append((start, row))
    except csv.Error as error:
        problems.append(f"line {reader.line_num}: not valid CSV ({error})")
    return rows, problems


def _read_jsonl(text):
    problems, rows = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(row).__name__}")
            continue
        rows.append((number, {str(k).strip().lower(): v for k, v in row.items()}))
    return rows, problems


def _id_text(value) -> Optional[str]:
    """The id's text (a string, or a finite number written as JSON writes it), or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float)):
        return _text(value) or None
    return None


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _make_item(line, row, base: Path, problems) -> Optional[Item]:
    bad = False
    values = {}
    for name in REQUIRED:
        if name not in row:
            problems.append(f"line {line}: field {name!r}: missing")
            bad = True
            continue
        value = row[name]
        if value is not None and (
            isinstance(value, (dict, list, bool)) or (name != "id" and not isinstance(value, str))
        ):
            problems.append(f"line {line}: field {name!r}: expected a string, got {value!r}")
            bad = True
            continue
        if name == "id" and isinstance(value, float) and not math.isfinite(value):
            problems.append(
                f"line {line}: field 'id': expected a string or a finite number, got {value!r}"
            )
            bad = True
            continue
        text = _text(value)
        if not text:
            problems.append(f"line {line}: field {name!r}: empty")
            bad = True
            continue
        values[name] = text

    recipe = row.get("recipe")
    if recipe is not None and not isinstance(recipe, str):
        problems.append(f"line {line}: field 'recipe': expected a recipe name, got {recipe!r}")
        bad = True
    recipe = _text(recipe) or None

    restarts = row.get("restarts")
    if isinstance(restarts, str):
        restarts = restarts.strip() or None
    if restarts is not None:
        try:
            if isinstance(restarts, bool) or (
                isinstance(restarts, float) and not restarts.is_integer()
            ):
                raise ValueError
            if isinstance(restarts, float) and not math.isfinite(restarts):
                raise ValueError
            restarts = int(restarts)
            if not 1 <= restarts <= MAX_RESTARTS:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            problems.append(
                f"line {line}: field 'restarts': expected an integer in "
                f"[1, {MAX_RESTARTS}], got {row.get('restarts')!r}"
            )
            bad = True

    overrides = row.get("overrides")
    if isinstance(overrides, str):
        if overrides.strip():
            try:
                overrides = json.loads(overrides)
            except json.JSONDecodeError as error:
                problems.append(
                    f"line {line}: field 'overrides': not valid JSON ({error.msg} "
                    f"at column {error.colno}): {row.get('overrides')!r}"
                )
                bad = True
                overrides = {}
        else:
            overrides = None
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        problems.append(
            f"line {line}: field 'overrides': expected a JSON object of recipe "
            f"fields, got {row.get('overrides')!r}"
        )
        bad = True
    if bad:
        return None
    image = values["image"]
    resolved = Path(os.path.expanduser(image))
    if not resolved.is_absolute():
        resolved = base / resolved
    return Item(
        id=values["id"],
        image=image,
        path=resolved,
        rep=values["rep"],
        recipe=recipe,
        restarts=restarts,
        overrides=overrides,
        line=line,
    )
