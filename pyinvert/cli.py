"""Command line: ``pyinvert invert`` and ``pyinvert reproduce table1`` (also ``python -m pyinvert``).

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


def _load_inputs(paths, min_size):
    """[(name, path, tensor)] of the readable images and [(path, message)] of the others."""
    from pyinvert.io import load_image

    ok, bad = [], []
    for name, path in zip(_unique_names(paths), paths):
        try:
            img = load_image(path)
        except (FileNotFoundError, ValueError, TypeError) as error:
            bad.append((str(path), str(error)))
            continue
        H, W = img.shape[-2:]
        if H < min_size or W < min_size:
            bad.append((str(path), f"invert: image {path} is {H}x{W}, smaller than the "
                                   f"{min_size}x{min_size} pixels the representation needs "
                                   f"(half a HOG cell / a DSIFT descriptor)"))
            continue
        ok.append((name, str(path), img))
    return ok, bad


def _gray3(img):
    from pyinvert.representations import to_gray
    return to_gray(img[None])[0]


def run_invert(args) -> int:
    from pyinvert import data, figures, metrics
    from pyinvert.invert import invert
    from pyinvert.io import save_image, write_json
    from pyinvert.recipes import get_recipe
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
    from pyinvert.invert import invert
    from pyinvert.io import save_image, write_json
    from pyinvert.recipes import get_recipe
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


# ---- argument parsing -----------------------------------------------------------------------

def _common(p, out):
    p.add_argument("--recipe", choices=("cvpr2015", "ijcv2016"), default="cvpr2015",
                   help="hyper-parameters of the CVPR 2015 or IJCV 2016 paper (default: %(default)s)")
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
    p.add_argument("--rep", choices=("hog", "hogb", "dsift"), default="hog",
                   help="representation (default: %(default)s)")
    p.add_argument("--restarts", type=int, default=1, help="reconstructions per image")
    _common(p, "pyinvert-out")
    r = sub.add_parser("reproduce", help="reproduce a table of the paper")
    r.add_argument("what", choices=("table1",))
    r.add_argument("images", nargs="*", help="image files (default: the bundled photos)")
    r.add_argument("--reps", default="hog,hogb,dsift",
                   help="comma-separated representations (default: %(default)s)")
    _common(r, "pyinvert-out/table1")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] not in ("invert", "reproduce", "-h", "--help"):
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
    if args.command == "invert":
        return run_invert(args)
    return run_table1(args)


if __name__ == "__main__":
    sys.exit(main())
