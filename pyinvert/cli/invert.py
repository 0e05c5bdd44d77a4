"""``pyinvert invert IMAGES [--rep hog|hogb|dsift|cnn:MODEL:LAYER[,...]]``.

HOG, HOGb and DSIFT: each image gets ``<name>.png`` (its reconstruction; ``<name>-r<k>.png``
with restarts), ``<name>-figure.png`` (original | code | reconstruction | error map) and
``<name>.json`` (its metrics), and the run ``summary.json``. CNN layers (and ``--invariance``):
see :mod:`pyinvert.cli.invert_cnn`. The names follow :func:`pyinvert.io.output_names`.
"""

import time
from collections import OrderedDict
from pathlib import Path

import torch

import pyinvert
from pyinvert.representations import make_representation
from pyinvert import data, figures, io, metrics
from pyinvert.cli import common, invert_cnn
from pyinvert.cli.common import error, say
from pyinvert.optim.recipes import get_recipe

NEEDS = " (half a HOG cell / a DSIFT descriptor)"


def add_parser(subparsers):
    p = subparsers.add_parser(
        "invert",
        help="invert images' HOG / HOGb / DSIFT / CNN codes",
        epilog="Output names: each input is named after its file's stem; when a file it would "
        "write is already another input's, a run-level file (summary.json, layers.png) "
        "or an input file inside --out, the name becomes <stem>-1, <stem>-2, ... "
        "(compared case-insensitively). Exit status: 0 all inputs done, 1 some input "
        "failed or an output could not be written, 2 usage error or no input could be "
        "processed.",
    )
    p.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    p.add_argument(
        "--rep",
        type=common.rep_spec,
        default="hog",
        metavar="REP",
        help="hog, hogb, dsift or cnn:MODEL:LAYER[,LAYER...] (default: %(default)s)",
    )
    p.add_argument(
        "--restarts",
        type=common.integer,
        default=1,
        help=f"reconstructions per image, at most {common.BOUNDS['restarts'][1]} "
        f"(default: %(default)s)",
    )
    p.add_argument(
        "--joint",
        action="store_true",
        help="CNN: invert the listed layers together (one code; the data term sums "
        "the per-layer normalized terms) instead of one inversion per layer",
    )
    p.add_argument(
        "--window",
        type=common.integer,
        default=None,
        help="CNN: match only a centred N x N window of neurons (of the first layer)",
    )
    p.add_argument(
        "--channels",
        type=common.index_list,
        default=None,
        help=f"CNN: match only these channels, e.g. 0,5,9 or 0:32 (at most {common.MAX_UNITS})",
    )
    p.add_argument(
        "--invariance",
        action="store_true",
        help="with --restarts R >= 2: draw the per-pixel spread across restarts",
    )
    p.add_argument(
        "--size",
        type=common.integer,
        default=None,
        help="images are resized and centre-cropped to SIZE x SIZE (default: 224 "
        "for a cnn:... representation, the images' own size otherwise)",
    )
    p.add_argument(
        "--data-weight",
        type=common.float_list,
        default=None,
        help=f"data weight C, or a comma list: a sweep, one reconstruction per value "
        f"(at most {common.MAX_SWEEP}; e.g. 1,20,100,300 with --recipe ijcv2016)",
    )
    p.add_argument(
        "--prior",
        default="tv",
        help="image prior: tv (the recipe's, default), foe or ica (the shipped learned "
        "priors, added to the TV term) or a prior file",
    )
    _add_decoder_options(p)
    common.add_weights(p)
    common.add_images(p)
    common.add_common(p, "pyinvert-out")
    p.set_defaults(func=run, parser=p)
    return p


def run(args) -> int:
    parser = args.parser
    if args.prior != "tv" and args.invariance:
        parser.error("--prior foe|ica cannot be combined with --invariance")
    if args.rep.startswith("cnn:") or args.invariance:
        if args.decoder is not None or args.init is not None:
            parser.error("--decoder and --init need a hog, hogb or dsift representation")
        return common.guard(invert_cnn.run)(args)
    for flag in ("joint", "window", "channels", "data_weight"):
        if getattr(args, flag) not in (None, False):
            parser.error(f"--{flag.replace('_', '-')} needs a cnn:MODEL:LAYER representation")
    if args.size is not None:
        parser.error(
            f"--size needs a cnn:MODEL:LAYER representation or --invariance "
            f"({args.rep} inverts images at their own size), got --size {args.size}"
        )
    return common.guard(run_handcrafted)(args)


def _add_decoder_options(p):
    p.add_argument(
        "--decoder",
        default=None,
        metavar="NAME|PATH",
        help="reconstruct with a trained decoder (a shipped name such as hog, or a file from "
        "`pyinvert train-decoder`) instead of the optimization",
    )
    p.add_argument(
        "--init",
        choices=("decoder",),
        default=None,
        help="start the optimization from the decoder's reconstruction (--decoder, default: "
        "the shipped one of --rep)",
    )


