"""The ``equivariance`` and ``equivalence`` subcommands.

    pyinvert equivariance --rep hog --transforms hflip,rot90,scale0.71 IMAGES_OR_DIR --out DIR
    pyinvert equivalence --a REP --b REP DIR --out DIR

:func:`add_parser` adds both to an argparse subparsers object (each with
``set_defaults(func=run)``); :func:`run` runs the parsed arguments and returns the exit status:
0 done, 2 a usage error (bad representation, transform, option or image).
"""

import argparse
import sys
from pathlib import Path

import torch

from pyinvert import io
from pyinvert.analysis.equivalence import equivalence
from pyinvert.analysis.equivariance import equivariance
from pyinvert.analysis.features import crop_pairs, layers_of, load_sources, split_sources, to_code
from pyinvert.analysis.figures import heat_table, mapped_inversion_figure, panel, single_layer
from pyinvert.tasks.inversion import invert

EQUIVARIANCE_DESCRIPTION = """\
Fit the transformation maps M_g with Phi(gx) ~ M_g Phi(x) (Lenc & Vedaldi) on crops of the
photos and measure them on held-out photos. Writes DIR/equivariance.json (settings and one row
per layer x transform), DIR/equivariance.txt (the table, also printed), DIR/equivariance_maps.pt,
DIR/heat_error.png (the layer x transform table of the map's error), DIR/heat_top1.png (CNN
classifiers: top-1 agreement) and DIR/invert_<layer>_<transform>.png for the first layer (or
each --invert-layer): x, gx and the inversions of g Phi(x), M_g Phi(x) and Phi(gx) on a crop
of the first held-out photo; --invert-steps 0 skips them.
"""

EQUIVALENCE_DESCRIPTION = """\
Fit the stitch E with Phi_B(x) ~ E Phi_A(x) on crops of the photos and measure it on held-out
photos: its error, the stitched network's top-1 agreement with network B, the naive stitch and
the stitch from an untrained network. Writes DIR/equivalence.json, DIR/equivalence.txt (also
printed), DIR/equivalence_maps.pt and DIR/stitch_invert.png (x, the inversion in B of
E Phi_A(x) and of Phi_B(x); --invert-steps 0 skips it).
"""


def _ridge(text):
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a ridge >= 0, got {text!r}")
    return v


def _common(p):
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--method",
        choices=("ridge", "learned"),
        default="ridge",
        help="closed-form ridge, or ridge refined on the task loss (CNN "
        "classifiers) (default: %(default)s)",
    )
    p.add_argument(
        "--kernel", type=int, default=1, help="k of the k x k channel map (default: %(default)s)"
    )
    p.add_argument(
        "--ridge",
        type=_ridge,
        default="auto",
        help="relative ridge, or 'auto' (cross-validated over folds of the training photos) "
        "(default: %(default)s)",
    )
    p.add_argument("--crops", type=int, default=128, help="training crops (default: %(default)s)")
    p.add_argument(
        "--test-crops", type=int, default=None, help="held-out crops (default: crops / 2)"
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="crop side in pixels (default: min(128, smallest side / 1.5), a "
        "multiple of the stride)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.25,
        help="share of the photos held out (default: %(default)s)",
    )
    p.add_argument("--chunk", type=int, default=16, help="crops per batch (default: %(default)s)")
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="solve on all rows at once instead of streaming X^T X",
    )
    p.add_argument(
        "--prior",
        choices=("identity", "zero"),
        default="identity",
        help="what the ridge pulls the map towards (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the crops (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--invert-steps",
        type=int,
        default=300,
        help="iterations of each inversion in the figures, 0 for none (default: %(default)s)",
    )
    return p


