"""The batch job's driver: check what is done, share the rest out, run it, write the summary.

Steps of :func:`run_batch` (every rank of a torchrun job runs the same steps):

1. Install the SIGTERM/SIGINT handlers (:mod:`pyinvert.batch.signals`), check the options
   (:mod:`pyinvert.batch.options`), read and validate the manifest
   (:mod:`pyinvert.batch.manifest`).
2. Join torchrun's process group if there is one; rank 0 takes ``DIR/.lock`` and removes
   what an interrupted job left in ``DIR/.partial``; a run id is shared by all ranks.
3. Check: the items are dealt round-robin; each rank hashes its items' images and reads their
   records; an item whose record is complete (:func:`pyinvert.batch.store.is_complete`) is
   skipped. The ranks exchange the results (one all-gather).
4. The pending items are dealt to the ranks (:func:`pyinvert.batch.plan.deal`).
5. Each rank prepares its items (:mod:`pyinvert.batch.prepare`; a problem makes that item
   fail), groups them and runs each group in chunks (:mod:`pyinvert.batch.plan`,
   :mod:`pyinvert.batch.execute`); rank 0 rewrites the summary and report as batches finish.
6. Rank 0 gathers every rank's records and writes the final summary and report
   (:mod:`pyinvert.batch.report`). When that write fails (a full disk, say), the job says so
   in one line and exits with status 1; each of the three files is either its previous
   version or absent, never half-written, and every item's own record is in ``DIR/items``.

A signal stops the job at once wherever it is (set-up included), except while a finished
batch's items or the summary are being written, which complete first; the job then writes an
interrupted summary (once it has a run id) and returns 128 + the signal number.
"""

import datetime
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import torch

from pyinvert.batch import report as _report
from pyinvert.batch import store as _store
from pyinvert.batch.dist import Dist
from pyinvert.batch.execute import Executor, now
from pyinvert.batch.manifest import Item, ManifestError, read_manifest  # noqa: F401
from pyinvert.batch.options import MAX_BATCH_PIXELS, BatchOptions, UsageError  # noqa: F401
from pyinvert.batch.overrides import ItemError, check_overrides  # noqa: F401
from pyinvert.batch.plan import chunks, deal, groups, item_fingerprint, item_seed  # noqa: F401
from pyinvert.batch.prepare import Preparer
from pyinvert.batch.signals import Interrupted, SignalGuard
from pyinvert.batch.store import JobLocked  # noqa: F401

#: Seconds between two rewrites of the summary and report while a job runs (at least).
SUMMARY_INTERVAL = 2.0


