"""Command line (also ``python -m pyinvert``): ``pyinvert invert``, ``actmax``, ``caricature``,
``dream``, ``models``, ``batch`` (see :mod:`pyinvert.batch`) and ``reproduce table1``.

CNN layers: ``pyinvert invert IMAGES --rep cnn:mobilenet_v2:features.3,features.6`` inverts each
listed layer separately (``--joint``: all of them as one code) and draws the per-layer grid
(original, then one reconstruction per layer); ``--window N`` / ``--channels`` reconstruct
from a subset of the neurons, ``--restarts R --invariance`` draws the per-pixel spread across
R reconstructions. ``pyinvert actmax --model M --class K`` (or ``--layer L --channel K
[--neuron y,x]``), ``pyinvert caricature IMAGE --model M --layer L``, ``pyinvert dream IMAGE
--model M --layer L --octaves N`` write PNG grids and JSON records; ``pyinvert models [NAME]``
describes the model zoo.

With no arguments, ``pyinvert`` inverts the HOG of the bundled sample photos into
./pyinvert-out/. Each image gets its reconstruction (PNG), a side-by-side figure (original |
code | reconstruction | error map) and a JSON of metrics; a bad input (missing file,
unreadable image, image smaller than a HOG cell) is reported and skipped, the other images'
results are kept, and the exit status is then 1.
"""
import argparse
import math
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch

#: The paper's Table 1 (CVPR 2015), mean +- std of the error in %, first 100 ILSVRC12 val images.
REPORTED_TABLE1 = OrderedDict([
    ("hoggle", (66.20, 13.7)),
    ("hog", (28.10, 7.9)),
    ("hogb", (10.67, 5.2)),
    ("dsift", (10.04, 7.5)),
])


class InputError(Exception):
    """A user input that cannot be processed (reported, then skipped)."""


def _unique_names(paths):
    names, seen = [], {}
    for p in paths:
        stem = Path(p).stem or "image"
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        names.append(stem if k == 0 else f"{stem}-{k}")
    return names


def _load_inputs(paths, min_size, prepare=None,
                 needs=" (half a HOG cell / a DSIFT descriptor)"):
    """[(name, path, tensor)] of the readable images (``prepare(tensor)`` applied) and
    [(path, message)] of the others."""
    from pyinvert.io import load_image

    ok, bad = [], []
    for name, path in zip(_unique_names(paths), paths):
        try:
            img = load_image(path)
        except (FileNotFoundError, ValueError, TypeError) as error:
            bad.append((str(path), str(error)))
            continue
        if prepare is not None:
            img = prepare(img)
        H, W = img.shape[-2:]
        if H < min_size or W < min_size:
            bad.append((str(path), f"invert: image {path} is {H}x{W}, smaller than the "
                                   f"{min_size}x{min_size} pixels the representation "
                                   f"needs{needs}"))
            continue
        ok.append((name, str(path), img))
    return ok, bad


def _gray3(img):
    from pyinvert.representations import to_gray
    return to_gray(img[None])[0]