def add_parser(subparsers):
    """Add ``equivariance`` and ``equivalence`` to ``subparsers``; returns the two parsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    e = subparsers.add_parser(
        "equivariance",
        help="fit and measure transformation maps M_g",
        description=EQUIVARIANCE_DESCRIPTION,
        formatter_class=fmt,
    )
    e.add_argument(
        "images", nargs="+", metavar="IMAGES_OR_DIR", help="a folder of photos or image files"
    )
    e.add_argument("--rep", required=True, help="hog, hogb, dsift or cnn:MODEL:LAYER[,LAYER...]")
    e.add_argument(
        "--transforms",
        default="hflip,rot90,scale0.71",
        help="comma-separated: hflip, vflip, rot90, rotNUM, scaleNUM, "
        "translateDX,DY, g*h (default: %(default)s)",
    )
    e.add_argument(
        "--invert-layer",
        action="append",
        default=None,
        metavar="LAYER",
        help="a layer whose mapped codes are inverted for the figures (repeatable; "
        "default: the first layer of --rep)",
    )
    _common(e)
    e.set_defaults(func=run, analysis="equivariance")
    q = subparsers.add_parser(
        "equivalence",
        help="fit and measure a stitch between two representations",
        description=EQUIVALENCE_DESCRIPTION,
        formatter_class=fmt,
    )
    q.add_argument("images", nargs="+", metavar="DIR", help="a folder of photos or image files")
    q.add_argument("--a", required=True, dest="rep_a", help="the source representation")
    q.add_argument("--b", required=True, dest="rep_b", help="the target representation")
    q.add_argument(
        "--no-untrained", action="store_true", help="skip the untrained-network baseline"
    )
    _common(q)
    q.set_defaults(func=run, analysis="equivalence")
    return e, q


def _images(args):
    return args.images[0] if len(args.images) == 1 else list(args.images)


def _kwargs(args):
    return dict(
        method=args.method,
        kernel=args.kernel,
        ridge=args.ridge,
        crops=args.crops,
        test_crops=args.test_crops,
        size=args.size,
        holdout=args.holdout,
        chunk=args.chunk,
        streaming=not args.in_memory,
        prior=args.prior,
        generator=torch.Generator().manual_seed(args.seed),
        device=args.device,
    )


def run(args) -> int:
    """Run the parsed ``args`` (from a parser built by :func:`add_parser`); the exit status."""
    name = args.analysis
    try:
        if name == "equivariance":
            _run_equivariance(args)
        else:
            _run_equivalence(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"pyinvert {name}: error: {error}", file=sys.stderr)
        return 2
    return 0


def _run_equivariance(args):
    res = equivariance(args.rep, _images(args), args.transforms, **_kwargs(args))
    out = Path(args.out)
    res.save(out, "equivariance")
    print(res.table())
    layers, names = res.layers(), res.transform_names()
    io.save_image(
        out / "heat_error.png",
        heat_table(res.matrix(), layers, names, "error |M Phi(x) - Phi(gx)|^2 / |Phi(gx)|^2"),
    )
    if any("top1_map" in r for r in res.rows):
        io.save_image(
            out / "heat_top1.png",
            heat_table(1 - res.matrix("top1_map"), layers, names, "1 - top-1 agreement"),
        )
    if args.invert_steps > 0:
        sources, snames = load_sources(_images(args))
        _, test, _ = split_sources(sources, snames, args.holdout)
        size = res.settings["size"]
        gs = list(res.transforms.values())
        x, gx = crop_pairs(
            test[:1], gs, 1, size, torch.Generator().manual_seed(args.seed), rescale=False
        )
        chosen = args.invert_layer or layers[:1]
        unknown = [ly for ly in chosen if ly not in layers]
        if unknown:
            raise ValueError(
                f"--invert-layer: expected layers of --rep ({', '.join(layers)}), "
                f"got {', '.join(unknown)}"
            )
        for layer in chosen:
            for g in gs:
                pic, _ = mapped_inversion_figure(
                    res, x[0], g.name, layer, steps=args.invert_steps, transformed=gx[g.name][0]
                )
                io.save_image(out / f"invert_{layer}_{_safe(g.name)}.png", pic)


def _run_equivalence(args):
    res = equivalence(
        args.rep_a, args.rep_b, _images(args), untrained=not args.no_untrained, **_kwargs(args)
    )
    out = Path(args.out)
    res.save(out, "equivalence")
    print(res.table())
    if args.invert_steps > 0:
        sources, snames = load_sources(_images(args))
        _, test, _ = split_sources(sources, snames, args.holdout)
        x, _ = crop_pairs(
            test[:1],
            [],
            1,
            res.settings["size"],
            torch.Generator().manual_seed(args.seed),
            rescale=False,
        )
        rep_b = single_layer(res.rep_b, layers_of(res.rep_b)[0])
        with torch.no_grad():
            direct = rep_b(rep_b.preprocess(x))
        code = to_code(rep_b, res.stitched_code(x), direct)
        inv = invert(
            targets=torch.cat([code, direct]),
            image_size=tuple(x.shape[-2:]),
            representation=rep_b,
            steps=args.invert_steps,
            progress=False,
            generator=torch.Generator().manual_seed(args.seed),
        )
        io.save_image(
            out / "stitch_invert.png",
            panel(
                [x[0], inv.images[0], inv.images[1]], ["x", "inv_B E Phi_A(x)", "inv_B Phi_B(x)"]
            ),
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with the two subcommands (``python -m pyinvert.analysis.command``)."""
    p = argparse.ArgumentParser(prog="pyinvert")
    add_parser(p.add_subparsers(dest="command", required=True))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