class Job:
    """One run of a batch job in this process (see the module docstring)."""

    def __init__(
        self, items: List[Item], manifest: Path, out: Path, opts: BatchOptions, guard: SignalGuard
    ):
        self.items = items
        self.manifest = manifest
        self.out = out
        self.opts = opts
        self.guard = guard
        self.defaults = {"recipe": opts.recipe, "restarts": opts.restarts}
        self.records: Dict[int, dict] = {}  # index -> record (known to this rank)
        self.new: Dict[int, dict] = {}  # index -> record made by this rank, this run
        self.fingerprints: Dict[int, str] = {}
        self.digests: Dict[int, Optional[str]] = {}
        self.skipped = 0
        self.dist = Dist()
        self.run_id = ""
        self.started_at = now()
        self.t0 = time.perf_counter()
        self._next_summary = self.t0 + SUMMARY_INTERVAL
        self._summary_failed = False
        self.device = torch.device(opts.device) if opts.device is not None else torch.device("cpu")
        self.prep = Preparer(opts, self.device)
        self.executor = Executor(self)

    def log(self, message: str, error: bool = False) -> None:
        if self.opts.verbose or error:
            prefix = f"[rank {self.dist.rank}] " if self.dist.distributed else ""
            print(
                f"pyinvert batch: {prefix}{message}",
                file=sys.stderr if error else sys.stdout,
                flush=True,
            )

    def fingerprint_of(self, index: int, digest: Optional[str]) -> str:
        item = self.items[index]
        return item_fingerprint(
            item,
            digest,
            recipe=self.prep.recipe_name(item),
            restarts=self.prep.restarts(item),
            steps=self.opts.steps,
            job_seed=self.opts.seed,
            backend=self.opts.backend,
        )

    def config_key(self, index: int):
        item = self.items[index]
        return (item.rep, self.prep.recipe_name(item), item.overrides_key, self.prep.restarts(item))

    # ---- the run --------------------------------------------------------------------------

    def run(self) -> dict:
        lock = None
        try:
            self.dist = Dist.from_env(self.device.type, timeout_s=self.opts.dist_timeout)
            if self.device.type == "cuda" and self.dist.distributed and self.device.index is None:
                self.device = torch.device("cuda", self.dist.local_rank)
                self.prep.device = self.device
            locked = True
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                if self.dist.is_main:
                    lock = _store.JobLock(self.out)
                    locked = lock.acquire()
                    if locked:
                        _store.clean_partial(self.out)
            except OSError as error:
                raise UsageError(
                    f"batch: cannot write the output folder {self.out}: {error.strerror or error}"
                ) from None
            locked = self.dist.broadcast(locked)
            if not locked:
                raise JobLocked(
                    f"batch: another job is writing {self.out} (it holds {self.out / '.lock'})"
                )
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self.run_id = self.dist.broadcast(f"{stamp}-{uuid.uuid4().hex[:8]}")
            self.dist.barrier()
            self.log(
                f"run {self.run_id}: {len(self.items)} item(s) in {self.manifest}"
                + (f", {self.dist.world_size} processes" if self.dist.distributed else "")
            )

            self._process(self._check_and_deal())
            if self.dist.distributed and self.dist.is_main:
                # What rank 0 knows now, in case the final exchange never completes.
                self._write_outputs(final=False, done_this_run=None)

            gathered = self.dist.all_gather(self.new)
            for part in gathered:
                self.records.update(part)
            done_this_run = sum(len(p) for p in gathered)
            job = self._write_outputs(final=True, done_this_run=done_this_run)
            job["exit_status"] = self.dist.broadcast(job["exit_status"])
            if self.dist.is_main:
                _store.remove_partial(self.out)
                t = _report.totals(self._rows())
                where = (
                    ""
                    if job.get("summary_error")
                    else f"; summary: {self.out / 'summary.csv'}, report: {self.out / 'index.html'}"
                )
                self.log(
                    f"{t['ok']} ok, {t['failed']} failed of {t['items']} item(s) "
                    f"({done_this_run} done now, {self.skipped} skipped as done) in "
                    f"{job['seconds']:.1f} s{where}"
                )
            else:
                self.log(f"done: {len(self.new)} item(s) written by this process")
            return job
        except Interrupted as stop:
            with self.guard.stopped():
                return self._stopped(stop)
        finally:
            if lock is not None:
                lock.release()
            self.dist.close()

    def _stopped(self, stop: Interrupted) -> dict:
        name = stop.args[0].rsplit(" ", 1)[-1]
        if not self.run_id:
            self.log(f"stopped by {name} during set-up; nothing was written", error=True)
            return {"exit_status": 128 + stop.signum, "interrupted": True}
        self.log(f"stopped by {name}; finished items are kept, a rerun does the rest", error=True)
        job = {}
        if self.dist.is_main:
            try:
                job = self._write_outputs(
                    final=False, done_this_run=len(self.new), interrupted=True
                )
            except Exception as error:  # the summary is a convenience here
                self.log(f"could not write the summary: {error}", error=True)
        job["exit_status"] = 128 + stop.signum
        return job

    def _check_and_deal(self) -> List[int]:
        """Find the complete items (each rank checks a share) and deal the others out."""
        rank, world = self.dist.rank, self.dist.world_size
        found = []
        for index in range(rank, len(self.items), world):
            item = self.items[index]
            digest = _store.image_digest(item.path)
            fp = self.fingerprint_of(index, digest)
            record = _store.read_record(self.out, item.slug)
            done = _store.is_complete(self.out, item.slug, record, fp, self.opts.retry_failed)
            found.append((index, digest, fp, record if done else None))
        for part in self.dist.all_gather(found):
            for index, digest, fp, record in part:
                self.digests[index] = digest
                self.fingerprints[index] = fp
                if record is not None:
                    self.records[index] = record
        self.skipped = len(self.records)
        pending = [i for i in range(len(self.items)) if i not in self.records]
        if self.skipped:
            self.log(f"{self.skipped} item(s) already done (skipped), {len(pending)} to do")
        return deal(pending, self.config_key, rank, world)

    def _process(self, mine: List[int]) -> None:
        ready = []
        for index in mine:
            try:
                ready.append(self.prep.prepare(index, self.items[index]))
            except ItemError as error:
                self.executor.fail(index, str(error), error.final)
        done, total = 0, len(ready)
        for key, tasks in groups(ready).items():
            for chunk in chunks(tasks, self.opts.batch_size, self.opts.max_batch_pixels):
                t0 = time.perf_counter()
                self.executor.run_chunk(chunk)
                done += len(chunk)
                ok = sum(1 for t in chunk if self.new.get(t.index, {}).get("status") == "ok")
                self.log(
                    f"{done}/{total}: {len(chunk)} x {key[0]} {key[1]} "
                    f"{key[4]}x{key[5]} in {time.perf_counter() - t0:.1f} s "
                    f"({ok} ok, {len(chunk) - ok} failed)"
                )
                if self.dist.is_main and time.perf_counter() >= self._next_summary:
                    t1 = time.perf_counter()
                    self._write_outputs(final=False, done_this_run=None)
                    # At most every 2 s, and at most 10% of the time on large jobs.
                    self._next_summary = time.perf_counter() + max(
                        SUMMARY_INTERVAL, 10 * (time.perf_counter() - t1)
                    )

    # ---- summary and report --------------------------------------------------------------

    def _rows(self) -> List[dict]:
        return [
            _report.summary_row(item, item.slug, self.records.get(i), self.defaults)
            for i, item in enumerate(self.items)
        ]

    def _refresh_from_disk(self) -> None:
        """Rank 0: pick up the records other ranks have written during this run."""
        if not self.dist.distributed:
            return
        for i, item in enumerate(self.items):
            if i in self.records or i not in self.fingerprints:
                continue
            record = _store.read_record(self.out, item.slug)
            if (
                record
                and record.get("fingerprint") == self.fingerprints[i]
                and record.get("run_id") == self.run_id
            ):
                self.records[i] = record

    def _write_outputs(
        self, final: bool, done_this_run: Optional[int], interrupted: bool = False
    ) -> dict:
        if not final:
            self._refresh_from_disk()
        rows = self._rows()
        if done_this_run is None:
            done_this_run = sum(1 for r in self.records.values() if r.get("run_id") == self.run_id)
        seconds = time.perf_counter() - self.t0
        job = {
            "manifest": str(self.manifest),
            "out": str(self.out),
            "run_id": self.run_id,
            "started_at": self.started_at,
            "updated_at": now(),
            "finished": bool(final),
            "interrupted": interrupted,
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "steps": self.opts.steps,
            "batch_size": self.opts.batch_size,
            "seed": self.opts.seed,
            **_report.totals(rows),
            "done_this_run": done_this_run,
            "skipped": self.skipped,
            "seconds": seconds,
            "items_per_second": done_this_run / seconds if seconds > 0 else None,
            "exit_status": _report.job_status(rows),
        }
        if self.dist.is_main:
            try:
                with self.guard.deferred():
                    _report.write_summary(self.out, rows, job)
                    _report.write_report(self.out, rows, job)
            except OSError as error:
                reason = f"[Errno {error.errno}] {error.strerror}" if error.strerror else str(error)
                job["summary_error"] = reason
                if final or not self._summary_failed:
                    self.log(
                        f"could not write the summary and report in {self.out} "
                        f"({reason}); summary.json, summary.csv and index.html are each "
                        f"their previous version or absent, the items' records are in "
                        f"{self.out / 'items'}; a rerun rewrites them",
                        error=True,
                    )
                self._summary_failed = True
                if final:
                    job["exit_status"] = 1
        return job


