"""Running a batch job: check what is done, share the rest out, invert in groups, record.

Steps of :func:`run_batch` (every rank of a torchrun job runs the same steps):

1. Read and validate the manifest (:mod:`pyinvert.batch.manifest`).
2. Join torchrun's process group if there is one; rank 0 takes ``DIR/.lock`` and removes
   what an interrupted job left in ``DIR/.partial``; a run id is shared by all ranks.
3. Check: the items are dealt round-robin; each rank hashes its items' images and reads their
   records; an item whose record is complete (:func:`pyinvert.batch.store.is_complete`) is
   skipped. The ranks exchange the results (one all-gather).
4. The pending items, sorted by configuration (rep, recipe, overrides, restarts) and manifest
   order, are dealt round-robin again, so each rank gets an even share of each kind.
5. Each rank prepares its items (recipe and overrides, representation, image, size; a problem
   makes that item fail), groups them by (rep, recipe, overrides, restarts, image size,
   channels) and runs each group in :func:`pyinvert.invert` calls of up to ``batch_size``
   images (and ``max_batch_pixels`` pixels). An exception that breaks a call makes its items
   run again one at a time. Every item's outputs are committed as a whole
   (:func:`pyinvert.batch.store.commit_item`); rank 0 rewrites the summary and report after
   each of its batches.
6. Rank 0 gathers every rank's records and writes the final summary and report.

Each item is inverted with its own seed, derived from the job's seed and the item's id
(sha256), so its result does not depend on which items share its batch, on the number of
processes or on the order of the run.
"""
import dataclasses
import datetime
import hashlib
import math
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from pyinvert.batch import report as _report
from pyinvert.batch import store as _store
from pyinvert.batch.dist import Dist
from pyinvert.batch.manifest import Item, ManifestError, read_manifest  # noqa: F401

#: Default ceiling on the pixels (images x restarts x H x W) optimized in one call.
MAX_BATCH_PIXELS = 64 * 256 * 256

#: Seconds between two rewrites of the summary and report while a job runs (at least).
SUMMARY_INTERVAL = 2.0

# Loaded images kept in memory between preparing and running (float32 values); beyond this
# they are read again when their batch runs.
_KEEP_VALUES = 1 << 28

_INT_FIELDS = ("jitter", "dsift_bin_size", "dsift_step")
_NULLABLE_FIELDS = ("bound", "sigma_reference_numel")


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived: the job stops after the item being written."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"batch: interrupted by signal {signal.Signals(signum).name}")


class UsageError(ValueError):
    """An invalid option of the job."""


class JobLocked(RuntimeError):
    """Another job holds DIR/.lock."""


class ItemError(Exception):
    """A problem of one item; ``final`` when a rerun with the same inputs would fail again."""

    def __init__(self, message: str, final: bool = True):
        super().__init__(message)
        self.final = final


@dataclass
class BatchOptions:
    """Options of a batch job (see :func:`run_batch`)."""
    steps: Optional[int] = None
    batch_size: int = 32
    device: Optional[str] = None
    seed: int = 0
    recipe: str = "cvpr2015"
    restarts: int = 1
    backend: str = "fused"
    retry_failed: bool = False
    max_batch_pixels: int = MAX_BATCH_PIXELS
    verbose: bool = True
    dist_timeout: float = 86400.0

    def validate(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"batch: expected {name} to be an int >= 1, got {v!r}")
        if self.steps is not None:
            positive_int("steps")
        for name in ("batch_size", "restarts", "max_batch_pixels"):
            positive_int(name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"batch: expected seed to be an int, got {self.seed!r}")
        if self.backend not in ("fused", "reference"):
            raise UsageError(f"batch: expected backend in ('fused', 'reference'), "
                             f"got {self.backend!r}")
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise UsageError(f"batch: expected device 'cpu' or 'cuda[:N]', got "
                                 f"{self.device!r} ({error})") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise UsageError(f"batch: device {self.device!r} asked for, but CUDA is not "
                                 f"available")
            if dev.type not in ("cpu", "cuda"):
                raise UsageError(f"batch: expected device 'cpu' or 'cuda[:N]', "
                                 f"got {self.device!r}")


