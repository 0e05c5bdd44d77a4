"""``pyinvert style CONTENT STYLE [--style-weight 1e2,1e3,1e4]``: the content of one photo in
the style of another (Gatys et al. 2016), one result per style weight, all in one batch.

Writes ``<content>-<style>.png`` (content | style | one result per weight, labelled), each
result as ``<content>-<style>-w<weight>.png``, and ``result.json`` (per-layer Gram errors,
content errors, weights, timings).
"""

from pathlib import Path

import torch

import pyinvert
from pyinvert import figures, io
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.cli.texture import layers_of, network
from pyinvert.tasks.style import STYLE_WEIGHT


def add_parser(subparsers):
    c = subparsers.add_parser(
        "style",
        help="style transfer: the content of one image in the style of another (Gatys 2016)",
    )
    c.add_argument("content", help="content image file")
    c.add_argument("style", help="style image file")
    c.add_argument(
        "--model",
        default="mobilenet_v2",
        help="model (default: %(default)s; vgg16/vgg19 use average pooling)",
    )
    c.add_argument(
        "--content-layers",
        default=None,
        help="comma-separated (default: conv4_2 for VGG, its MobileNetV2 equivalent)",
    )
    c.add_argument(
        "--style-layers",
        default=None,
        help="comma-separated (default: conv1_1,...,conv5_1 for VGG, their "
        "MobileNetV2 equivalents)",
    )
    c.add_argument(
        "--style-weight",
        type=common.float_list,
        default=[STYLE_WEIGHT],
        help="one or more comma-separated style weights, one result each (default: %(default)s)",
    )
    c.add_argument(
        "--content-weight",
        type=common.positive_float,
        default=1.0,
        help="content weight (default: %(default)s)",
    )
    c.add_argument(
        "--init",
        choices=("content", "noise"),
        default="content",
        help="start from the content image or from noise (default: %(default)s)",
    )
    c.add_argument(
        "--size",
        type=common.integer,
        default=None,
        help=f"both images are resized and centre-cropped to this size, at most "
        f"{common.BOUNDS['size'][1]} (default: as they are)",
    )
    common.add_weights(c)
    common.add_images(c)
    common.add_common(c, "pyinvert-out/style", recipes=False)
    c.set_defaults(func=common.guard(run), parser=c)
    return c


def weight_label(w: float) -> str:
    return f"{w:g}"


def run(args) -> int:
    if (code := common.preflight(args)) is not None:
        return code
    weights = list(args.style_weight)
    model = network(args)
    loaded, bad = common.load_inputs(
        [args.content, args.style], 16, args.max_pixels, common.fitted(args.size)
    )
    common.report(bad)
    if len(loaded) != 2:
        error("the content and the style image are both needed")
        return 2
    (cpath, content), (spath, style) = loaded
    out = Path(args.out)
    labels = [weight_label(w) for w in weights]
    sname = io.output_names([spath], lambda n: [n])[0]
    cname = common.names_for(
        [cpath],
        out,
        lambda n: [f"{n}-{sname}.png", *(f"{n}-{sname}-w{lab}.png" for lab in labels)],
        ["result.json"],
    )[0]
    stem = f"{cname}-{sname}"
    names = [f"{stem}-w{lab}" for lab in labels]
    res = pyinvert.style_transfer(
        content[None],
        style[None],
        model,
        content_layers=layers_of(args.content_layers),
        style_layers=layers_of(args.style_layers),
        content_weight=args.content_weight,
        style_weight=torch.tensor(weights, dtype=torch.float64),
        init=args.init,
        steps=args.steps,
        generator=torch.Generator().manual_seed(args.seed),
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        names=names,
    )
    try:
        res.save(out)
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    target = out / f"{stem}.png"
    tiles = [res.contents[0].cpu(), res.styles[0].cpu(), *(im.cpu() for im in res.images)]
    titles = ["content", "style", *(f"style weight {lab}" for lab in labels)]
    try:
        io.save_image(target, figures.labelled_grid(tiles, titles, columns=len(tiles)))
    except OSError as e:
        error(common.cannot_write(target, e))
        return 1
    for i, lab in enumerate(labels):
        say(
            f"style weight {lab}: Gram error {float(res.gram_error[i].mean()):.4g} (from "
            f"{float(res.initial_gram_error[i].mean()):.4g}), content error "
            f"{float(res.content_error[i]):.4g}" + ("  FAILED" if bool(res.failed[i]) else "")
        )
    say(f"{res.seconds:.1f} s  -> {target}")
    return 1 if (bad or bool(res.failed.any())) else 0