def run_batch(
    manifest,
    out,
    *,
    steps: Optional[int] = None,
    batch_size: int = 32,
    device: Optional[str] = None,
    seed: int = 0,
    recipe: str = "cvpr2015",
    restarts: int = 1,
    backend: str = "fused",
    retry_failed: bool = False,
    max_batch_pixels: int = MAX_BATCH_PIXELS,
    verbose: bool = True,
) -> dict:
    """Invert every item of a manifest into ``out`` (see :mod:`pyinvert.batch`).

    Under torchrun, every process calls this with the same arguments: each does its share and
    rank 0 writes the summary and the report. A HOG, HOGb or DSIFT item's outputs are bit for
    bit the same whatever the batch size, thread count or number of processes; a CNN item's
    only for the same batches, thread count and device (otherwise they differ by round-off
    that the optimization amplifies: see ``pyinvert/batch/README.md`` for measured figures). Called from the main thread, it handles
    SIGTERM and SIGINT for its whole length (set-up included) and puts the previous handlers
    back when it returns.

    Args:
        manifest: path of the manifest (.csv with a header, or .jsonl).
        out: the output folder (created; a rerun skips the items already done there).
        steps: iterations per inversion (the recipe's schedule stretched or shortened),
            at most 100000; None: the recipe's own. Default: None.
        batch_size: images optimized together at most (at most 4096). Default: 32.
        device: "cpu", "cuda" (under torchrun: the local rank's GPU) or "cuda:N";
            None: the CPU. Default: None.
        seed: the job's seed; each item's seed is derived from it and the item's id.
            Default: 0.
        recipe: the recipe of the items that name none. Default: 'cvpr2015'.
        restarts: the restarts of the items that give none (at most 100). Default: 1.
        backend: "fused" or "reference". Default: 'fused'.
        retry_failed: run again the items recorded as failed for a lasting reason (a rerun
            always retries the others). Default: False.
        max_batch_pixels: at most this many pixels (images x restarts x H x W) in one
            optimization (at most 2**30). Default: 4194304.
        verbose: print progress lines. Default: True.

    Returns:
        The job's totals (as in summary.json's "job"), with "exit_status": 0 when every item
        is ok, 1 when some failed (or the summary could not be written: "summary_error"),
        128 + the signal number when stopped by SIGTERM/SIGINT.

    Raises:
        ManifestError: the manifest's form is wrong (nothing has run).
        UsageError: an option is invalid (a ValueError).
        JobLocked: another job is writing ``out``.
    """
    guard = SignalGuard()
    guard.install()
    try:
        opts = BatchOptions(
            steps=steps,
            batch_size=batch_size,
            device=device,
            seed=seed,
            recipe=recipe,
            restarts=restarts,
            backend=backend,
            retry_failed=retry_failed,
            max_batch_pixels=max_batch_pixels,
            verbose=verbose,
        )
        opts.validate()
        items = read_manifest(manifest)
        return Job(items, Path(manifest), Path(out), opts, guard).run()
    except Interrupted as stop:
        with guard.stopped():
            name = stop.args[0].rsplit(" ", 1)[-1]
            print(
                f"pyinvert batch: stopped by {name} during set-up; nothing was written",
                file=sys.stderr,
                flush=True,
            )
            return {"exit_status": 128 + stop.signum, "interrupted": True}
    finally:
        guard.restore()
