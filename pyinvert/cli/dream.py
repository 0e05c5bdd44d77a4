"""``pyinvert dream IMAGES --model M --layer L --octaves N``: DeepDream over octaves.

Each image gets ``<name>.png`` (at the input size) and ``<name>-dream.png``; the run
``result.json``."""

from pyinvert.cli import common
from pyinvert.cli.caricature import add_image_command, run_amplify


def add_parser(subparsers):
    c = add_image_command(subparsers, "dream", "DeepDream: amplify a layer over octaves", run)
    c.add_argument(
        "--octaves",
        type=common.integer,
        default=4,
        help=f"scales, at most {common.BOUNDS['octaves'][1]} (default: %(default)s)",
    )
    c.add_argument(
        "--octave-scale",
        type=common.positive_float,
        default=1.4,
        help="ratio between scales, > 1 (default: %(default)s)",
    )
    c.add_argument(
        "--lr", type=common.positive_float, default=None, help="step length in 0-255 units"
    )
    return c


def run(args) -> int:
    if not 1 < args.octave_scale <= 4:
        args.parser.error(f"--octave-scale must be in (1, 4], got {args.octave_scale}")
    return run_amplify(args, "dream")
