"""``pyinvert actmax --model M --class K[,K...]`` (or ``--layer L --channel K [--neuron y,x]``):
activation maximization. Writes ``unit<KKKK>.png`` per unit, the grid ``actmax.png`` and
``result.json``."""

from pathlib import Path

import torch

import pyinvert
from pyinvert import figures, io, models
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.representations import make_representation


def add_parser(subparsers):
    a = subparsers.add_parser(
        "actmax", help="activation maximization of classes / channels / neurons"
    )
    a.add_argument("--model", default="mobilenet_v2", help="model (default: %(default)s)")
    a.add_argument(
        "--class",
        dest="classes",
        type=common.index_list,
        default=None,
        help=f"class index(es) of the logits, e.g. 281 or 281,945 (at most {common.MAX_UNITS})",
    )
    a.add_argument("--layer", default=None, help="layer (with --channel)")
    a.add_argument(
        "--channel",
        type=common.index_list,
        default=None,
        help=f"channel index(es), e.g. 1,2 or 0:16 (at most {common.MAX_UNITS})",
    )
    a.add_argument(
        "--neuron",
        default=None,
        help="y,x of a single neuron in the layer's grid, or 'center' "
        "(default: the channel's mean)",
    )
    a.add_argument(
        "--size",
        type=common.integer,
        default=224,
        help=f"image size, at most {common.BOUNDS['size'][1]} (default: %(default)s)",
    )
    a.add_argument(
        "--data-weight",
        type=common.positive_float,
        default=None,
        help="weight of the activation (default: the recipe's)",
    )
    a.add_argument(
        "--objective",
        choices=("auto", "activation", "log_probability"),
        default="auto",
        help="what is maximized: the activation / class score (IJCV eq. 4), or a "
        "class's log-probability; auto: log_probability for --class, else "
        "activation (default: %(default)s)",
    )
    a.add_argument(
        "--columns",
        type=common.integer,
        default=4,
        help="tiles per row of the grid (default: %(default)s)",
    )
    common.add_weights(a)
    common.add_common(a, "pyinvert-out/actmax", recipes=False)
    a.set_defaults(func=common.guard(run), parser=a)
    return a


def _neuron(value):
    if value is None or value == "center":
        return value
    try:
        yx = tuple(int(v) for v in value.split(","))
    except ValueError:
        yx = ()
    if len(yx) != 2 or min(yx) < 0:
        raise ValueError(
            f"actmax: expected --neuron y,x (two integers >= 0) or center, "
            f"got {common.one_line(value, 40)!r}"
        )
    return yx


def _logits_layer(model_name):
    """The last linear module (the classifier's logits), found on the meta device: the
    structure only, without building the weights."""
    with torch.device("meta"):
        model = models.build_model(model_name)
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    if not linear:
        raise ValueError(f"actmax: {model_name} has no linear classifier layer; give --layer")
    return linear[-1]


def _class_names():
    try:
        return list(models.imagenet_classes())
    except (OSError, ValueError):  # no class list: indices only
        return None


def run(args) -> int:
    if (args.classes is None) == (args.channel is None):
        error("actmax: expected --class K or --layer L --channel K")
        return 2
    if args.channel is not None and args.layer is None:
        error("actmax: --channel needs --layer")
        return 2
    neuron = _neuron(args.neuron)
    if (code := common.preflight(args)) is not None:
        return code
    if args.classes is not None:
        layer, units = args.layer or _logits_layer(args.model), args.classes
    else:
        layer, units = args.layer, args.channel
    rep = make_representation(f"cnn:{args.model}:{layer}", weights=common.weights(args))
    classes = _class_names() if args.classes is not None else None
    labels = [
        f"{u} {classes[u]}" if classes and 0 <= u < len(classes) else f"unit {u}" for u in units
    ]
    res = pyinvert.actmax(
        rep,
        units,
        neuron=neuron,
        image_size=args.size,
        steps=args.steps,
        objective=args.objective,
        data_weight=args.data_weight,
        generator=torch.Generator().manual_seed(args.seed),
        device=args.device,
        batch_size=args.batch_size,
        backend=args.backend,
        progress=not args.no_progress,
        labels=labels,
    )
    out = Path(args.out)
    titles = [
        lab + (f" p={float(res.probabilities[i]):.2f}" if res.probabilities is not None else "")
        for i, lab in enumerate(labels)
    ]
    try:
        res.save(out)
        # the grid with each image's contrast stretched (as the authors display them); the
        # unit PNGs are the optimized images themselves
        io.save_image(
            out / "actmax.png",
            figures.labelled_grid(
                list(figures.stretch(res.images.cpu())), titles, columns=args.columns
            ),
        )
    except OSError as e:
        error(common.cannot_write(f"the results into {out}", e))
        return 1
    logp = res.settings.get("objective") == "log_probability"
    for i, lab in enumerate(labels):
        p = f"  p={float(res.probabilities[i]):.3f}" if res.probabilities is not None else ""
        m = "" if logp else f" activation {float(res.measure[i]):.3f}"
        say(f"{lab}:{m}{p}" + ("  FAILED" if bool(res.failed[i]) else ""))
    say(f"wrote {out / 'actmax.png'} and {out / 'result.json'}")
    return 1 if bool(res.failed.any()) else 0