def run_invert(args) -> int:
    from pyinvert import data, figures, metrics
    from pyinvert.tasks.inversion import invert
    from pyinvert.io import save_image, write_json
    from pyinvert.optim.recipes import get_recipe
    from pyinvert.representations import make_representation

    paths = args.images or [str(p) for p in data.sample_paths()]
    out = Path(args.out)
    rec = get_recipe(args.recipe)
    rep = make_representation(args.rep, backend=args.backend, recipe=rec)
    loaded, bad = _load_inputs(paths, rep.min_size)
    for path, message in bad:
        print(f"pyinvert: error: {message}", file=sys.stderr)
    if not loaded:
        print("pyinvert: error: no image could be processed", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(args.seed)
    groups = OrderedDict()
    for item in loaded:
        key = tuple(item[2].shape[-2:])
        groups.setdefault(key, []).append(item)
    summary = {"settings": None, "images": {}, "errors": {p: m for p, m in bad}}
    started = time.perf_counter()
    for (H, W), items in groups.items():
        names = [n for n, _, _ in items]
        channels = max(t.shape[0] for _, _, t in items)
        batch = torch.stack([t.expand(channels, -1, -1) for _, _, t in items])
        result = invert(batch, representation=rep, recipe=rec, steps=args.steps,
                        restarts=args.restarts, batch_size=args.batch_size,
                        generator=generator, device=args.device, backend=args.backend,
                        progress=not args.no_progress, names=names)
        summary["settings"] = result.settings
        originals = result.originals.cpu()
        recon = result.images.cpu()
        for i, (name, path, _) in enumerate(items):
            images_i = recon[i] if recon.dim() == 5 else recon[i:i + 1]
            rows = []
            for r in range(images_i.shape[0]):
                suffix = f"-r{r}" if recon.dim() == 5 else ""
                rec_img = images_i[r]
                save_image(out / f"{name}{suffix}.png", rec_img)
                fig = figures.side_by_side(originals[i], rec_img, result.targets[i].cpu(),
                                           representation=rep.name)
                save_image(out / f"{name}{suffix}-figure.png", fig)
                fe = result.feature_error[i] if recon.dim() != 5 else result.feature_error[i, r]
                failed = result.failed[i] if recon.dim() != 5 else result.failed[i, r]
                entry = {
                    "restart": r,
                    "feature_error": float(fe),
                    "psnr": float(metrics.psnr(rec_img[None], originals[i:i + 1])),
                    "failed": bool(failed),
                    "reconstruction": f"{name}{suffix}.png",
                    "figure": f"{name}{suffix}-figure.png",
                }
                if min(H, W) >= 11:
                    entry["ssim"] = float(metrics.ssim(rec_img[None], originals[i:i + 1]))
                rows.append(entry)
            record = {"image": path, "size": [H, W], "representation": rep.name,
                      "recipe": rec.name, "results": rows}
            write_json(out / f"{name}.json", _clean(record))
            summary["images"][name] = record
            status = "FAILED" if any(r["failed"] for r in rows) else "ok"
            print(f"{name}: feature error {rows[0]['feature_error']:.4f}  "
                  f"PSNR {rows[0]['psnr']:.2f} dB  {status}  -> {out / (name + '.png')}")
    summary["seconds"] = time.perf_counter() - started
    write_json(out / "summary.json", _clean(summary))
    print(f"wrote {len(summary['images'])} reconstruction(s) to {out}/ "
          f"in {summary['seconds']:.1f} s")
    return 1 if bad else 0


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(u) for k, u in v.items()}
    if isinstance(v, list):
        return [_clean(u) for u in v]
    return v


# ---- Table 1 --------------------------------------------------------------------------------

