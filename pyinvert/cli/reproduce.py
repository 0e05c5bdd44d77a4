"""``pyinvert reproduce table1 [IMAGES]``: CVPR 2015 Table 1 (:mod:`pyinvert.experiments`)."""

from pathlib import Path

from pyinvert.cli import common
from pyinvert.cli.common import error, say, say_lines
from pyinvert.experiments import format_table1, table1
from pyinvert.experiments.table1 import ROWS, default_rows


def add_parser(subparsers):
    r = subparsers.add_parser("reproduce", help="reproduce a table of the paper")
    r.add_argument("what", choices=("table1",))
    r.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    r.add_argument(
        "--reps",
        default=None,
        help=f"comma-separated rows, of {','.join(ROWS)} (default: all; hoggle and the "
        f"decoders when their shipped files are installed and match the recipe)",
    )
    common.add_images(r)
    common.add_common(r, "pyinvert-out/table1")
    r.set_defaults(func=run, parser=r)
    return r


def run(args) -> int:
    given = ",".join(default_rows(args.recipe)) if args.reps is None else args.reps
    reps = tuple(dict.fromkeys(r.strip().lower() for r in given.split(",") if r.strip()))
    unknown = [r for r in reps if r not in ROWS]
    if unknown or not reps:
        args.parser.error(
            f"--reps: expected some of {', '.join(ROWS)}, got {common.one_line(given, 60)!r}"
        )
    if (code := common.preflight(args)) is not None:
        return code
    skipped = []

    def on_error(path, message):
        skipped.append(path)
        error(message)

    try:
        results = table1(
            args.images or None,
            reps=reps,
            recipe=args.recipe,
            steps=args.steps,
            out=args.out,
            seed=args.seed,
            backend=args.backend,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            device=args.device,
            max_pixels=args.max_pixels,
            on_error=on_error,
        )
    except ValueError as e:
        error(e)
        return 2
    except OSError as e:
        error(common.cannot_write(f"the Table 1 results into {args.out}", e))
        return 1
    say_lines(format_table1(results))
    say(f"wrote {Path(args.out) / 'table1.json'} and {Path(args.out) / 'table1-montage.png'}")
    return 1 if skipped else 0
