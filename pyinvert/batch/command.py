"""The ``batch`` subcommand: ``pyinvert batch MANIFEST --out DIR [options]``.

:func:`add_parser` adds it to an argparse subparsers object and :func:`run` runs it (returns
the exit status); ``python -m pyinvert.batch MANIFEST --out DIR`` uses them too.

Exit status: 0 every item ok; 1 some item failed (or the summary could not be written); 2 a
bad manifest or usage; 128 + N when stopped by signal N (143 for SIGTERM). Under torchrun
the launcher itself exits 0 when every process did and 1 otherwise; the job's own status is
in summary.json ("exit_status").
"""

import argparse
import sys

from pyinvert.batch.job import run_batch
from pyinvert.batch.manifest import ManifestError
from pyinvert.batch.options import MAX_BATCH_PIXELS, UsageError
from pyinvert.batch.store import JobLocked

DESCRIPTION = """\
Invert the items of a manifest (CSV with a header, or JSON lines) into DIR: for each item a
reconstruction PNG, a figure and a JSON of metrics under DIR/items/<id>/, then
DIR/summary.csv, DIR/summary.json and the report DIR/index.html. Items with the same
representation, recipe, overrides, restarts and image size are inverted together in batches.
A rerun skips the items already done. Under torchrun the items are shared out between the
processes, e.g.  torchrun --nproc-per-node 2 -m pyinvert batch MANIFEST --out DIR
"""

EPILOG = """\
manifest fields: id, image (relative to the manifest's folder, or absolute), rep (hog, hogb,
dsift, cnn:MODEL:LAYER), and optionally recipe (cvpr2015, ijcv2016), restarts, overrides (a
JSON object of recipe constants, e.g. {"tv_weight": 2.0}).
bounds: --steps and an item's iterations <= 100000, --batch-size <= 4096, restarts <= 100,
--max-batch-pixels <= 2**30, an image <= 2**26 pixels, a manifest <= 1000000 items.
exit status: 0 all items ok, 1 some failed (or the summary could not be written), 2 bad
manifest or usage, 143 stopped by SIGTERM.
"""


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("manifest", help="the manifest: a .csv (with a header) or .jsonl file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="iterations per inversion, at most 100000 (default: the recipe's schedule)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images optimized together at most, at most 4096 (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda (under torchrun: each process its local GPU); default: cpu",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="job seed; each item's seed derives from it and the item's id (default: %(default)s)",
    )
    p.add_argument(
        "--recipe",
        choices=("cvpr2015", "ijcv2016"),
        default="cvpr2015",
        help="recipe of the items that name none (default: %(default)s)",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=1,
        help="restarts of the items that give none, at most 100 (default: %(default)s)",
    )
    p.add_argument("--backend", choices=("fused", "reference"), default="fused")
    p.add_argument(
        "--max-batch-pixels",
        type=int,
        default=None,
        help="at most this many pixels (images x restarts x H x W) optimized "
        "together (default: 4194304)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also redo the items recorded as failed for a lasting reason",
    )
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to ``subparsers`` (from ``add_subparsers()``)."""
    p = subparsers.add_parser(
        "batch",
        help="invert the items of a manifest (resumable, torchrun-aware)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyinvert.batch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_arguments(p)


def run(args) -> int:
    """Run the job the parsed ``args`` describe; returns the exit status."""
    try:
        job = run_batch(
            args.manifest,
            args.out,
            steps=args.steps,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            recipe=args.recipe,
            restarts=args.restarts,
            backend=args.backend,
            retry_failed=args.retry_failed,
            max_batch_pixels=args.max_batch_pixels or MAX_BATCH_PIXELS,
            verbose=not args.quiet,
        )
    except (ManifestError, JobLocked, UsageError) as error:
        print(f"pyinvert batch: error: {str(error).replace('batch: ', '', 1)}", file=sys.stderr)
        return 2
    return int(job.get("exit_status", 1))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