def table1(paths=None, *, reps=("hog", "hogb", "dsift"), recipe="cvpr2015", steps=None,
           out="pyinvert-out/table1", seed=0, backend="fused", progress=True, batch_size=None,
           device=None):
    """Reproduce CVPR 2015 Table 1 on images (default: the bundled photos).

    Returns a dict rep -> {"mean", "std", "errors"} (errors in %, per image), and writes
    table1.json and a montage (rows: original and each representation's reconstructions).
    """
    from pyinvert import data, figures, metrics
    from pyinvert.tasks.inversion import invert
    from pyinvert.io import save_image, write_json
    from pyinvert.optim.recipes import get_recipe
    from pyinvert.representations import make_representation

    paths = [str(p) for p in (paths or data.sample_paths())]
    out = Path(out)
    rec = get_recipe(recipe)
    results, rows, labels = OrderedDict(), [], []
    originals = None
    names = _unique_names(paths)
    for name in reps:
        if name == "dsift":
            from pyinvert import features
            try:
                features.dsift(torch.zeros(1, 1, 64, 64))
            except NotImplementedError:
                print("table1: dsift is not built in this version; skipping DSIFT",
                      file=sys.stderr)
                continue
        rep = make_representation(name, backend=backend, recipe=rec)
        loaded, bad = _load_inputs(paths, rep.min_size)
        for path, message in bad:
            print(f"pyinvert: error: {message}", file=sys.stderr)
        sizes = {tuple(t.shape[-2:]) for _, _, t in loaded}
        if len(sizes) != 1:
            raise InputError(f"table1: expected images of one size, got {sorted(sizes)}")
        batch = torch.stack([t.expand(3, -1, -1) for _, _, t in loaded])
        res = invert(batch, representation=rep, recipe=rec, steps=steps,
                     generator=torch.Generator().manual_seed(seed), backend=backend,
                     progress=progress, batch_size=batch_size, device=device)
        err = metrics.table1_error(res.codes, res.targets).cpu() * 100
        # The same error measured on the saved 8-bit reconstructions (what a reader of the PNGs
        # would compute).
        q = torch.round(res.images * 255) / 255
        with torch.no_grad():
            qcodes = rep(rep.preprocess(q.to(res.targets)))
        err_png = metrics.table1_error(qcodes, res.targets).cpu() * 100
        results[name] = {"mean": float(err.mean()), "std": float(err.std()) if len(err) > 1 else 0.0,
                         "errors": err.tolist(), "mean_png": float(err_png.mean()),
                         "std_png": float(err_png.std()) if len(err) > 1 else 0.0,
                         "feature_error": res.feature_error.tolist(),
                         "seconds": res.seconds}
        originals = res.originals.cpu()
        rows.append(list(res.images.cpu()))
        labels.append(name)
        for i, n in enumerate([n for n, _, _ in loaded]):
            save_image(out / f"{n}-{name}.png", res.images[i])
    if originals is not None:
        grid = figures.montage([list(originals)] + rows, row_labels=["original"] + labels,
                               col_labels=None)
        save_image(out / "table1-montage.png", grid)
    write_json(out / "table1.json", _clean({"recipe": rec.name, "images": paths,
                                            "ours": results,
                                            "reported": {k: {"mean": m, "std": s} for k, (m, s)
                                                         in REPORTED_TABLE1.items()}}))
    return results


def format_table1(results) -> str:
    lines = ["CVPR 2015 Table 1: reconstruction error (%), mean +- std",
             f"{'representation':<16}{'reported (paper)':>20}{'ours':>18}{'ours, 8-bit PNG':>20}"]
    for name, (m, s) in REPORTED_TABLE1.items():
        label = {"hoggle": "HOGgle (HOG)", "hog": "ours HOG", "hogb": "HOGb",
                 "dsift": "DSIFT"}[name]
        if name in results:
            r = results[name]
            ours = f"{r['mean']:6.2f} +- {r['std']:5.2f}"
            png = f"{r['mean_png']:6.2f} +- {r['std_png']:5.2f}"
        else:
            ours = png = "-"
        lines.append(f"{label:<16}{f'{m:6.2f} +- {s:4.1f}':>20}{ours:>18}{png:>20}")
    lines.append("reported: first 100 ILSVRC12 validation images; ours: the images given "
                 "(default: the 5 bundled photos)")
    return "\n".join(lines)


def run_table1(args) -> int:
    try:
        results = table1(args.images or None, reps=tuple(args.reps.split(",")),
                         recipe=args.recipe, steps=args.steps, out=args.out, seed=args.seed,
                         backend=args.backend, progress=not args.no_progress,
                         batch_size=args.batch_size, device=args.device)
    except InputError as error:
        print(f"pyinvert: error: {error}", file=sys.stderr)
        return 2
    print(format_table1(results))
    print(f"wrote {Path(args.out) / 'table1.json'} and {Path(args.out) / 'table1-montage.png'}")
    return 0


# ---- CNN commands ---------------------------------------------------------------------------

def _rep_spec(value: str) -> str:
    v = value.strip()
    if v.lower() in ("hog", "hogb", "dsift"):
        return v.lower()
    if v.lower().startswith("cnn:"):
        from pyinvert.representations.cnn import parse_spec
        try:
            parse_spec(v)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
        return v
    raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from hog, hogb, dsift "
                                     f"or cnn:MODEL:LAYER[,LAYER...])")


