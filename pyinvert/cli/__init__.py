"""Command line (also ``python -m pyinvert``): ``pyinvert invert``, ``actmax``, ``caricature``,
``dream``, ``models``, ``batch`` (see :mod:`pyinvert.batch`), ``reproduce table1``,
``equivariance`` and ``equivalence`` (:mod:`pyinvert.analysis.command`), ``attribute`` and
``patches`` (:mod:`pyinvert.attribution.command`); one
module per subcommand (``add_parser(subparsers)`` + ``run(args)``).

CNN layers: ``pyinvert invert IMAGES --rep cnn:mobilenet_v2:features.3,features.6`` inverts each
listed layer separately (``--joint``: all of them as one code) and draws the per-layer grid
(original, then one reconstruction per layer); ``--window N`` / ``--channels`` reconstruct
from a subset of the neurons, ``--restarts R --invariance`` draws the per-pixel spread across
R reconstructions. ``pyinvert actmax --model M --class K`` (or ``--layer L --channel K
[--neuron y,x]``), ``pyinvert caricature IMAGE --model M --layer L``, ``pyinvert dream IMAGE
--model M --layer L --octaves N`` write PNG grids and JSON records; ``pyinvert models [NAME]``
describes the model zoo.

With no arguments, ``pyinvert`` inverts the HOG of the bundled sample photos into
./pyinvert-out/. Each image gets its reconstruction (PNG), a side-by-side figure (original |
code | reconstruction | error map) and a JSON of metrics. Every input gets its own output
names (:func:`pyinvert.io.output_names`): no file of one input is another input's, a run-level
file (summary.json) or an input file. A bad input (missing file, a folder, unreadable or
corrupt image, non-finite pixels, over the pixel limit, smaller than the representation needs)
is reported on one line and skipped, the other images' results are kept. Before any work the
device, the pixel limit and the output folder (created, then a probe written) are checked.

Exit status: 0 every input done; 1 some input failed or an output could not be written;
2 a usage error (bad option, unknown model or layer, no usable device, output folder not
writable) or no input could be processed; 130 interrupted (Ctrl-C). ``batch`` documents its own
(:mod:`pyinvert.batch.command`).
"""

import argparse
import sys

from pyinvert.analysis import command as analysis_command
from pyinvert.attribution import command as attribution_command
from pyinvert.batch import command as batch_command
from pyinvert.cli import (
    actmax,
    caricature,
    common,
    dream,
    invert,
    models,  # noqa: F401
    reproduce,
    style,
    texture,
    train_decoder,
)
from pyinvert.cli import embed, filters, fool, neighbors  # the toolbox's subcommands
from pyinvert.cli import denoise, train_prior  # the learned priors' subcommands

#: The subcommands, in the order of ``pyinvert --help``.
COMMANDS = {
    "invert": invert,
    "reproduce": reproduce,
    "actmax": actmax,
    "caricature": caricature,
    "dream": dream,
    "models": models,
    "batch": batch_command,
    "equivariance": analysis_command,
    "equivalence": analysis_command,
    "attribute": attribution_command,
    "patches": attribution_command,
    "texture": texture,
    "style": style,
    "filters": filters,
    "neighbors": neighbors,
    "embed": embed,
    "fool": fool,
    "train-prior": train_prior,
    "denoise": denoise,
    "train-decoder": train_decoder,
}

EPILOG = """\
exit status: 0 all inputs done, 1 some input failed or an output could not be written,
2 usage error or no input could be processed.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyinvert",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Invert visual representations (Mahendran & Vedaldi, CVPR 2015 / IJCV\n"
        "2016). With no arguments: invert the HOG of the bundled photos into\n"
        "./pyinvert-out/.",
    )
    sub = parser.add_subparsers(dest="command")
    for module in dict.fromkeys(COMMANDS.values()):  # a module may add several subcommands
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (argparse's usage errors exit with status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["invert", *argv]  # `pyinvert [IMAGES...] [options]` means `pyinvert invert ...`
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if "parser" in vars(args):  # the subcommands that share common.BOUNDS
        common.check_bounds(args.parser, args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        common.error("interrupted")
        return 130


__all__ = ["main", "build_parser", "COMMANDS"]
