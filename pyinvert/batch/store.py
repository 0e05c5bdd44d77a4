"""The output folder of a batch job, written so that nothing is ever half there.

Layout of ``DIR``::

    DIR/items/<slug>/item.json            the item's record (status, metrics, files, ...)
    DIR/items/<slug>/original.png         the image as the representation sees it
    DIR/items/<slug>/reconstruction.png   (reconstruction-r<k>.png with restarts > 1)
    DIR/items/<slug>/figure.png           original | code | reconstruction | error map
    DIR/summary.json, DIR/summary.csv     one row per manifest item
    DIR/index.html                        the report
    DIR/.partial/                         staging area (removed when a job starts)
    DIR/.lock                             held by the running job

An item is written into ``DIR/.partial/<slug>.<run>.<rank>/`` (its ``item.json`` last) and
the finished folder is then renamed to ``DIR/items/<slug>`` in one step: a folder under
``items/`` is always complete, whatever moment the job is killed at. A rerun skips an item
whose ``item.json`` parses, whose fingerprint (image content, representation, recipe,
overrides, restarts, steps, seed) matches, and whose files all exist with the recorded
checksums; everything else is done again. A record that does not pass
:func:`pyinvert.batch.records.record_problems` counts as absent.

Nothing here follows a symbolic link when it deletes: a link found where a staging folder,
an item folder or a temporary file should be is removed itself, never what it points to.
"""

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from pyinvert.batch.records import ITEM_FORMAT, record_problems  # noqa: F401

PARTIAL = ".partial"


class JobLocked(RuntimeError):
    """Another job holds DIR/.lock."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_digest(path: Path) -> Optional[str]:
    """sha256 of the image file's bytes, or None when it cannot be read."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def fingerprint(payload: dict) -> str:
    """A stable hash of the settings that determine an item's outputs."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_dir(out: Path, slug: str) -> Path:
    return out / "items" / slug


def read_record(out: Path, slug: str) -> Optional[dict]:
    """The item's record, or None when absent, unreadable or not a valid record."""
    try:
        record = json.loads((item_dir(out, slug) / "item.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if not record_problems(record) else None


def is_complete(
    out: Path,
    slug: str,
    record: Optional[dict],
    expected_fingerprint: str,
    retry_failed: bool = False,
) -> bool:
    """Whether ``record`` (read from the item's folder) lets a rerun skip the item."""
    if record is None or record.get("format") != ITEM_FORMAT:
        return False
    if record.get("fingerprint") != expected_fingerprint:
        return False
    status = record.get("status")
    if status == "failed":
        return bool(record.get("final")) and not retry_failed
    if status != "ok":
        return False
    checksums = record.get("checksums")
    if not isinstance(checksums, dict) or not checksums:
        return False
    folder = item_dir(out, slug)
    for name, digest in checksums.items():
        p = folder / name
        if Path(name).name != name or not p.is_file():
            return False
        try:
            if sha256_file(p) != digest:
                return False
        except OSError:
            return False
    return True


def _remove(path: Path) -> None:
    """Remove a file, a symbolic link (not its target) or a folder tree (rmtree never follows
    links); errors are ignored."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except OSError:
        pass


def remove_partial(out: Path) -> None:
    """Remove ``out/.partial`` (a link there is unlinked, never followed)."""
    _remove(out / PARTIAL)


def _stale_temporaries(folder: Path):
    """The ``.*.tmp`` files and links (not folders) of a folder."""
    try:
        with os.scandir(folder) as entries:
            return [
                Path(e.path)
                for e in entries
                if e.name.startswith(".")
                and e.name.endswith(".tmp")
                and not e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return []


def clean_partial(out: Path) -> None:
    """Remove what an interrupted job left: the staging folder and temporary files of the
    atomic writers (``.<name>.*.tmp``) at the top of ``out`` and in the item folders.

    Symbolic links are never followed: a linked ``.partial``, ``items`` or item folder is not
    entered, a linked temporary file is unlinked itself.
    """
    _remove(out / PARTIAL)
    for p in _stale_temporaries(out):
        _remove(p)
    items = out / "items"
    if items.is_symlink() or not items.is_dir():
        return
    try:
        with os.scandir(items) as entries:
            folders = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for folder in folders:
        for p in _stale_temporaries(folder):
            _remove(p)


def commit_item(out: Path, slug: str, tag: str, write_files, record: dict) -> dict:
    """Write an item's files and record into a staging folder, then move it into place.

    ``write_files(folder)`` writes the item's files into ``folder`` and returns their names;
    their checksums go into the record, which is written last. Returns the record.
    """
    partial = out / PARTIAL
    if partial.is_symlink():
        _remove(partial)
    stage = partial / f"{slug}.{tag}"
    _remove(stage)
    stage.mkdir(parents=True)
    names = write_files(stage) if write_files is not None else []
    record = dict(record)
    record["checksums"] = {n: sha256_file(stage / n) for n in names}
    (stage / "item.json").write_text(
        json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    final = item_dir(out, slug)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if os.path.lexists(final):
        old = partial / f"{slug}.{tag}.old"
        _remove(old)
        os.rename(final, old)  # a link is moved itself, not its target
    os.rename(stage, final)
    if old is not None:
        _remove(old)
    return record


class JobLock:
    """An exclusive lock on ``DIR/.lock`` (fcntl.flock) so that two jobs never write the same
    folder; released when the process ends, even when killed."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self.fd = None

    def acquire(self) -> bool:
        import fcntl  # optional dependency: a POSIX-only module (no fcntl on Windows)

        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            os.unlink(self.path)  # a link planted as DIR/.lock: never truncate its target
            self.fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(self.fd)
                self.fd = None
                return False
            # A file system without flock: go on without the lock.
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