def _int_list(value: str):
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {value!r}")


def _float_list(value: str):
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {value!r}")


def _channel_list(value: str):
    out = []
    try:
        for part in value.split(","):
            part = part.strip()
            if ":" in part:
                a, b = part.split(":")
                out.extend(range(int(a), int(b)))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channels like 0,5,9 or 0:32, got {value!r}")
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one channel, got {value!r}")
    return out


def _cnn_common(p):
    p.add_argument("--weights", default="imagenet",
                   help="CNN weights: imagenet, random or a file path (default: %(default)s)")


def _weights(args):
    w = getattr(args, "weights", "imagenet")
    return None if w in (None, "random", "none") else w


def _guard(fn, args) -> int:
    """Run a command; a user error (bad model or layer name, missing weights) is printed
    (exit 2) instead of a traceback."""
    try:
        return fn(args)
    except (ValueError, FileNotFoundError, TypeError, KeyError) as error:
        msg = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"pyinvert: error: {msg}", file=sys.stderr)
        return 2


def _fit(img, size):
    """[C, H, W] resized (shorter side = size, area / bilinear) and centre-cropped to size."""
    import torch.nn.functional as F

    H, W = img.shape[-2:]
    if (H, W) == (size, size):
        return img
    s = size / min(H, W)
    h, w = max(size, round(H * s)), max(size, round(W * s))
    mode = "area" if s < 1 else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(img[None], size=(h, w), mode=mode, **kw)[0]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return out[:, y0:y0 + size, x0:x0 + size].clamp(0, 1)


def _load_fitted(paths, size, min_size):
    """[(name, path, tensor [3, size, size])] and [(path, message)]."""
    def prepare(img):
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
        return _fit(img, size) if size is not None else img

    return _load_inputs(paths, min_size, prepare, needs="")


def _report_bad(bad):
    for path, message in bad:
        print(f"pyinvert: error: {message}", file=sys.stderr)


