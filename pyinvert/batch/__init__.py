"""Batch jobs at scale: ``pyinvert batch MANIFEST --out DIR``.

A manifest lists the items to invert, one per row, as CSV with a header or as JSON lines
(by extension .csv / .jsonl, otherwise sniffed)::

    id,image,rep,recipe,restarts,overrides
    cat,photos/cat.jpg,hog,,,
    cat-tv2,photos/cat.jpg,hog,cvpr2015,2,"{""tv_weight"": 2.0}"
    mug,/data/mug.png,dsift,ijcv2016,,

    {"id": "cat", "image": "photos/cat.jpg", "rep": "hog"}
    {"id": "cat-tv2", "image": "photos/cat.jpg", "rep": "hog", "overrides": {"tv_weight": 2.0}}

``id``, ``image`` (relative to the manifest's folder, or absolute) and ``rep`` are required;
``recipe``, ``restarts`` and ``overrides`` (a JSON object of :class:`pyinvert.optim.recipes.Recipe`
fields; ``stages`` as ``[[lr, iterations], ...]``) are optional. A manifest whose *form* is
wrong (missing column, duplicate id, ids that would share a folder, invalid JSON, restarts
out of [1, 100], ...) is rejected before anything runs, with every problem listed by line and
field (exit status 2); an item whose *content* is wrong (missing or unreadable image, image
too small or too large, non-finite pixel values, unknown representation or layer, an
override unknown, of the wrong type or out of its range, divergence) is recorded as failed
with a one-line reason and the job goes on (see :mod:`pyinvert.batch.manifest`,
:mod:`pyinvert.batch.overrides`, :mod:`pyinvert.batch.prepare`). Every count is bounded
(:mod:`pyinvert.batch.options`).

Run it::

    pyinvert batch manifest.csv --out runs/a --steps 200 --batch-size 32
    python -m pyinvert.batch manifest.csv --out runs/a          # the same
    torchrun --nproc-per-node 2 -m pyinvert batch manifest.csv --out runs/a
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m pyinvert batch manifest.csv --out /shared/runs/a --device cuda

Items with the same (rep, recipe, overrides, restarts, image size, channels) are inverted
together, ``--batch-size`` images per :func:`pyinvert.invert` call. Each item has its own
seed (from ``--seed`` and its id). HOG, HOGb and DSIFT items are bit for bit the same
whether they run alone, in a batch, with any number of threads or in any process of a
torchrun job; CNN items only for the same batch, threads and device, and otherwise agree to
float round-off amplified by the optimization (measured figures in ``pyinvert/batch/README.md``).
Under torchrun (gloo on the CPU, nccl with ``--device cuda``) the pending items are dealt to
the processes, each writes its own items, and rank 0 writes the summary and the report; with
several nodes ``DIR`` must be on a file system they share.

Outputs (:mod:`pyinvert.batch.store`): ``DIR/items/<id>/`` with ``original.png``,
``reconstruction.png`` (``reconstruction-r<k>.png`` with restarts), ``figure.png`` and
``item.json`` (status, error, metrics: feature error, PSNR, SSIM; files and checksums; run
id); ``DIR/summary.csv`` and ``DIR/summary.json`` (one row per item, rewritten as batches
finish, at most every 2 seconds, and at the end); ``DIR/index.html``, a static report
(:mod:`pyinvert.batch.report`).

Nothing is lost: every item is written in ``DIR/.partial/`` and moved into ``DIR/items/``
whole, its ``item.json`` last; summaries are replaced atomically, and a failed final write (a
full disk) is one line and exit status 1, the previous files kept. SIGTERM (or Ctrl-C) stops
the job at once, set-up included, except while a finished batch's items or the summary are
being written; it then writes the summary and exits with status 143 (130); after a SIGKILL,
nothing half-written is left in ``DIR/items/``. Rerunning the same command cleans
``DIR/.partial/`` (never following a symbolic link), skips every item whose record validates,
whose files are complete and whose inputs and settings are unchanged (``item.json`` keeps the
id of the run that made it), and does the rest. Items that failed for a lasting reason are
kept as failed unless ``--retry-failed`` is given (a failure that may pass, e.g. an exception
inside the optimization, is always retried). ``index.html`` escapes every value;
``summary.csv`` neutralizes cells that a spreadsheet would run as formulas.

Exit status: 0 every item ok, 1 some item failed (or the summary could not be written), 2 a
bad manifest or usage, 128 + N when stopped by signal N.
"""

from pyinvert.batch.job import run_batch
from pyinvert.batch.manifest import Item, ManifestError, read_manifest
from pyinvert.batch.options import BatchOptions, UsageError
from pyinvert.batch.signals import Interrupted
from pyinvert.batch.store import JobLocked

__all__ = [
    "run_batch",
    "BatchOptions",
    "read_manifest",
    "Item",
    "ManifestError",
    "UsageError",
    "JobLocked",
    "Interrupted",
]
