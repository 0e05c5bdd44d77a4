"""``pyinvert filters --model M [--layer L]``: a grid of a layer's filters (``--model hog`` /
``dsift``: the descriptor's templates). Writes ``filters.png`` and ``filters.json``."""

from pathlib import Path

import pyinvert
from pyinvert import models
from pyinvert.cli import common
from pyinvert.cli.common import error, say


def add_parser(subparsers):
    p = subparsers.add_parser(
        "filters", help="a layer's filters as a grid (HOG / DSIFT: their templates)"
    )
    p.add_argument(
        "--model",
        default="mobilenet_v2",
        help=f"a zoo model ({', '.join(models.MODELS)}), hog or dsift (default: %(default)s)",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="the convolution's module name (default: the first convolution)",
    )
    p.add_argument(
        "--max-filters",
        type=common.integer,
        default=64,
        help="draw at most this many filters (default: %(default)s)",
    )
    p.add_argument(
        "--columns",
        type=common.integer,
        default=None,
        help="tiles per row (default: a near-square grid)",
    )
    p.add_argument(
        "--out", default="pyinvert-out/filters", help="output folder (default: %(default)s)"
    )
    common.add_weights(p)
    p.set_defaults(func=common.guard(run), parser=p)
    return p


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    if args.max_filters < 1:
        error(f"filters: expected --max-filters >= 1, got {args.max_filters}")
        return 2
    name = args.model.lower()
    if name == "hog":
        target = pyinvert.HOG()
    elif name == "dsift":
        target = pyinvert.DenseSIFT()
    else:
        target = models.load_model(name, weights=common.weights(args))
    result = pyinvert.filters(
        target, args.layer, max_filters=args.max_filters, columns=args.columns
    )
    out = Path(args.out)
    try:
        written = result.save(out)
    except OSError as e:
        error(common.cannot_write(f"the figure into {out}", e))
        return 1
    what = result.settings.get("layer", name)
    say(f"filters: {result.tiles.shape[0]} of {what} -> {written[0]}")
    return 0