def run_invert_cnn(args) -> int:
    """``pyinvert invert --rep cnn:...`` (and ``--invariance`` for any representation)."""
    from pyinvert import data, figures, metrics
    from pyinvert.tasks.inversion import invert
    from pyinvert.io import save_image, write_json
    from pyinvert.representations import make_representation

    paths = args.images or [str(p) for p in data.sample_paths()]
    out = Path(args.out)
    is_cnn = args.rep.startswith("cnn:")
    if is_cnn:
        from pyinvert.representations.cnn import parse_spec
        model_name, layers = parse_spec(args.rep)
        groups = [layers] if args.joint else [[l] for l in layers]
        reps = [make_representation(f"cnn:{model_name}:{','.join(g)}", weights=_weights(args))
                for g in groups]
    else:
        reps = [make_representation(args.rep, backend=args.backend)]
    if args.invariance and args.restarts < 2:
        print("pyinvert: error: --invariance needs --restarts R >= 2", file=sys.stderr)
        return 2
    size = args.size if args.size is not None else (224 if is_cnn else None)
    loaded, bad = _load_fitted(paths, size, max(r.min_size for r in reps))
    _report_bad(bad)
    if not loaded:
        print("pyinvert: error: no image could be processed", file=sys.stderr)
        return 2
    sizes = {tuple(t.shape[-2:]) for _, _, t in loaded}
    if len(sizes) > 1:
        print(f"pyinvert: error: images of several sizes {sorted(sizes)}; give --size",
              file=sys.stderr)
        return 2
    names = [n for n, _, _ in loaded]
    batch = torch.stack([t for _, _, t in loaded])
    sweep = args.data_weight or []
    overrides = {}
    rows_batch, row_names = batch, names
    if len(sweep) > 1:
        rows_batch = batch.repeat_interleave(len(sweep), 0)
        row_names = [f"{n}-C{c:g}" for n in names for c in sweep]
        overrides["data_weight"] = torch.tensor(sweep).repeat(len(names))
    elif len(sweep) == 1:
        overrides["data_weight"] = sweep[0]
    failed_any = False
    per_rep, records = [], {}
    labels = []
    for rep in reps:
        label = ",".join(rep.layers) if is_cnn else rep.name
        labels.append(label)
        mask = None
        if is_cnn and (args.window is not None or args.channels is not None):
            mask = rep.code_mask(tuple(batch.shape[-2:]), window=args.window,
                                 channels=args.channels)
        kw = dict(representation=rep, recipe=args.recipe, steps=args.steps,
                  batch_size=args.batch_size, generator=torch.Generator().manual_seed(args.seed),
                  device=args.device, backend=args.backend, progress=not args.no_progress,
                  names=row_names, mask=mask, **overrides)
        sub = out / label.replace(",", "+").replace("/", "_")
        if args.invariance:
            from pyinvert.tasks.visualization import invariance_map
            inv = invariance_map(rows_batch, restarts=args.restarts, **kw)
            inv.save(sub, row_names)
            res = inv.inversion
            for i, n in enumerate(row_names):
                fig = figures.invariance_figure(res.originals[i].cpu(), list(res.images[i].cpu()),
                                                inv.spread[i], vmax=float(inv.spread.max()))
                save_image(sub / f"{n}-invariance.png", fig)
            recon = res.images[:, 0].cpu()
        else:
            res = invert(rows_batch, restarts=args.restarts, **kw)
            res.save(sub, row_names)
            recon = res.images.cpu() if res.images.dim() == 4 else res.images[:, 0].cpu()
        if mask is not None and args.window is not None:
            st = rep.stride
            m = mask if mask.dim() == 3 else None
            if m is not None:
                ys = torch.nonzero(m.sum((0, 2)) > 0).flatten()
                xs = torch.nonzero(m.sum((0, 1)) > 0).flatten()
                box = (int(ys.min()) * st, int(xs.min()) * st, (int(ys.max()) + 1) * st,
                       (int(xs.max()) + 1) * st)
                for i, n in enumerate(row_names):
                    save_image(sub / f"{n}-window.png", figures.window_figure(
                        res.originals[i].cpu(), recon[i], box, title=f"{args.window}x"
                        f"{args.window} window"))
        per_rep.append(recon)
        originals = res.originals.cpu()
        fe = res.feature_error if res.feature_error.dim() == 1 else res.feature_error[:, 0]
        failed = res.failed if res.failed.dim() == 1 else res.failed.any(1)
        failed_any |= bool(failed.any())
        for i, n in enumerate(row_names):
            entry = {"feature_error": float(fe[i]), "failed": bool(failed[i]),
                     "psnr": float(metrics.psnr(recon[i:i + 1], originals[i:i + 1]))}
            if min(recon.shape[-2:]) >= 11:
                entry["ssim"] = float(metrics.ssim(recon[i:i + 1], originals[i:i + 1]))
            if is_cnn and rep.layers[-1] in ("classifier", "classifier.1", "fc") or (
                    is_cnn and res.targets.dim() == 2):
                entry["target_top1"] = int(res.targets[i].argmax())
                code = res.codes[i] if res.codes.dim() == res.targets.dim() else res.codes[i, 0]
                entry["reconstruction_top1"] = int(code.argmax())
            records.setdefault(n, {})[label] = entry
            print(f"{n} [{label}]: feature error {entry['feature_error']:.4f}  "
                  f"PSNR {entry['psnr']:.2f} dB"
                  + (f"  SSIM {entry['ssim']:.3f}" if "ssim" in entry else "")
                  + ("  FAILED" if entry["failed"] else ""))
    grid = figures.layer_grid(list(originals), per_rep, labels, names=row_names)
    save_image(out / "layers.png", grid)
    write_json(out / "summary.json", _clean({
        "representation": args.rep, "joint": args.joint, "recipe": args.recipe,
        "images": dict(zip(names, [p for _, p, _ in loaded])), "results": records,
        "errors": {p: m for p, m in bad}}))
    print(f"wrote {out / 'layers.png'} and {out / 'summary.json'}")
    return 1 if (bad or failed_any) else 0