def item_seed(job_seed: int, item_id: str) -> int:
    """The item's seed: 62 bits of sha256(job seed, id); the same in every process."""
    digest = hashlib.sha256(f"pyinvert-batch/{int(job_seed)}/{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def check_overrides(overrides: dict) -> dict:
    """Validate an item's recipe overrides (field names and value types) and convert them to
    :func:`pyinvert.optim.recipes.get_recipe` keyword arguments; raises :class:`ItemError`."""
    from pyinvert.optim.recipes import Recipe, Stage, get_recipe

    fields = [f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "extra")]
    base = get_recipe("cvpr2015")
    out = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ItemError(f"overrides: unknown recipe field {key!r}; expected some of "
                            f"{sorted(fields)}")
        where = f"overrides: field {key!r}"
        if key == "stages":
            if not isinstance(value, list) or not value:
                raise ItemError(f"{where}: expected a non-empty list of [lr, iterations] or "
                                f"[lr, iterations, jitter], got {value!r}")
            stages = []
            for s in value:
                if isinstance(s, dict):
                    s = [s.get("lr"), s.get("iterations"), s.get("jitter", False)]
                if not isinstance(s, list) or len(s) not in (2, 3) or not _is_number(s[0]) \
                        or not isinstance(s[1], int) or isinstance(s[1], bool) or s[1] < 1 \
                        or (len(s) == 3 and not isinstance(s[2], bool)):
                    raise ItemError(f"{where}: expected [lr, iterations >= 1] or [lr, "
                                    f"iterations, jitter (true/false)], got {s!r}")
                stages.append(Stage(float(s[0]), int(s[1]), *(s[2:])))
            out[key] = tuple(stages)
            continue
        default = getattr(base, key)
        if value is None and key in _NULLABLE_FIELDS:
            out[key] = None
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ItemError(f"{where}: expected true or false, got {value!r}")
            out[key] = value
        elif key in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ItemError(f"{where}: expected an integer, got {value!r}")
            out[key] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ItemError(f"{where}: expected a string, got {value!r}")
            out[key] = value
        else:
            if not _is_number(value):
                raise ItemError(f"{where}: expected a finite number"
                                + (" or null" if key in _NULLABLE_FIELDS else "")
                                + f", got {value!r}")
            out[key] = float(value)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean(v):
    """JSON-safe: non-finite floats become None, tuples lists."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(u) for u in v]
    if isinstance(v, torch.Tensor):
        return _clean(v.tolist())
    return v


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Task:
    index: int
    item: Item
    recipe: object          # pyinvert.optim.recipes.Recipe (overrides and steps applied)
    rep: object             # the representation module
    restarts: int
    seed: int
    height: int
    width: int
    channels: int
    image: Optional[torch.Tensor] = None

    @property
    def group(self):
        it = self.item
        return (it.rep, self.recipe.name, it.overrides_key, self.restarts, self.height,
                self.width, self.channels)


class _Job:
    def __init__(self, items: List[Item], manifest: Path, out: Path, opts: BatchOptions):
        self.items = items
        self.manifest = manifest
        self.out = out
        self.opts = opts
        self.defaults = {"recipe": opts.recipe, "restarts": opts.restarts}
        self.records: Dict[int, dict] = {}      # index -> record (known to this rank)
        self.new: Dict[int, dict] = {}          # index -> record made by this rank, this run
        self.fingerprints: Dict[int, str] = {}
        self.digests: Dict[int, Optional[str]] = {}
        self.skipped = 0
        self._stop: Optional[int] = None
        self._old_handlers = {}
        self._reps = {}
        self._kept = 0
        self.dist = Dist()
        self.run_id = ""
        self.started_at = _now()
        self.t0 = time.perf_counter()
        self._next_summary = self.t0 + SUMMARY_INTERVAL
        dev = torch.device(opts.device) if opts.device is not None else torch.device("cpu")
        self.device = dev

    # ---- small helpers -------------------------------------------------------------------

    def log(self, message: str, error: bool = False) -> None:
        if self.opts.verbose or error:
            prefix = f"[rank {self.dist.rank}] " if self.dist.distributed else ""
            print(f"pyinvert batch: {prefix}{message}", file=sys.stderr if error else sys.stdout,
                  flush=True)

    def recipe_of(self, item: Item) -> str:
        return item.recipe or self.opts.recipe

    def restarts_of(self, item: Item) -> int:
        return item.restarts or self.opts.restarts

    def config_key(self, item: Item):
        return (item.rep, self.recipe_of(item), item.overrides_key, self.restarts_of(item))

    def fingerprint_of(self, index: int, digest: Optional[str]) -> str:
        item = self.items[index]
        return _store.fingerprint({
            "format": _store.ITEM_FORMAT, "id": item.id, "image_sha256": digest,
            "rep": item.rep, "recipe": self.recipe_of(item), "overrides": item.overrides,
            "restarts": self.restarts_of(item), "steps": self.opts.steps,
            "seed": item_seed(self.opts.seed, item.id), "backend": self.opts.backend})

    def check_stop(self) -> None:
        if self._stop is not None:
            raise Interrupted(self._stop)

    def _on_signal(self, signum, frame):
        if self._stop is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._stop = signum

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # ---- the run --------------------------------------------------------------------------

    def run(self) -> dict:
        opts = self.opts
        lock = None
        self._install_signals()
        try:
            dev = self.device
            self.dist = Dist.from_env(dev.type, timeout_s=opts.dist_timeout)
            if dev.type == "cuda" and self.dist.distributed and dev.index is None:
                self.device = torch.device("cuda", self.dist.local_rank)
            self.out.mkdir(parents=True, exist_ok=True)
            locked = True
            if self.dist.is_main:
                lock = _store.JobLock(self.out)
                locked = lock.acquire()
                if locked:
                    _store.clean_partial(self.out)
            locked = self.dist.broadcast(locked)
            if not locked:
                raise JobLocked(f"batch: another job is writing {self.out} (it holds "
                                f"{self.out / '.lock'})")
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self.run_id = self.dist.broadcast(f"{stamp}-{uuid.uuid4().hex[:8]}")
            self.dist.barrier()
            self.log(f"run {self.run_id}: {len(self.items)} item(s) in {self.manifest}"
                     + (f", {self.dist.world_size} processes" if self.dist.distributed else ""))

            mine = self._check_and_deal()
            self._process(mine)
            if self.dist.distributed and self.dist.is_main:
                # What rank 0 knows now, in case the final exchange never completes.
                self._write_outputs(final=False, done_this_run=None)

            gathered = self.dist.all_gather(self.new)
            for part in gathered:
                self.records.update(part)
            done_this_run = sum(len(p) for p in gathered)
            job = self._write_outputs(final=True, done_this_run=done_this_run)
            code = self.dist.broadcast(job["exit_status"])
            job["exit_status"] = code
            if self.dist.is_main:
                shutil.rmtree(self.out / _store.PARTIAL, ignore_errors=True)
                t = _report.totals(self._rows())
                self.log(f"{t['ok']} ok, {t['failed']} failed of {t['items']} item(s) "
                         f"({done_this_run} done now, {self.skipped} skipped as done) in "
                         f"{job['seconds']:.1f} s; summary: {self.out / 'summary.csv'}, "
                         f"report: {self.out / 'index.html'}")
            else:
                self.log(f"done: {len(self.new)} item(s) written by this process")
            return job
        except Interrupted as stop:
            self.log(f"stopped by {signal.Signals(stop.signum).name}; finished items are kept, "
                     f"a rerun does the rest", error=True)
            job = None
            if self.dist.is_main and self.run_id:
                try:
                    job = self._write_outputs(final=False, done_this_run=len(self.new),
                                              interrupted=True)
                except Exception as error:  # the summary is a convenience here
                    self.log(f"could not write the summary: {error}", error=True)
            job = job or {}
            job["exit_status"] = 128 + stop.signum
            return job
        finally:
            self._restore_signals()
            if lock is not None:
                lock.release()
            self.dist.close()

    def _check_and_deal(self) -> List[int]:
        """Find the complete items (each rank checks a share) and deal the others out."""
        rank, world = self.dist.rank, self.dist.world_size
        found = []
        for index in range(rank, len(self.items), world):
            self.check_stop()
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
        self.check_stop()
        self.skipped = len(self.records)
        pending = [i for i in range(len(self.items)) if i not in self.records]
        pending.sort(key=lambda i: (self.config_key(self.items[i]), i))
        mine = pending[rank::world]
        if self.skipped:
            self.log(f"{self.skipped} item(s) already done (skipped), {len(pending)} to do")
        return sorted(mine)

    def _process(self, mine: List[int]) -> None:
        ready = []
        for index in mine:
            self.check_stop()
            try:
                ready.append(self._prepare(index))
            except ItemError as error:
                self._fail(index, str(error), error.final)
        groups = OrderedDict()
        for task in sorted(ready, key=lambda t: (tuple(map(str, t.group)), t.index)):
            groups.setdefault(task.group, []).append(task)
        done = 0
        total = len(ready)
        for key, tasks in groups.items():
            for chunk in self._chunks(tasks):
                self.check_stop()
                t0 = time.perf_counter()
                self._run_chunk(chunk)
                done += len(chunk)
                ok = sum(1 for t in chunk if self.new.get(t.index, {}).get("status") == "ok")
                self.log(f"{done}/{total}: {len(chunk)} x {key[0]} {key[1]} "
                         f"{key[4]}x{key[5]} in {time.perf_counter() - t0:.1f} s "
                         f"({ok} ok, {len(chunk) - ok} failed)")
                if self.dist.is_main and time.perf_counter() >= self._next_summary:
                    t1 = time.perf_counter()
                    self._write_outputs(final=False, done_this_run=None)
                    # At most every 2 s, and at most 10% of the time on large jobs.
                    self._next_summary = time.perf_counter() + max(
                        SUMMARY_INTERVAL, 10 * (time.perf_counter() - t1))
                self.check_stop()

    def _chunks(self, tasks):
        chunk, pixels = [], 0
        for t in tasks:
            p = t.height * t.width * t.restarts
            if chunk and (len(chunk) >= self.opts.batch_size
                          or pixels + p > self.opts.max_batch_pixels):
                yield chunk
                chunk, pixels = [], 0
            chunk.append(t)
            pixels += p
        if chunk:
            yield chunk

    # ---- one item -------------------------------------------------------------------------

    def _representation(self, item: Item, recipe):
        from pyinvert.representations import make_representation

        key = (item.rep, recipe.name, item.overrides_key)
        if key not in self._reps:
            try:
                rep = make_representation(item.rep, backend=self.opts.backend, recipe=recipe)
                if hasattr(rep, "to"):
                    rep = rep.to(self.device)
                self._reps[key] = rep
            except (ValueError, TypeError, KeyError, LookupError, FileNotFoundError,
                    ImportError) as error:
                self._reps[key] = ItemError(f"representation {item.rep!r}: {error}")
            except Exception as error:  # e.g. a network or device problem: may pass later
                self._reps[key] = ItemError(f"representation {item.rep!r}: "
                                            f"{type(error).__name__}: {error}", final=False)
        rep = self._reps[key]
        if isinstance(rep, ItemError):
            raise rep
        return rep

    def _prepare(self, index: int) -> _Task:
        from pyinvert.io import load_image
        from pyinvert.optim.recipes import get_recipe

        item = self.items[index]
        overrides = check_overrides(item.overrides)
        try:
            recipe = get_recipe(self.recipe_of(item), **overrides)
            if self.opts.steps is not None:
                recipe = recipe.scaled(self.opts.steps)
        except (ValueError, TypeError) as error:
            raise ItemError(f"recipe {self.recipe_of(item)!r} with overrides "
                            f"{item.overrides_key}: {error}") from None
        rep = self._representation(item, recipe)
        if self.digests.get(index) is None and not item.path.is_file():
            raise ItemError(f"image not found: {item.path}")
        try:
            image = load_image(item.path)
        except (OSError, ValueError, TypeError) as error:
            raise ItemError(f"cannot read the image: {error}") from None
        except Exception as error:
            raise ItemError(f"cannot read the image {item.path}: {type(error).__name__}: "
                            f"{error}") from None
        C, H, W = image.shape
        need = int(getattr(rep, "min_size", 1))
        if H < need or W < need:
            raise ItemError(f"image too small: {item.path} is {H}x{W} pixels, the "
                            f"representation {item.rep!r} needs at least {need}x{need}")
        keep = self._kept + image.numel() <= _KEEP_VALUES
        if keep:
            self._kept += image.numel()
        return _Task(index=index, item=item, recipe=recipe, rep=rep,
                     restarts=self.restarts_of(item), seed=item_seed(self.opts.seed, item.id),
                     height=H, width=W, channels=C, image=image if keep else None)

    def _base_record(self, index: int) -> dict:
        item = self.items[index]
        return {
            "format": _store.ITEM_FORMAT, "id": item.id, "status": None, "error": None,
            "final": True, "fingerprint": self.fingerprints[index], "run_id": self.run_id,
            "rank": self.dist.rank, "host": socket.gethostname(), "finished_at": None,
            "line": item.line, "image": item.image, "image_path": str(item.path),
            "image_sha256": self.digests.get(index), "rep": item.rep,
            "recipe": self.recipe_of(item), "overrides": item.overrides,
            "restarts": self.restarts_of(item), "steps": self.opts.steps,
            "seed": item_seed(self.opts.seed, item.id), "job_seed": self.opts.seed,
        }

    def _fail(self, index: int, message: str, final: bool = True, extra=None) -> None:
        item = self.items[index]
        record = self._base_record(index)
        record.update(status="failed", error=message, final=bool(final), finished_at=_now(),
                      **(extra or {}))
        record = _clean(record)
        try:
            record = _store.commit_item(self.out, item.slug, f"{self.run_id}.{self.dist.rank}",
                                        None, record)
        except OSError as error:
            self.log(f"item {item.id!r}: could not write its record: {error}", error=True)
        self.records[index] = record
        self.new[index] = record
        self.log(f"item {item.id!r} (line {item.line}) failed: {message}", error=True)

    def _run_chunk(self, tasks: List[_Task]) -> None:
        from pyinvert.tasks.inversion import invert
        from pyinvert.io import load_image

        images, ok = [], []
        for t in tasks:
            image = t.image
            if image is None:
                try:
                    image = load_image(t.item.path)
                except Exception as error:
                    self._fail(t.index, f"cannot read the image: {error}")
                    continue
                if tuple(image.shape) != (t.channels, t.height, t.width):
                    self._fail(t.index, f"the image changed while the job ran: {t.item.path}",
                               final=False)
                    continue
            images.append(image)
            ok.append(t)
        if not ok:
            return
        tasks = ok
        first = tasks[0]
        try:
            result = invert(torch.stack(images), representation=first.rep,
                            recipe=first.recipe, restarts=first.restarts,
                            seeds=[t.seed for t in tasks], device=self.device,
                            backend=self.opts.backend, progress=False,
                            callback=lambda *a: self._stop is not None,
                            names=[t.item.id for t in tasks])
        except Exception as error:
            if len(tasks) > 1:
                self.log(f"a batch of {len(tasks)} failed ({type(error).__name__}: {error}); "
                         f"running its items one at a time", error=True)
                for t in tasks:
                    self.check_stop()
                    self._run_chunk([t])
                return
            self._fail(first.index, f"inversion failed: {type(error).__name__}: {error}",
                       final=isinstance(error, (ValueError, TypeError)))
            return
        finally:
            for t in tasks:
                t.image = None
        self.check_stop()  # invert stopped early on a signal: its results are not kept
        quality = self._image_metrics(result, first)
        for i, t in enumerate(tasks):
            try:
                self._finish(t, result, i, len(tasks), quality)
            except Exception as error:
                self._fail(t.index, f"writing the outputs failed: {type(error).__name__}: "
                                    f"{error}", final=False)

    @staticmethod
    def _image_metrics(result, task: _Task):
        """PSNR and SSIM of every reconstruction against its original, [B, R] each (None
        where not sensible), computed for the whole batch at once."""
        from pyinvert import metrics

        recon = result.images.cpu()
        B, R = recon.shape[0], task.restarts
        recon = recon.reshape(B * R, *recon.shape[-3:])
        original = result.originals.cpu().repeat_interleave(R, dim=0)
        if recon.shape != original.shape or B == 0:
            return None, None
        psnr = metrics.psnr(recon, original).reshape(B, R)
        ssim = metrics.ssim(recon, original).reshape(B, R) \
            if min(task.height, task.width) >= 11 else None
        return psnr, ssim

    def _finish(self, task: _Task, result, i: int, batch_items: int, quality) -> None:
        from pyinvert import figures
        from pyinvert.io import save_image

        R = task.restarts
        recon = result.images[i].cpu()
        recon = recon if recon.dim() == 4 else recon.unsqueeze(0)           # [R, C, H, W]
        fe = result.feature_error[i].reshape(R).double()
        failed = result.failed[i].reshape(R)
        stopped = result.stopped_at[i].reshape(R)
        original = result.originals[i].cpu()
        target = result.targets[i].detach().cpu()
        batch = {"items": batch_items, "seconds": round(result.seconds, 4),
                 "device": str(self.device)}
        T = int(result.settings.get("iterations", 0))
        if float(target.double().square().sum()) == 0.0:
            self._fail(task.index, "the image's code is all zeros (a flat image?): the "
                                   "normalized feature error is undefined",
                       extra={"batch": batch, "size": [task.height, task.width]})
            return
        if bool(failed.any()):
            which = [int(r) for r in torch.nonzero(failed).flatten()]
            where = ", ".join(f"restart {r} at iteration {int(stopped[r])} of {T}"
                              if R > 1 else f"at iteration {int(stopped[r])} of {T}"
                              for r in which)
            self._fail(task.index, f"diverged: the loss became NaN/Inf ({where}); try a "
                                   f"smaller learning rate", extra={
                                       "batch": batch, "size": [task.height, task.width]})
            return
        psnr, ssim = quality
        per_restart = [{"restart": r, "feature_error": float(fe[r]),
                        "psnr": float(psnr[i, r]) if psnr is not None else None,
                        "ssim": float(ssim[i, r]) if ssim is not None else None}
                       for r in range(R)]
        best = min(range(R), key=lambda r: per_restart[r]["feature_error"])
        names = ["reconstruction.png"] if R == 1 else [f"reconstruction-r{r}.png"
                                                       for r in range(R)]
        rep_name = getattr(task.rep, "name", str(task.item.rep))

        def write_files(folder: Path):
            save_image(folder / "original.png", original)
            for r, name in enumerate(names):
                save_image(folder / name, recon[r])
            try:
                fig = figures.side_by_side(original, recon[best], target,
                                           representation=rep_name)
            except Exception:  # a code that cannot be drawn: the figure without it
                fig = figures.side_by_side(original, recon[best], None,
                                           representation=rep_name)
            save_image(folder / "figure.png", fig)
            return ["original.png", *names, "figure.png"]

        record = self._base_record(task.index)
        record.update(
            status="ok", finished_at=_now(), size=[task.height, task.width],
            metrics={**{k: v for k, v in per_restart[best].items() if k != "restart"},
                     "best_restart": best},
            restart_metrics=per_restart if R > 1 else None,
            files={"original": "original.png", "reconstruction": names[best],
                   "reconstructions": names, "figure": "figure.png"},
            batch=batch, settings=result.settings)
        record = _store.commit_item(self.out, task.item.slug,
                                    f"{self.run_id}.{self.dist.rank}", write_files,
                                    _clean(record))
        self.records[task.index] = record
        self.new[task.index] = record

    # ---- summary and report --------------------------------------------------------------

    def _rows(self) -> List[dict]:
        return [_report.summary_row(item, item.slug, self.records.get(i), self.defaults)
                for i, item in enumerate(self.items)]

    def _refresh_from_disk(self) -> None:
        """Rank 0: pick up the records other ranks have written during this run."""
        if not self.dist.distributed:
            return
        for i, item in enumerate(self.items):
            if i in self.records or i not in self.fingerprints:
                continue
            record = _store.read_record(self.out, item.slug)
            if record and record.get("fingerprint") == self.fingerprints[i] \
                    and record.get("run_id") == self.run_id:
                self.records[i] = record

    def _write_outputs(self, final: bool, done_this_run: Optional[int],
                       interrupted: bool = False) -> dict:
        if not final:
            self._refresh_from_disk()
        rows = self._rows()
        if done_this_run is None:
            done_this_run = sum(1 for r in self.records.values()
                                if r.get("run_id") == self.run_id)
        seconds = time.perf_counter() - self.t0
        status = _report.job_status(rows)
        job = {
            "manifest": str(self.manifest), "out": str(self.out), "run_id": self.run_id,
            "started_at": self.started_at, "updated_at": _now(), "finished": bool(final),
            "interrupted": interrupted, "world_size": self.dist.world_size,
            "device": str(self.device), "steps": self.opts.steps,
            "batch_size": self.opts.batch_size, "seed": self.opts.seed,
            **_report.totals(rows), "done_this_run": done_this_run, "skipped": self.skipped,
            "seconds": seconds,
            "items_per_second": done_this_run / seconds if seconds > 0 else None,
            "exit_status": status,
        }
        if self.dist.is_main:
            _report.write_summary(self.out, rows, job)
            _report.write_report(self.out, rows, job)
        return job


def run_batch(manifest, out, *, steps: Optional[int] = None, batch_size: int = 32,
              device: Optional[str] = None, seed: int = 0, recipe: str = "cvpr2015",
              restarts: int = 1, backend: str = "fused", retry_failed: bool = False,
              max_batch_pixels: int = MAX_BATCH_PIXELS, verbose: bool = True) -> dict:
    """Invert every item of a manifest into ``out`` (see :mod:`pyinvert.batch`).

    Under torchrun, every process calls this with the same arguments: each does its share and
    rank 0 writes the summary and the report.

    Args:
        manifest: path of the manifest (.csv with a header, or .jsonl).
        out: the output folder (created; a rerun skips the items already done there).
        steps: iterations per inversion (the recipe's schedule stretched or shortened);
            None: the recipe's own. Default: None.
        batch_size: images optimized together at most. Default: 32.
        device: "cpu", "cuda" (under torchrun: the local rank's GPU) or "cuda:N";
            None: the CPU. Default: None.
        seed: the job's seed; each item's seed is derived from it and the item's id.
            Default: 0.
        recipe: the recipe of the items that name none. Default: 'cvpr2015'.
        restarts: the restarts of the items that give none. Default: 1.
        backend: "fused" or "reference". Default: 'fused'.
        retry_failed: run again the items recorded as failed for a lasting reason (a rerun
            always retries the others). Default: False.
        max_batch_pixels: at most this many pixels (images x restarts x H x W) in one
            optimization. Default: 4194304.
        verbose: print progress lines. Default: True.

    Returns:
        The job's totals (as in summary.json's "job"), with "exit_status": 0 when every item
        is ok, 1 when some failed, 128 + the signal number when stopped by SIGTERM/SIGINT.

    Raises:
        ManifestError: the manifest's form is wrong (nothing has run).
        UsageError: an option is invalid (a ValueError).
        JobLocked: another job is writing ``out``.
    """
    opts = BatchOptions(steps=steps, batch_size=batch_size, device=device, seed=seed,
                        recipe=recipe, restarts=restarts, backend=backend,
                        retry_failed=retry_failed, max_batch_pixels=max_batch_pixels,
                        verbose=verbose)
    opts.validate()
    items = read_manifest(manifest)
    return _Job(items, Path(manifest), Path(out), opts).run()
