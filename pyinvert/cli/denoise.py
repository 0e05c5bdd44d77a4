"""``pyinvert denoise IMAGES --prior foe --sigma 25 [--out DIR]``: add Gaussian noise of
sigma (8-bit levels) to each image (gray), denoise it with the TV prior and with the chosen
prior (:func:`pyinvert.priors.denoise`, each at its default weight for sigma unless
``--weight``), and write ``<name>-denoise.png`` (noisy | TV | prior | clean, labelled with
PSNR) and ``<name>.json`` per image, and ``summary.json`` (PSNR / SSIM of each).
"""

import time
from pathlib import Path

import torch

from pyinvert import figures, io, metrics
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert import data
from pyinvert.priors.denoise import denoise
from pyinvert.representations.base import to_gray
from pyinvert.priors.store import load


def add_parser(subparsers):
    p = subparsers.add_parser(
        "denoise",
        help="MAP denoising with a learned prior against TV (PSNR / SSIM)",
        epilog="Exit status: 0 all inputs done, 1 some input failed or an output could not "
        "be written, 2 usage error or no input could be processed.",
    )
    p.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    p.add_argument("--prior", default="foe", help="foe, ica, tv or a prior file (default: foe)")
    p.add_argument(
        "--sigma", type=common.positive_float, default=25.0, help="noise, 8-bit levels (25)"
    )
    p.add_argument("--weight", type=common.positive_float, default=None, help="prior weight")
    p.add_argument("--steps", type=common.integer, default=200, help="L-BFGS iterations (200)")
    p.add_argument("--seed", type=common.integer, default=0, help="noise seed (default: 0)")
    p.add_argument("--out", default="pyinvert-denoise", help="output folder")
    common.add_images(p)
    p.set_defaults(func=common.guard(run))
    return p


def run(args) -> int:
    out = Path(args.out)
    if args.steps < 1:
        error(f"--steps must be >= 1, got {args.steps}")
        return 2
    if (code := common.preflight(args)) is not None:
        return code
    prior = args.prior
    if prior not in ("foe", "ica", "tv") and not Path(prior).is_file():
        error(f"--prior: expected foe, ica, tv or a prior file, got {prior!r}")
        return 2
    if prior not in ("foe", "ica", "tv"):
        prior = load(prior)
    paths = args.images or [str(p) for p in data.sample_paths()]
    loaded, bad = common.load_inputs(paths, 11, args.max_pixels)
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    names = common.names_for(
        [p for p, _ in loaded],
        out,
        lambda n: [f"{n}.json", f"{n}-denoise.png"],
        reserved=["summary.json"],
        inputs=paths,
    )
    sigma = args.sigma / 255.0
    g = torch.Generator().manual_seed(args.seed)
    summary = {"sigma": args.sigma, "prior": args.prior, "images": {}, "errors": {}}
    errors = summary["errors"]
    started = time.perf_counter()
    label = args.prior if isinstance(prior, str) else Path(args.prior).stem
    for name, (path, img) in zip(names, loaded):
        clean = to_gray(img[None].float())
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        tv = denoise(noisy, "tv", sigma, steps=args.steps).clamp(0, 1)
        mine = denoise(noisy, prior, sigma, weight=args.weight, steps=args.steps).clamp(0, 1)
        record = {"image": path}
        for key, im in (("noisy", noisy.clamp(0, 1)), ("tv", tv), ("prior", mine)):
            record[key] = {
                "psnr": float(metrics.psnr(im, clean)),
                "ssim": float(metrics.ssim(im, clean)),
            }
        tiles = [noisy.clamp(0, 1)[0], tv[0], mine[0], clean[0]]
        labels = [
            f"noisy {record['noisy']['psnr']:.2f} dB",
            f"TV {record['tv']['psnr']:.2f} dB",
            f"{label} {record['prior']['psnr']:.2f} dB",
            "clean",
        ]
        try:
            io.save_image(out / f"{name}-denoise.png", figures.labelled_grid(tiles, labels))
            io.write_json(out / f"{name}.json", record)
        except OSError as e:
            errors[path] = common.cannot_write(f"the results of {path} into {out}", e)
            error(errors[path])
            continue
        summary["images"][name] = record
        say(
            f"{name}: noisy {record['noisy']['psnr']:.2f} dB  TV {record['tv']['psnr']:.2f} dB  "
            f"{label} {record['prior']['psnr']:.2f} dB"
        )
    summary["seconds"] = time.perf_counter() - started
    try:
        io.write_json(out / "summary.json", summary)
    except OSError as e:
        error(common.cannot_write(out / "summary.json", e))
        return 1
    return 1 if errors or bad else 0
