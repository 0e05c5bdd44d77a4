"""``pyinvert caricature IMAGES --model M --layer L``: amplify what a layer sees in images.

Each image gets ``<name>.png`` (the caricature) and ``<name>-caricature.png`` (original |
caricature); the run ``result.json``. :func:`run_amplify` serves ``dream`` too.
"""

from pathlib import Path

import torch

import pyinvert
from pyinvert import figures, io
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.representations import make_representation


def add_image_command(subparsers, name, helptext, run):
    """The options ``caricature`` and ``dream`` share."""
    c = subparsers.add_parser(name, help=helptext)
    c.add_argument("images", nargs="+", help="image files")
    c.add_argument("--model", default="mobilenet_v2", help="model (default: %(default)s)")
    c.add_argument("--layer", required=True, help="layer name, e.g. features.10")
    c.add_argument(
        "--size",
        type=common.integer,
        default=224,
        help=f"images are resized and centre-cropped to this size, at most "
        f"{common.BOUNDS['size'][1]} (default: %(default)s)",
    )
    common.add_weights(c)
    common.add_images(c)
    common.add_common(c, f"pyinvert-out/{name}", recipes=False)
    c.set_defaults(func=common.guard(run), parser=c)
    return c


def add_parser(subparsers):
    c = add_image_command(
        subparsers, "caricature", "caricatures: amplify what a layer sees in images", run
    )
    c.add_argument(
        "--data-weight",
        type=common.positive_float,
        default=None,
        help="weight of the caricature term (default: the recipe's)",
    )
    return c


def run(args) -> int:
    return run_amplify(args, "caricature")


def run_amplify(args, kind: str) -> int:
    """``caricature`` or ``dream`` (``kind``) on the images of ``args``."""
    if (code := common.preflight(args)) is not None:
        return code
    rep = make_representation(f"cnn:{args.model}:{args.layer}", weights=common.weights(args))
    loaded, bad = common.load_inputs(
        args.images, rep.min_size, args.max_pixels, common.fitted(args.size)
    )
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    out = Path(args.out)
    names = common.names_for(
        [p for p, _ in loaded],
        out,
        lambda n: [f"{n}.png", f"{n}-{kind}.png"],
        ["result.json"],
        inputs=args.images,
    )
    batch = torch.stack([t for _, t in loaded])
    gen = torch.Generator().manual_seed(args.seed)
    if kind == "caricature":
        res = pyinvert.caricature(
            batch,
            rep,
            steps=args.steps,
            data_weight=args.data_weight,
            generator=gen,
            device=args.device,
            batch_size=args.batch_size,
            backend=args.backend,
            progress=not args.no_progress,
            names=names,
        )
    else:
        res = pyinvert.dream(
            batch,
            rep,
            octaves=args.octaves,
            octave_scale=args.octave_scale,
            steps=args.steps or 10,
            lr=args.lr,
            generator=gen,
            device=args.device,
            backend=args.backend,
            progress=not args.no_progress,
            names=names,
        )
    try:
        res.save(out, names)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    failed = bool(bad)
    for i, n in enumerate(names):
        target = out / f"{n}-{kind}.png"
        try:
            io.save_image(
                target,
                figures.pair(
                    res.originals[i].cpu(),
                    res.images[i].cpu(),
                    ("original", f"{kind} {args.layer}"),
                ),
            )
        except OSError as e:
            error(common.cannot_write(target, e))
            failed = True
            continue
        say(
            f"{n}: {kind} {args.layer} measure {float(res.measure[i]):.4g}"
            + ("  FAILED" if bool(res.failed[i]) else "")
            + f"  -> {target}"
        )
    return 1 if (failed or bool(res.failed.any())) else 0