def _class_names(model):
    try:
        from pyinvert import models
        return list(models.imagenet_classes())
    except Exception:  # noqa: BLE001 (no class list: indices only)
        return None


def run_actmax(args) -> int:
    from pyinvert import figures
    from pyinvert.io import save_image, write_json
    from pyinvert.representations import make_representation
    from pyinvert.tasks.visualization import actmax

    if (args.classes is None) == (args.channel is None):
        print("pyinvert: error: actmax: expected --class K or --layer L --channel K",
              file=sys.stderr)
        return 2
    if args.classes is not None:
        layer = args.layer or _logits_layer(args.model)
        units = args.classes
    else:
        if args.layer is None:
            print("pyinvert: error: actmax: --channel needs --layer", file=sys.stderr)
            return 2
        layer, units = args.layer, args.channel
    neuron = None
    if args.neuron is not None:
        neuron = "center" if args.neuron == "center" else tuple(_int_list(args.neuron))
        if neuron != "center" and len(neuron) != 2:
            print(f"pyinvert: error: actmax: expected --neuron y,x or center, got {args.neuron}",
                  file=sys.stderr)
            return 2
    rep = make_representation(f"cnn:{args.model}:{layer}", weights=_weights(args))
    classes = _class_names(rep.model) if args.classes is not None else None
    labels = [f"{u} {classes[u]}" if classes and 0 <= u < len(classes) else f"unit {u}"
              for u in units]
    res = actmax(rep, units, neuron=neuron, image_size=args.size, steps=args.steps,
                 objective=args.objective,
                 data_weight=args.data_weight, generator=torch.Generator().manual_seed(args.seed),
                 device=args.device, batch_size=args.batch_size, backend=args.backend,
                 progress=not args.no_progress, labels=labels)
    out = Path(args.out)
    res.save(out)
    titles = []
    for i, lab in enumerate(labels):
        t = lab
        if res.probabilities is not None:
            t += f" p={float(res.probabilities[i]):.2f}"
        titles.append(t)
    # the grid with each image's contrast stretched (as the authors display them); the
    # unit PNGs are the optimized images themselves
    save_image(out / "actmax.png", figures.labelled_grid(
        list(figures.stretch(res.images.cpu())), titles, columns=args.columns))
    logp = res.settings.get("objective") == "log_probability"
    for i, lab in enumerate(labels):
        p = f"  p={float(res.probabilities[i]):.3f}" if res.probabilities is not None else ""
        m = "" if logp else f" activation {float(res.measure[i]):.3f}"
        print(f"{lab}:{m}{p}"
              + ("  FAILED" if bool(res.failed[i]) else ""))
    print(f"wrote {out / 'actmax.png'} and {out / 'result.json'}")
    return 1 if bool(res.failed.any()) else 0


def _logits_layer(model_name):
    """The last linear module (the classifier's logits), found on the meta device: the
    structure only, without building the weights."""
    from pyinvert import models
    with torch.device("meta"):
        model = models.build_model(model_name)
    linear = [name for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear)]
    if not linear:
        raise ValueError(f"actmax: {model_name} has no linear classifier layer; give --layer")
    return linear[-1]