def _decoder_kwargs(args) -> dict:
    """invert's keywords of --decoder / --init decoder."""
    if args.init == "decoder":
        return {"init": "decoder", "decoder": args.decoder}
    if args.decoder is not None:
        return {"method": "decoder", "decoder": args.decoder}
    return {}


def _outputs(restarts: int):
    suffixes = [""] if restarts == 1 else [f"-r{r}" for r in range(restarts)]

    def outputs(name):
        return [f"{name}.json"] + [
            f"{name}{s}{e}" for s in suffixes for e in (".png", "-figure.png")
        ]

    return outputs


def run_handcrafted(args) -> int:
    """HOG / HOGb / DSIFT: one inversion per image (batched by size)."""
    out = Path(args.out)
    if (code := common.preflight(args)) is not None:
        return code
    paths = args.images or [str(p) for p in data.sample_paths()]
    rec = get_recipe(args.recipe)
    rep = make_representation(args.rep, backend=args.backend, recipe=rec)
    loaded, bad = common.load_inputs(paths, rep.min_size, args.max_pixels, needs=NEEDS)
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    names = common.names_for(
        [p for p, _ in loaded],
        out,
        _outputs(args.restarts),
        reserved=["summary.json"],
        inputs=paths,
    )
    generator = torch.Generator().manual_seed(args.seed)
    groups = OrderedDict()
    for name, (path, img) in zip(names, loaded):
        groups.setdefault(tuple(img.shape[-2:]), []).append((name, path, img))
    errors = {p: m for p, m in bad}
    summary = {"settings": None, "images": {}, "errors": errors}
    started = time.perf_counter()
    for (H, W), items in groups.items():
        channels = max(t.shape[0] for _, _, t in items)
        batch = torch.stack([t.expand(channels, -1, -1) for _, _, t in items])
        result = pyinvert.invert(
            batch,
            representation=rep,
            recipe=rec,
            steps=args.steps,
            restarts=args.restarts,
            batch_size=args.batch_size,
            generator=generator,
            device=args.device,
            backend=args.backend,
            progress=not args.no_progress,
            names=[n for n, _, _ in items],
            prior=args.prior,
            **_decoder_kwargs(args),
        )
        summary["settings"] = result.settings
        for i, (name, path, _) in enumerate(items):
            try:
                record = _write_one(out, name, path, i, result, rep, rec, (H, W))
            except OSError as e:
                errors[path] = common.cannot_write(f"the results of {path} into {out}", e)
                error(errors[path])
                continue
            except (MemoryError, RuntimeError) as e:  # figure or metrics of a huge image
                errors[path] = f"cannot finish the results of {path}: {type(e).__name__}: {e}"
                error(errors[path])
                continue
            summary["images"][name] = record
            rows = record["results"]
            status = "FAILED" if any(r["failed"] for r in rows) else "ok"
            say(
                f"{name}: feature error {rows[0]['feature_error']:.4f}  "
                f"PSNR {rows[0]['psnr']:.2f} dB  {status}  -> {out / rows[0]['reconstruction']}"
            )
    summary["seconds"] = time.perf_counter() - started
    try:
        io.write_json(out / "summary.json", summary)
    except OSError as e:
        error(
            common.cannot_write(out / "summary.json", e) + " (the previous summary, if any, "
            "is kept)"
        )
        return 1
    say(f"wrote {len(summary['images'])} reconstruction(s) to {out}/ in {summary['seconds']:.1f} s")
    return 1 if errors else 0


def _write_one(out, name, path, i, result, rep, rec, size):
    """The files of input ``i`` (named ``name``); returns its record."""
    H, W = size
    originals, recon = result.originals[i].cpu(), result.images[i].cpu()
    restarts = recon.dim() == 4
    images = recon if restarts else recon[None]
    rows = []
    for r in range(images.shape[0]):
        suffix = f"-r{r}" if restarts else ""
        img = images[r]
        io.save_image(out / f"{name}{suffix}.png", img)
        fig = figures.side_by_side(originals, img, result.targets[i].cpu(), representation=rep.name)
        io.save_image(out / f"{name}{suffix}-figure.png", fig)
        fe = result.feature_error[i, r] if restarts else result.feature_error[i]
        failed = result.failed[i, r] if restarts else result.failed[i]
        entry = {
            "restart": r,
            "feature_error": float(fe),
            "psnr": float(metrics.psnr(img[None], originals[None])),
            "failed": bool(failed),
            "reconstruction": f"{name}{suffix}.png",
            "figure": f"{name}{suffix}-figure.png",
        }
        if min(H, W) >= 11:
            entry["ssim"] = float(metrics.ssim(img[None], originals[None]))
        rows.append(entry)
    record = {
        "image": path,
        "size": [H, W],
        "representation": rep.name,
        "recipe": rec.name,
        "results": rows,
    }
    io.write_json(out / f"{name}.json", record)
    return record
