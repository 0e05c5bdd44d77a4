"""``pyinvert train-decoder --rep hog|dsift|cnn:MODEL:LAYER --data DIR|builtin --out PATH``:
train a decoder (:func:`pyinvert.decoders.train`) and write its file, usable as
``pyinvert invert --decoder PATH`` and :func:`pyinvert.decoders.load`.

Under ``torchrun --nproc_per_node N -m pyinvert train-decoder ...`` the global batch
``--batch-size`` is shared between the N processes (gloo on the CPU, nccl with
``--device cuda``). ``--checkpoint FILE`` resumes a killed run from FILE.

Exit status: 0 trained and written; 1 the output could not be written; 2 a usage error (bad
option, data folder without images, a checkpoint of another run).
"""

import shlex
from pathlib import Path

import torch

from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.decoders import train
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import make_representation

DEFAULT_OUT = "decoder.pt"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train-decoder",
        help="train a decoder that inverts HOG / DSIFT / a CNN layer in one forward pass",
        epilog="Exit status: 0 trained and written, 1 the output could not be written, "
        "2 usage error.",
    )
    p.add_argument(
        "--rep",
        type=common.rep_spec,
        default="hog",
        metavar="REP",
        help="hog, hogb, dsift or cnn:MODEL:LAYER (one layer) (default: %(default)s)",
    )
    p.add_argument(
        "--data",
        default="builtin",
        help="a folder of images (searched recursively), or 'builtin' for the offline "
        "training photos (default: %(default)s)",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="the decoder file (default: %(default)s)")
    p.add_argument("--steps", type=common.integer, default=1000, help="(default: %(default)s)")
    p.add_argument(
        "--batch-size",
        type=common.integer,
        default=8,
        help="the global batch, over all torchrun processes (default: %(default)s)",
    )
    p.add_argument(
        "--size", type=common.integer, default=64, help="crop side in pixels (default: %(default)s)"
    )
    p.add_argument("--seed", type=common.integer, default=0, help="(default: %(default)s)")
    p.add_argument("--width", type=common.integer, default=8, help="(default: %(default)s)")
    p.add_argument(
        "--loss",
        choices=("pixel", "pixel+feature"),
        default="pixel+feature",
        help="(default: %(default)s)",
    )
    p.add_argument("--lr", type=common.positive_float, default=2e-3, help="(default: %(default)s)")
    p.add_argument(
        "--feature-weight",
        type=common.positive_float,
        default=1.0,
        help="weight of the feature term (default: %(default)s)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint file: resumed from if it exists, written every --checkpoint-every steps",
    )
    p.add_argument(
        "--checkpoint-every", type=common.integer, default=100, help="(default: %(default)s)"
    )
    p.add_argument(
        "--workers", type=common.integer, default=0, help="DataLoader workers (default: 0)"
    )
    p.add_argument("--threads", type=common.integer, default=None, help="torch threads")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--recipe",
        choices=("cvpr2015", "ijcv2016"),
        default="cvpr2015",
        help="dsift: the bin size and step of this recipe's DSIFT, as `pyinvert invert --rep "
        "dsift --recipe R` uses (default: %(default)s)",
    )
    p.add_argument("--weights", default="imagenet", help="CNN weights (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=common.guard(run), parser=p)
    return p


def command_line(args) -> str:
    """The command's options as one shell line (recorded in the decoder's metadata)."""
    words = ["pyinvert", "train-decoder"]
    for flag in (
        "rep",
        "data",
        "out",
        "steps",
        "batch_size",
        "size",
        "seed",
        "width",
        "loss",
        "lr",
        "feature_weight",
        "recipe",
        "threads",
        "checkpoint",
        "checkpoint_every",
        "workers",
        "device",
    ):
        v = getattr(args, flag)
        if v is not None:
            words += ["--" + flag.replace("_", "-"), str(v)]
    return shlex.join(words)


def run(args) -> int:
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    for flag, v in (("--checkpoint-every", args.checkpoint_every), ("--width", args.width)):
        if v < 1:
            error(f"{flag} must be >= 1, got {v}")
            return 2
    if args.workers < 0:
        error(f"--workers must be >= 0, got {args.workers}")
        return 2
    problem = common.device_problem(args.device)
    if problem:
        error(problem)
        return 2
    try:
        rec = get_recipe(args.recipe)
        rep = make_representation(args.rep, recipe=rec, weights=common.weights(args))
        res = train(
            rep,
            args.data,
            steps=args.steps,
            batch_size=args.batch_size,
            loss=args.loss,
            lr=args.lr,
            seed=args.seed,
            crop=args.size,
            width=args.width,
            feature_weight=args.feature_weight,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            workers=args.workers,
            progress=not args.quiet,
            device=args.device,
            out=args.out,
            command=command_line(args),
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        error(e)
        return 2
    except OSError as e:
        error(f"cannot write {args.out}: {e}")
        return 1
    last = res.losses[-1] if res.losses else float("nan")
    say(
        f"trained {res.steps} steps ({res.steps - res.start_step} in this run, "
        f"{res.seconds:.1f} s, {res.images_per_second:.1f} images/s); final loss {last:.5f}; "
        f"wrote {Path(args.out)}"
    )
    return 0