def _run_image_command(args, kind) -> int:
    from pyinvert import figures
    from pyinvert.io import save_image
    from pyinvert.representations import make_representation
    from pyinvert.tasks.visualization import caricature, dream

    rep = make_representation(f"cnn:{args.model}:{args.layer}", weights=_weights(args))
    loaded, bad = _load_fitted(args.images, args.size, rep.min_size)
    _report_bad(bad)
    if not loaded:
        print("pyinvert: error: no image could be processed", file=sys.stderr)
        return 2
    names = [n for n, _, _ in loaded]
    batch = torch.stack([t for _, _, t in loaded])
    gen = torch.Generator().manual_seed(args.seed)
    if kind == "caricature":
        res = caricature(batch, rep, steps=args.steps, data_weight=args.data_weight,
                         generator=gen, device=args.device, batch_size=args.batch_size,
                         backend=args.backend, progress=not args.no_progress, names=names)
    else:
        res = dream(batch, rep, octaves=args.octaves, octave_scale=args.octave_scale,
                    steps=args.steps or 10, lr=args.lr, generator=gen, device=args.device,
                    backend=args.backend, progress=not args.no_progress, names=names)
    out = Path(args.out)
    res.save(out, names)
    for i, n in enumerate(names):
        save_image(out / f"{n}-{kind}.png", figures.pair(res.originals[i].cpu(),
                                                          res.images[i].cpu(),
                                                          ("original", f"{kind} {args.layer}")))
        print(f"{n}: {kind} {args.layer} measure {float(res.measure[i]):.4g}"
              + ("  FAILED" if bool(res.failed[i]) else "") + f"  -> {out / (n + '-' + kind)}.png")
    return 1 if (bad or bool(res.failed.any())) else 0


def run_caricature(args) -> int:
    return _run_image_command(args, "caricature")


def run_dream(args) -> int:
    return _run_image_command(args, "dream")


def run_models(args) -> int:
    from pyinvert import models
    print(models.models_command(args.name))
    return 0


# ---- argument parsing -----------------------------------------------------------------------

