"""``pyinvert train-prior DIR --kind foe|ica|separable --out PATH``: train a learned image
prior by score matching (:func:`pyinvert.priors.train`) on a folder of images, or on the
training photos with ``DIR = builtin`` (:func:`pyinvert.data.photos.training_photos`).

Writes the prior to ``--out`` (:func:`pyinvert.priors.store.save`, loadable with
``pyinvert.priors.load(PATH)``) and, with ``--checkpoint-every N``, a resumable checkpoint
``PATH.ckpt`` every N steps: run the same command again after a kill and it goes on from
there (the same final weights as an uninterrupted run).
"""

import time
from pathlib import Path

from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.data.photos import training_photos
from pyinvert.priors import FoE, ICA, SeparableFoE, train
from pyinvert.priors.store import save

#: The models' defaults per kind: (filter size, experts).
DEFAULTS = {"foe": (5, 24), "ica": (8, 64), "separable": (5, 8)}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train-prior",
        help="train a learned image prior (FoE, ICA, separable FoE) by score matching",
        epilog="Exit status: 0 trained and written, 1 the output could not be written, "
        "2 usage error or unreadable data.",
    )
    p.add_argument("data", help="a folder of images, or 'builtin' for the training photos")
    p.add_argument("--kind", choices=tuple(DEFAULTS), default="foe")
    p.add_argument("--out", required=True, help="the prior's file (e.g. foe.pt)")
    p.add_argument("--steps", type=common.integer, default=2000, help="(default: %(default)s)")
    p.add_argument(
        "--patch-size",
        type=common.integer,
        default=None,
        help="side of the training crops (default: k for ica, 3k+1 for the fields)",
    )
    p.add_argument(
        "--filter-size", type=common.integer, default=None, help="k (default: 5; ica: 8)"
    )
    p.add_argument(
        "--experts",
        type=common.integer,
        default=None,
        help="filters (default: 24 for foe, 64 for ica; separable: 8 spatial filters)",
    )
    p.add_argument("--channels", type=common.integer, choices=(1, 3), default=1)
    p.add_argument("--batch-size", type=common.integer, default=64, help="(default: %(default)s)")
    p.add_argument("--lr", type=common.positive_float, default=0.01, help="(default: %(default)s)")
    p.add_argument(
        "--noise",
        type=common.positive_float,
        default=None,
        help="width of the uniform noise added to the crops, in 8-bit levels (default: 1)",
    )
    p.add_argument("--seed", type=common.integer, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--checkpoint-every",
        type=common.integer,
        default=None,
        help="save a resumable checkpoint PATH.ckpt every N steps",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=common.guard(run))
    return p


def run(args) -> int:
    k0, n0 = DEFAULTS[args.kind]
    k = args.filter_size or k0
    n = args.experts or n0
    for name, v in (("--steps", args.steps), ("--experts", n), ("--filter-size", k)):
        if v < 1:
            error(f"{name} must be >= 1, got {v}")
            return 2
    make = {"foe": FoE, "ica": ICA, "separable": SeparableFoE}[args.kind]
    model = make(k, n, args.channels)
    data = training_photos() if args.data == "builtin" else args.data
    if args.data != "builtin" and not Path(args.data).is_dir():
        error(f"train-prior: expected a folder of images or 'builtin', got {args.data!r}")
        return 2
    out = Path(args.out)
    ckpt = None if args.checkpoint_every is None else out.with_name(out.name + ".ckpt")
    started = time.perf_counter()
    result = train(
        model,
        data,
        patch_size=args.patch_size,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        noise=(1.0 if args.noise is None else args.noise) / 255.0,
        checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every or 100,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - started
    meta = {
        **result.metadata,
        "steps": result.steps,
        "seconds": round(seconds, 1),
        "data": "builtin training photos" if args.data == "builtin" else str(args.data),
        "command": f"pyinvert train-prior {args.data} --kind {args.kind} --steps {args.steps}"
        f" --filter-size {k} --experts {n} --channels {args.channels} --seed {args.seed}"
        f" --batch-size {args.batch_size} --lr {args.lr} --noise {args.noise or 1.0:g}"
        + ("" if args.patch_size is None else f" --patch-size {args.patch_size}"),
    }
    try:
        save(out, model, meta)
    except OSError as e:
        error(common.cannot_write(out, e))
        return 1
    last = result.losses[-1] if result.losses else float("nan")
    say(
        f"trained {args.kind} ({k}x{k}, {n} filters) for {result.steps} steps in {seconds:.1f} s "
        f"(final loss {last:.4g}) -> {out}"
    )
    return 0
