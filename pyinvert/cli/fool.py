"""``pyinvert fool IMAGES --target K``: fooling images (targeted PGD within an epsilon-ball).
Writes ``<name>.png`` per fooled image, ``fool.png`` (original | amplified perturbation |
fooled, with both labels) and ``result.json``. Exit status 1 when an image missed its
target."""

import argparse
from fractions import Fraction
from pathlib import Path

import torch

import pyinvert
from pyinvert import models
from pyinvert.cli import common
from pyinvert.cli.common import error, say


def budget(value: str) -> float:
    """``0.03``, ``8/255``: a number > 0."""
    try:
        v = float(Fraction(value.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction like 8/255, got {common.one_line(value, 40)!r}"
        ) from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a budget > 0, got {value}")
    return v


def add_parser(subparsers):
    p = subparsers.add_parser("fool", help="fooling images: targeted PGD within an eps-ball")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument(
        "--target",
        type=common.integer,
        required=True,
        help="the target class index (ImageNet: 0-999)",
    )
    p.add_argument("--model", default="mobilenet_v2", help="model (default: %(default)s)")
    p.add_argument(
        "--eps",
        type=budget,
        default=8 / 255,
        help="the ball's radius in [0, 1] pixels, e.g. 8/255 (default: 8/255)",
    )
    p.add_argument(
        "--norm",
        choices=("linf", "l2"),
        default="linf",
        help="the ball's norm (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=common.integer,
        default=20,
        help="gradient steps at most (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=common.integer,
        default=224,
        help="images are resized and centre-cropped to this size (default: %(default)s)",
    )
    p.add_argument(
        "--out", default="pyinvert-out/fool", help="output folder (default: %(default)s)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    common.add_weights(p)
    common.add_images(p)
    p.set_defaults(func=common.guard(run), parser=p)
    return p


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    model = models.load_model(args.model, weights=common.weights(args))
    loaded, bad = common.load_inputs(args.images, 1, args.max_pixels, common.fitted(args.size))
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    out = Path(args.out)
    names = common.names_for(
        [p for p, _ in loaded], out, lambda n: [f"{n}.png"], ["fool.png", "result.json"]
    )
    result = pyinvert.fool(
        torch.stack([t for _, t in loaded]),
        model,
        args.target,
        eps=args.eps,
        steps=args.steps,
        norm=args.norm,
        device=args.device,
    )
    try:
        result.save(out, names)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    for i, name in enumerate(names):
        say(
            f"{name}: {result._label(result.original_classes[i])} -> "
            f"{result._label(result.classes[i])} p={float(result.probabilities[i]):.3f} "
            f"after {int(result.iterations[i])} steps"
            + ("" if bool(result.success[i]) else "  MISSED the target")
        )
    say(f"-> {out / 'fool.png'}")
    return 1 if (bad or not bool(result.success.all())) else 0
