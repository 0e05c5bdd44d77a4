"""``pyinvert neighbors QUERY... --gallery DIR``: each query's k nearest gallery images in a
representation's feature space (or in pixel space). Writes ``neighbors.png`` (one row per
query: the query, then its neighbours, labelled with their distances) and
``neighbors.json``."""

from pathlib import Path

import torch

import pyinvert
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.toolbox.common import fit_image


def add_parser(subparsers):
    p = subparsers.add_parser("neighbors", help="nearest neighbours of images in a gallery")
    p.add_argument("queries", nargs="+", help="query image files")
    p.add_argument("--gallery", required=True, help="folder of gallery images")
    add_space(p)
    p.add_argument(
        "--k", type=common.integer, default=5, help="neighbours per query (default: %(default)s)"
    )
    p.add_argument(
        "--out", default="pyinvert-out/neighbors", help="output folder (default: %(default)s)"
    )
    p.set_defaults(func=common.guard(run), parser=p)
    return p


def add_space(p):
    """The options ``neighbors`` and ``embed`` share."""
    p.add_argument(
        "--rep",
        type=common.rep_spec,
        default="cnn:mobilenet_v2:features.18",
        help="representation: hog, hogb, dsift or cnn:MODEL:LAYER (default: %(default)s)",
    )
    p.add_argument(
        "--space",
        choices=("feature", "pixel"),
        default="feature",
        help="compare codes or pixels (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=common.integer,
        default=224,
        help="images are resized and centre-cropped to this size (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=common.integer,
        default=32,
        help="gallery images encoded at once (default: %(default)s)",
    )
    p.add_argument(
        "--cache", default=None, help="folder caching the gallery's codes (default: none)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    common.add_weights(p)
    common.add_images(p)


def representation(args):
    if args.space == "pixel":
        return None
    return pyinvert.as_representation(args.rep, weights=common.weights(args))


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    if not Path(args.gallery).is_dir():
        error(f"neighbors: --gallery {common.shown(args.gallery)} is not a folder")
        return 2
    rep = representation(args)
    # The queries are fitted as the gallery is (the ImageNet evaluation crop).
    loaded, bad = common.load_inputs(
        args.queries, 1, args.max_pixels, lambda img: fit_image(img, args.size)
    )
    common.report(bad)
    if not loaded:
        error("no query could be processed")
        return 2
    queries = torch.stack([t for _, t in loaded])
    result = pyinvert.neighbors(
        queries,
        args.gallery,
        rep,
        k=args.k,
        space=args.space,
        size=args.size,
        batch_size=args.batch_size,
        cache_dir=args.cache,
        device=args.device,
    )
    result.query_names = [Path(p).name for p, _ in loaded]
    out = Path(args.out)
    try:
        written = result.save(out)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    for name, row, dist in zip(result.query_names, result.indices, result.distances):
        say(
            f"{name}: "
            + ", ".join(
                f"{result.gallery_names[int(i)]} ({float(d):.3g})" for i, d in zip(row, dist)
            )
        )
    say(f"-> {written[0]}")
    return 1 if bad else 0
