"""``pyinvert texture SOURCE... [--model M --layers ...] [--size N]``: new textures of photos
(Gatys et al. 2015).

Each source gets ``<name>.png`` (source | its textures, labelled) and
``<name>-texture.png`` (``<name>-texture-r<k>.png`` with restarts); the run writes
``result.json``: the per-layer Gram errors (initial, final, their ratio) and the timings.
"""

from pathlib import Path

import torch

import pyinvert
from pyinvert import figures, io
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.models import load_model
from pyinvert.models.zoo import POOLING_MODELS


def add_parser(subparsers):
    c = subparsers.add_parser(
        "texture",
        help="texture synthesis: new images with the Gram statistics of each source (Gatys 2015)",
    )
    c.add_argument("sources", nargs="+", help="image files")
    c.add_argument(
        "--model",
        default="mobilenet_v2",
        help="model (default: %(default)s; vgg16/vgg19 use average pooling)",
    )
    c.add_argument(
        "--layers",
        default=None,
        help="comma-separated layers or aliases (default: conv1_1,pool1,...,pool4 "
        "for VGG, their MobileNetV2 equivalents)",
    )
    c.add_argument(
        "--size",
        type=common.integer,
        default=None,
        help=f"sources are resized and centre-cropped to this size, at most "
        f"{common.BOUNDS['size'][1]} (default: as they are)",
    )
    c.add_argument(
        "--texture-size",
        type=common.integer,
        default=None,
        help="size of the textures (default: the sources')",
    )
    c.add_argument(
        "--restarts",
        type=common.integer,
        default=1,
        help="textures per source (default: %(default)s)",
    )
    c.add_argument(
        "--nonparametric",
        action="store_true",
        help="also synthesize each texture by Efros & Leung's non-parametric sampling "
        "(pyinvert.texture_nonparametric), shown beside the Gram method's",
    )
    common.add_weights(c)
    common.add_images(c)
    common.add_common(c, "pyinvert-out/texture", recipes=False)
    c.set_defaults(func=common.guard(run), parser=c)
    return c


def network(args):
    """The model of ``--model`` with ``--weights`` (VGG with average pooling)."""
    return load_model(
        args.model, common.weights(args), pooling="avg" if args.model in POOLING_MODELS else "max"
    )


def layers_of(value):
    return None if value is None else [s.strip() for s in value.split(",") if s.strip()]


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    if args.texture_size is not None and not 1 <= args.texture_size <= common.BOUNDS["size"][1]:
        error(f"--texture-size must be in [1, {common.BOUNDS['size'][1]}], got {args.texture_size}")
        return 2
    model = network(args)
    loaded, bad = common.load_inputs(args.sources, 16, args.max_pixels, common.fitted(args.size))
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    sizes = {tuple(t.shape[-2:]) for _, t in loaded}
    if len(sizes) > 1:
        error(f"the sources have different sizes {sorted(sizes)}; give --size N")
        return 2
    out = Path(args.out)
    R = args.restarts
    extra = ["-nonparametric.png"] if args.nonparametric else []
    outputs = (
        (lambda n: [f"{n}.png", f"{n}-texture.png", *(n + e for e in extra)])
        if R == 1
        else (
            lambda n: [
                f"{n}.png",
                *(f"{n}-texture-r{k}.png" for k in range(R)),
                *(n + e for e in extra),
            ]
        )
    )
    names = common.names_for(
        [p for p, _ in loaded], out, outputs, ["result.json"], inputs=args.sources
    )
    batch = torch.stack([t for _, t in loaded])
    res = pyinvert.texture(
        batch,
        model,
        layers=layers_of(args.layers),
        size=args.texture_size,
        steps=args.steps,
        restarts=R,
        generator=torch.Generator().manual_seed(args.seed),
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        names=[f"{n}-texture" for n in names],
    )
    try:
        res.save(out)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    failed = bool(bad)
    red = res.reduction().reshape(len(names), R, -1)
    for i, n in enumerate(names):
        textures = [res.images[i]] if R == 1 else list(res.images[i])
        labels = ["source"] + [f"texture {k}" if R > 1 else "texture" for k in range(R)]
        target = out / f"{n}.png"
        try:
            if args.nonparametric:
                # Efros & Leung 1999 beside Gatys 2015: the same source, the same size.
                nonparametric = pyinvert.texture_nonparametric(
                    res.sources[i].cpu(),
                    tuple(textures[0].shape[-2:]),
                    generator=torch.Generator().manual_seed(args.seed),
                ).images[0]
                io.save_image(out / f"{n}-nonparametric.png", nonparametric)
                textures.append(nonparametric)
                labels.append("non-parametric (Efros & Leung)")
            io.save_image(
                target,
                figures.labelled_grid(
                    [res.sources[i].cpu(), *(t.cpu() for t in textures)],
                    labels,
                    columns=len(labels),
                ),
            )
        except OSError as e:
            error(common.cannot_write(target, e))
            failed = True
            continue
        ratios = ", ".join(
            f"{k} {float(red[i, :, j].min()):.3g}x" for j, k in enumerate(res.layers)
        )
        say(
            f"{n}: Gram error fell by {ratios}  ({res.seconds:.1f} s)"
            + ("  FAILED" if bool(res.failed.reshape(len(names), R)[i].any()) else "")
            + f"  -> {target}"
        )
    return 1 if (failed or bool(res.failed.any())) else 0
