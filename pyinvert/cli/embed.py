"""``pyinvert embed DIR``: the images of a folder embedded in 2-D (scikit-learn's t-SNE or
PCA of their codes). Writes ``embedding.png`` (a thumbnail scatter) and ``embedding.json``
(the points)."""

from pathlib import Path

import pyinvert
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.cli.neighbors import add_space, representation


def add_parser(subparsers):
    p = subparsers.add_parser("embed", help="a 2-D t-SNE / PCA map of a folder of images")
    p.add_argument("folder", help="folder of images")
    add_space(p)
    p.add_argument(
        "--method",
        choices=("tsne", "pca"),
        default="tsne",
        help="the embedding (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=common.integer, default=0, help="t-SNE's random state (default: %(default)s)"
    )
    p.add_argument(
        "--out", default="pyinvert-out/embed", help="output folder (default: %(default)s)"
    )
    p.set_defaults(func=common.guard(run), parser=p)
    return p


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    if not Path(args.folder).is_dir():
        error(f"embed: {common.shown(args.folder)} is not a folder")
        return 2
    result = pyinvert.embed(
        args.folder,
        representation(args),
        method=args.method,
        space=args.space,
        seed=args.seed,
        size=args.size,
        batch_size=args.batch_size,
        cache_dir=args.cache,
        device=args.device,
    )
    out = Path(args.out)
    try:
        written = result.save(out)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    say(f"embed: {len(result.names)} images ({args.method}) -> {written[0]}")
    return 0
