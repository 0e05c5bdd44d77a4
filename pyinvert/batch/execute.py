"""Running one chunk of a group: one :func:`pyinvert.invert` call, then each item's record.

:meth:`Executor.run_chunk` optimizes a chunk's images together (each with its own seed), and
commits every item's outputs as a whole (:func:`pyinvert.batch.store.commit_item`) in a
:meth:`pyinvert.batch.signals.SignalGuard.deferred` block, so a signal never leaves a
finished batch half-written. An exception that breaks the call makes its items run again
one at a time; one that breaks a single item fails it (retried by a rerun). An item fails,
with its reason, when:

* its code is all zeros ("the image's code is all zeros (a flat image?)");
* its code is not finite ("the representation's code of the image is not finite");
* its loss became NaN or Inf ("diverged: ... at iteration k of T; try a smaller learning
  rate").

Non-finite pixels never get this far (:mod:`pyinvert.batch.prepare`).
"""

import datetime
import socket
from pathlib import Path
from typing import List

import torch

import pyinvert
from pyinvert import figures, metrics
from pyinvert.batch import store as _store
from pyinvert.batch.overrides import ItemError
from pyinvert.batch.plan import Task, item_seed
from pyinvert.batch.prepare import load_checked
from pyinvert.batch.records import jsonable
from pyinvert.io import save_image


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Executor:
    """Runs chunks and writes records for ``job`` (a :class:`pyinvert.batch.job.Job`: its
    items, options, output folder, run id, rank, device, signal guard and record maps)."""

    def __init__(self, job):
        self.job = job

    # ---- records --------------------------------------------------------------------------

    def base_record(self, index: int) -> dict:
        job = self.job
        item = job.items[index]
        return {
            "format": _store.ITEM_FORMAT,
            "id": item.id,
            "status": None,
            "error": None,
            "final": True,
            "fingerprint": job.fingerprints[index],
            "run_id": job.run_id,
            "rank": job.dist.rank,
            "host": socket.gethostname(),
            "finished_at": None,
            "line": item.line,
            "image": item.image,
            "image_path": str(item.path),
            "image_sha256": job.digests.get(index),
            "rep": item.rep,
            "recipe": job.prep.recipe_name(item),
            "overrides": item.overrides,
            "restarts": job.prep.restarts(item),
            "steps": job.opts.steps,
            "seed": item_seed(job.opts.seed, item.id),
            "job_seed": job.opts.seed,
        }

    def _commit(self, index: int, write_files, record: dict) -> dict:
        job = self.job
        record = _store.commit_item(
            job.out,
            job.items[index].slug,
            f"{job.run_id}.{job.dist.rank}",
            write_files,
            jsonable(record),
        )
        job.records[index] = record
        job.new[index] = record
        return record

    def fail(self, index: int, message: str, final: bool = True, extra=None) -> None:
        """Record the item as failed with ``message`` (its reason)."""
        job = self.job
        item = job.items[index]
        record = self.base_record(index)
        record.update(
            status="failed", error=message, final=bool(final), finished_at=now(), **(extra or {})
        )
        with job.guard.deferred():
            try:
                self._commit(index, None, record)
            except OSError as error:
                job.log(f"item {item.id!r}: could not write its record: {error}", error=True)
                job.records[index] = job.new[index] = jsonable({**record, "checksums": {}})
        job.log(f"item {item.id!r} (line {item.line}) failed: {message}", error=True)

    # ---- a chunk --------------------------------------------------------------------------

    def run_chunk(self, tasks: List[Task]) -> None:
        """Invert ``tasks`` (one group's, at most a batch) together and record each item."""
        job = self.job
        images, ok = [], []
        for t in tasks:
            image = t.image
            if image is None:
                try:
                    image = load_checked(t.item.path, final=False)
                except ItemError as error:
                    self.fail(t.index, str(error), error.final)
                    continue
                if tuple(image.shape) != (t.channels, t.height, t.width):
                    self.fail(
                        t.index, f"the image changed while the job ran: {t.item.path}", final=False
                    )
                    continue
            images.append(image)
            ok.append(t)
        if not ok:
            return
        tasks = ok
        first = tasks[0]
        try:
            result = pyinvert.invert(
                torch.stack(images),
                representation=first.rep,
                recipe=first.recipe,
                restarts=first.restarts,
                seeds=[t.seed for t in tasks],
                device=job.device,
                backend=job.opts.backend,
                progress=False,
                callback=lambda *a: job.guard.stopping,
                names=[t.item.id for t in tasks],
            )
        except Exception as error:
            if len(tasks) > 1:
                job.log(
                    f"a batch of {len(tasks)} failed ({type(error).__name__}: {error}); "
                    f"running its items one at a time",
                    error=True,
                )
                for t in tasks:
                    job.guard.check()
                    self.run_chunk([t])
                return
            self.fail(
                first.index,
                f"inversion failed: {type(error).__name__}: {error}",
                final=isinstance(error, (ValueError, TypeError)),
            )
            return
        finally:
            for t in tasks:
                t.image = None
        job.guard.check()  # invert stopped early on a signal: its results are not kept
        with job.guard.deferred():
            try:
                quality = image_metrics(result, first)
            except Exception as error:  # the metrics are a convenience: the items go on
                job.log(
                    f"PSNR/SSIM of a batch failed ({type(error).__name__}: {error})", error=True
                )
                quality = (None, None)
            for i, t in enumerate(tasks):
                try:
                    self._finish(t, result, i, len(tasks), quality)
                except Exception as error:
                    self.fail(
                        t.index,
                        f"writing the outputs failed: {type(error).__name__}: {error}",
                        final=False,
                    )

    def _finish(self, task: Task, result, i: int, batch_items: int, quality) -> None:
        job = self.job
        R = task.restarts
        recon = result.images[i].cpu()
        recon = recon if recon.dim() == 4 else recon.unsqueeze(0)  # [R, C, H, W]
        fe = result.feature_error[i].reshape(R).double()
        failed = result.failed[i].reshape(R)
        stopped = result.stopped_at[i].reshape(R)
        original = result.originals[i].cpu()
        target = result.targets[i].detach().cpu()
        batch = {
            "items": batch_items,
            "seconds": round(result.seconds, 4),
            "device": str(job.device),
        }
        extra = {"batch": batch, "size": [task.height, task.width]}
        T = int(result.settings.get("iterations", 0))
        if not bool(torch.isfinite(target).all()):
            self.fail(
                task.index,
                "the representation's code of the image is not finite "
                "(NaN or Inf): the image cannot be inverted",
                extra=extra,
            )
            return
        if float(target.double().square().sum()) == 0.0:
            self.fail(
                task.index,
                "the image's code is all zeros (a flat image?): the "
                "normalized feature error is undefined",
                extra=extra,
            )
            return
        if bool(failed.any()):
            which = [int(r) for r in torch.nonzero(failed).flatten()]
            where = ", ".join(
                f"restart {r} at iteration {int(stopped[r])} of {T}"
                if R > 1
                else f"at iteration {int(stopped[r])} of {T}"
                for r in which
            )
            self.fail(
                task.index,
                f"diverged: the loss became NaN/Inf ({where}); try a smaller learning rate",
                extra=extra,
            )
            return
        psnr, ssim = quality
        per_restart = [
            {
                "restart": r,
                "feature_error": float(fe[r]),
                "psnr": float(psnr[i, r]) if psnr is not None else None,
                "ssim": float(ssim[i, r]) if ssim is not None else None,
            }
            for r in range(R)
        ]
        best = min(range(R), key=lambda r: per_restart[r]["feature_error"])
        names = ["reconstruction.png"] if R == 1 else [f"reconstruction-r{r}.png" for r in range(R)]
        rep_name = getattr(task.rep, "name", str(task.item.rep))

        def write_files(folder: Path):
            save_image(folder / "original.png", original)
            for r, name in enumerate(names):
                save_image(folder / name, recon[r])
            try:
                fig = figures.side_by_side(original, recon[best], target, representation=rep_name)
            except Exception:  # a code that cannot be drawn: the figure without it
                fig = figures.side_by_side(original, recon[best], None, representation=rep_name)
            save_image(folder / "figure.png", fig)
            return ["original.png", *names, "figure.png"]

        record = self.base_record(task.index)
        record.update(
            status="ok",
            finished_at=now(),
            size=[task.height, task.width],
            metrics={
                **{k: v for k, v in per_restart[best].items() if k != "restart"},
                "best_restart": best,
            },
            restart_metrics=per_restart if R > 1 else None,
            files={
                "original": "original.png",
                "reconstruction": names[best],
                "reconstructions": names,
                "figure": "figure.png",
            },
            batch=batch,
            settings=result.settings,
        )
        self._commit(task.index, write_files, record)


def image_metrics(result, task: Task):
    """PSNR and SSIM of every reconstruction against its original, [B, R] each (None where
    not sensible), computed for the whole batch at once."""
    recon = result.images.cpu()
    B, R = recon.shape[0], task.restarts
    recon = recon.reshape(B * R, *recon.shape[-3:])
    original = result.originals.cpu().repeat_interleave(R, dim=0)
    if recon.shape != original.shape or B == 0:
        return None, None
    psnr = metrics.psnr(recon, original).reshape(B, R)
    ssim = (
        metrics.ssim(recon, original).reshape(B, R) if min(task.height, task.width) >= 11 else None
    )
    return psnr, ssim