def _common(p, out, recipes=True):
    if recipes:
        p.add_argument("--recipe", choices=("cvpr2015", "ijcv2016"), default="cvpr2015",
                       help="hyper-parameters of the CVPR 2015 or IJCV 2016 paper "
                            "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations in all (default: the recipe's schedule)")
    p.add_argument("--batch-size", type=int, default=None, help="rows optimized together")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", default=out, help="output directory (default: %(default)s)")
    p.add_argument("--backend", choices=("fused", "reference"), default="fused")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyinvert", description="Invert visual representations (Mahendran & Vedaldi, "
                                     "CVPR 2015 / IJCV 2016). With no arguments: invert the "
                                     "HOG of the bundled photos into ./pyinvert-out/.")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("invert", help="invert images' HOG / HOGb / DSIFT")
    p.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    p.add_argument("--rep", type=_rep_spec, default="hog", metavar="REP",
                   help="hog, hogb, dsift or cnn:MODEL:LAYER[,LAYER...] (default: %(default)s)")
    p.add_argument("--restarts", type=int, default=1, help="reconstructions per image")
    p.add_argument("--joint", action="store_true",
                   help="CNN: invert the listed layers together (one code; the data term sums "
                        "the per-layer normalized terms) instead of one inversion per layer")
    p.add_argument("--window", type=int, default=None,
                   help="CNN: match only a centred N x N window of neurons (of the first layer)")
    p.add_argument("--channels", type=_channel_list, default=None,
                   help="CNN: match only these channels, e.g. 0,5,9 or 0:32")
    p.add_argument("--invariance", action="store_true",
                   help="with --restarts R >= 2: draw the per-pixel spread across restarts")
    p.add_argument("--size", type=int, default=None,
                   help="images are resized and centre-cropped to SIZE x SIZE (default: 224 "
                        "for a cnn:... representation, the images' own size otherwise)")
    p.add_argument("--data-weight", type=_float_list, default=None,
                   help="data weight C, or a comma list: a sweep, one reconstruction per value "
                        "(e.g. 1,20,100,300 with --recipe ijcv2016)")
    _cnn_common(p)
    _common(p, "pyinvert-out")
    r = sub.add_parser("reproduce", help="reproduce a table of the paper")
    r.add_argument("what", choices=("table1",))
    r.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    r.add_argument("--reps", default="hog,hogb,dsift",
                   help="comma-separated representations (default: %(default)s)")
    _common(r, "pyinvert-out/table1")

    a = sub.add_parser("actmax", help="activation maximization of classes / channels / neurons")
    a.add_argument("--model", default="mobilenet_v2", help="model (default: %(default)s)")
    a.add_argument("--class", dest="classes", type=_int_list, default=None,
                   help="class index(es) of the logits, e.g. 281 or 281,945")
    a.add_argument("--layer", default=None, help="layer (with --channel)")
    a.add_argument("--channel", type=_int_list, default=None, help="channel index(es)")
    a.add_argument("--neuron", default=None,
                   help="y,x of a single neuron in the layer's grid, or 'center' "
                        "(default: the channel's mean)")
    a.add_argument("--size", type=int, default=224, help="image size (default: %(default)s)")
    a.add_argument("--data-weight", type=float, default=None,
                   help="weight of the activation (default: the recipe's)")
    a.add_argument("--objective", choices=("auto", "activation", "log_probability"),
                   default="auto",
                   help="what is maximized: the activation / class score (IJCV eq. 4), or a "
                        "class's log-probability; auto: log_probability for --class, else "
                        "activation (default: %(default)s)")
    a.add_argument("--columns", type=int, default=4, help="tiles per row of the grid")
    _cnn_common(a)
    _common(a, "pyinvert-out/actmax", recipes=False)

    for name, helptext in (("caricature", "caricatures: amplify what a layer sees in images"),
                           ("dream", "DeepDream: amplify a layer over octaves")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("images", nargs="+", help="image files")
        c.add_argument("--model", default="mobilenet_v2", help="model (default: %(default)s)")
        c.add_argument("--layer", required=True, help="layer name, e.g. features.10")
        c.add_argument("--size", type=int, default=224,
                       help="images are resized and centre-cropped to this size "
                            "(default: %(default)s)")
        if name == "dream":
            c.add_argument("--octaves", type=int, default=4, help="scales (default: %(default)s)")
            c.add_argument("--octave-scale", type=float, default=1.4,
                           help="ratio between scales (default: %(default)s)")
            c.add_argument("--lr", type=float, default=None, help="step length in 0-255 units")
        else:
            c.add_argument("--data-weight", type=float, default=None,
                           help="weight of the caricature term (default: the recipe's)")
        _cnn_common(c)
        _common(c, f"pyinvert-out/{name}", recipes=False)

    from pyinvert.batch.command import add_parser as add_batch_parser
    add_batch_parser(sub)
    m = sub.add_parser("models", help="list the model zoo, or describe a model's layers")
    m.add_argument("name", nargs="?", default=None, help="a model name")
    return parser


_COMMANDS = ("invert", "reproduce", "actmax", "caricature", "dream", "models", "batch")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in (*_COMMANDS, "-h", "--help"):
        argv = ["invert", *argv]  # `pyinvert [IMAGES...] [options]` means `pyinvert invert ...`
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    for name in ("steps", "batch_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if getattr(args, "restarts", 1) < 1:
        parser.error(f"--restarts must be >= 1, got {args.restarts}")
    if getattr(args, "size", None) is not None and args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    if args.command == "invert":
        if args.rep.startswith("cnn:"):
            return _guard(run_invert_cnn, args)
        for flag in ("joint", "window", "channels", "data_weight"):
            if getattr(args, flag) not in (None, False):
                parser.error(f"--{flag.replace('_', '-')} needs a cnn:MODEL:LAYER representation")
        if args.invariance:
            return _guard(run_invert_cnn, args)
        if args.size is not None:
            parser.error(f"--size needs a cnn:MODEL:LAYER representation or --invariance "
                         f"({args.rep} inverts images at their own size), got --size {args.size}")
        return run_invert(args)
    if args.command == "batch":
        return args.func(args)
    if args.command == "actmax":
        return _guard(run_actmax, args)
    if args.command == "caricature":
        return _guard(run_caricature, args)
    if args.command == "dream":
        return _guard(run_dream, args)
    if args.command == "models":
        return _guard(run_models, args)
    return run_table1(args)


if __name__ == "__main__":
    sys.exit(main())
