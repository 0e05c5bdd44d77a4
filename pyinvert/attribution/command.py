"""The ``attribute`` and ``patches`` subcommands.

``pyinvert attribute IMAGES... --model mobilenet_v2 --methods saliency,gradcam,occlusion
[--targets auto|281,285] --out DIR`` writes, per image, ``<name>_grid.png`` (original | one
overlay per method, a row per target, labelled with the class and score),
``<name>_<method>.npy`` (the (T, H, W) maps) and ``summary.json`` (targets, class names,
scores, per-method seconds).

``pyinvert patches DIR --model M --layer L --channels 0:16 [--k 9] --out FILE.png`` writes the
top-patches grid (a row per channel) and ``FILE.json`` (the hits).

:func:`add_parser` adds both to an argparse subparsers object (each with
``set_defaults(func=...)``); :func:`run` runs either from its parsed args. Exit status: 0 done;
2 a usage error (bad option, missing file, unknown layer).
"""

import argparse
import sys
from pathlib import Path

from pyinvert.attribution.api import METHODS, attribute
from pyinvert.attribution.patches import IMAGE_SUFFIXES, top_patches
from pyinvert.io import write_json
from pyinvert.models import WeightsNotFoundError, load_model

ATTRIBUTE_DESCRIPTION = """\
Attribution maps of a classifier's scores for IMAGES (files or folders of images), one
labelled grid per image: original | one heatmap overlay per method, a row per target.
Methods: saliency, deconvnet, guided_backprop, gradcam, guided_gradcam,
integrated_gradients, smoothgrad, occlusion.
"""

PATCHES_DESCRIPTION = """\
Maximally activating patches: for each channel of LAYER, the k images (of the folder DIR,
streamed) whose activation peaks highest, shown as receptive-field crops, a row per channel.
"""


def _model_arguments(p):
    p.add_argument(
        "--model",
        default="mobilenet_v2",
        help="zoo network: alexnet, vgg16, resnet18, mobilenet_v2 (default: %(default)s)",
    )
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (found offline), random, or a checkpoint path (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=224,
        help="images are resized and centre-cropped to SIZE (default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")


def add_attribute_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("images", nargs="+", help="image files or folders")
    _model_arguments(p)
    p.add_argument(
        "--methods",
        default="saliency,guided_backprop,gradcam,occlusion",
        help="comma-separated methods (default: %(default)s)",
    )
    p.add_argument(
        "--targets",
        default="auto",
        help="auto (each image's top-1) or comma-separated class indices, "
        "attributed for every image (default: %(default)s)",
    )
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last conv block)")
    p.add_argument(
        "--out",
        default="attribution-out",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    p.add_argument("--window", type=int, default=32, help="occlusion window (default: 32)")
    p.add_argument("--stride", type=int, default=16, help="occlusion stride (default: 16)")
    p.add_argument(
        "--steps", type=int, default=32, help="integrated-gradients steps (default: %(default)s)"
    )
    p.add_argument(
        "--samples", type=int, default=16, help="SmoothGrad samples (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images attributed together (default: %(default)s)",
    )
    return p


def add_patches_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("folder", help="folder of images (streamed)")
    _model_arguments(p)
    p.add_argument("--layer", required=True, help="module name, e.g. features.6")
    p.add_argument(
        "--channels",
        default="0:16",
        help="lo:hi range or comma-separated channels (default: %(default)s)",
    )
    p.add_argument("--k", type=int, default=9, help="patches per channel (default: 9)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument(
        "--out",
        default="patches.png",
        metavar="FILE",
        help="grid PNG; the hits go to the same name .json (default: %(default)s)",
    )
    return p


def add_parser(subparsers):
    """Add ``attribute`` and ``patches`` to ``subparsers``; returns the two parsers."""
    a = subparsers.add_parser(
        "attribute",
        help="attribution maps and labelled grids",
        description=ATTRIBUTE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_attribute_arguments(a)
    a.set_defaults(func=run, command_name="attribute")
    p = subparsers.add_parser(
        "patches",
        help="maximally activating patches of a layer",
        description=PATCHES_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_patches_arguments(p)
    p.set_defaults(func=run, command_name="patches")
    return a, p


def _model(args):
    weights = None if args.weights == "random" else args.weights
    return load_model(args.model, weights, download=False).to(args.device)


def _image_files(items):
    files = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"attribute: no such image or folder: {item}")
    if not files:
        raise ValueError(f"attribute: no images found in {list(items)}")
    return files


def _targets(text):
    if text == "auto":
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(
            f"attribute: expected --targets auto or comma-separated ints, got {text!r}"
        ) from None


def run_attribute(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"attribute: unknown methods {bad}; choose from {sorted(METHODS)}")
    files = _image_files(args.images)
    targets = _targets(args.targets)
    model = _model(args)
    options = {}
    if "occlusion" in methods:
        options.update(window=args.window, stride=args.stride)
    if "integrated_gradients" in methods:
        options["steps"] = args.steps
    if "smoothgrad" in methods:
        options["samples"] = args.samples
    out = Path(args.out)
    records = []
    for lo in range(0, len(files), args.batch_size):
        part = files[lo : lo + args.batch_size]
        tg = None if targets is None else [targets] * len(part)
        r = attribute(
            [str(f) for f in part], model, methods, tg, layer=args.layer, size=args.size, **options
        )
        r.names = [f"{lo + i:03d}_{f.stem}" for i, f in enumerate(part)]
        r.save(out)
        labels = r.labels()
        for b, f in enumerate(part):
            records.append(
                {
                    "image": str(f),
                    "grid": str(out / f"{r.names[b]}_grid.png"),
                    "targets": r.targets[b].tolist(),
                    "labels": labels[b],
                    "scores": r.scores[b].tolist(),
                }
            )
        timings = {m: round(s, 4) for m, s in r.timings.items()}
        records[-1]["batch_timings_s"] = timings
        print(r.summary())
    write_json(out / "summary.json", {"model": args.model, "methods": methods, "images": records})
    print(f"wrote {len(files)} grid(s) and summary.json to {out}")
    return 0


def _channels_arg(text):
    if ":" in text:
        return text
    try:
        return [int(c) for c in text.split(",")]
    except ValueError:
        raise ValueError(
            f"patches: expected --channels lo:hi or comma-separated ints, got {text!r}"
        ) from None


def run_patches(args) -> int:
    if not Path(args.folder).is_dir():
        raise FileNotFoundError(f"patches: no such folder: {args.folder}")
    r = top_patches(
        args.folder,
        _model(args),
        args.layer,
        _channels_arg(args.channels),
        k=args.k,
        size=args.size,
        batch_size=args.batch_size,
    )
    out = Path(args.out)
    r.save(out)
    write_json(
        out.with_suffix(".json"),
        {
            "model": args.model,
            "layer": args.layer,
            "channels": r.channels,
            "receptive_field": {
                "stride": r.receptive_field[0],
                "size": r.receptive_field[1],
                "first_centre": r.receptive_field[2],
            },
            "hits": r.hits,
        },
    )
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def run(args) -> int:
    """Run the subcommand the parsed ``args`` name; returns the exit status."""
    fn = run_patches if getattr(args, "command_name", "attribute") == "patches" else run_attribute
    try:
        return fn(args)
    except (ValueError, FileNotFoundError, TypeError) as error:
        name = getattr(args, "command_name", "attribute")
        msg = str(error)
        if isinstance(error, WeightsNotFoundError):
            msg = f"{msg} (or pass --weights random)"
        print(f"pyinvert {name}: error: {msg}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyinvert.attribution.command")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
