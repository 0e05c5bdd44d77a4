"""``pyinvert invert --rep cnn:MODEL:LAYER[,LAYER...]`` (and ``--invariance`` for any
representation): one sub-folder per inverted layer (``--joint``: one for all), the per-layer
grid ``layers.png`` and ``summary.json``.

In each layer's folder: ``<name>.png`` (``<name>-r<k>.png`` with restarts; ``<name>-C<c>`` for
each value of a --data-weight sweep), ``<name>-window.png`` with --window,
``<name>-spread.png`` and ``<name>-invariance.png`` with --invariance, and ``result.json``
(``invariance.json``).
"""

from pathlib import Path

import torch

import pyinvert
from pyinvert import data, figures, io, metrics
from pyinvert.cli import common
from pyinvert.cli.common import error, say
from pyinvert.representations import make_representation


def _outputs(subs, rows_of, restarts, window, invariance):
    suffixes = [""] if restarts == 1 else [f"-r{r}" for r in range(restarts)]

    def outputs(name):
        files = []
        for sub in subs:
            for row in rows_of(name):
                files += [f"{sub}/{row}{s}.png" for s in suffixes]
                if window:
                    files.append(f"{sub}/{row}-window.png")
                if invariance:
                    files += [f"{sub}/{row}-spread.png", f"{sub}/{row}-invariance.png"]
        return files

    return outputs


def run(args) -> int:
    out = Path(args.out)
    if args.invariance and args.restarts < 2:
        error("--invariance needs --restarts R >= 2")
        return 2
    is_cnn = args.rep.startswith("cnn:")
    if is_cnn:
        model_name, layers = common.cnn_spec(args.rep)
        groups = [layers] if args.joint else [[layer] for layer in layers]
    if (code := common.preflight(args)) is not None:
        return code
    if is_cnn:
        reps = [
            make_representation(f"cnn:{model_name}:{','.join(g)}", weights=common.weights(args))
            for g in groups
        ]
    else:
        reps = [make_representation(args.rep, backend=args.backend)]
    paths = args.images or [str(p) for p in data.sample_paths()]
    size = args.size if args.size is not None else (224 if is_cnn else None)
    loaded, bad = common.load_inputs(
        paths, max(r.min_size for r in reps), args.max_pixels, common.fitted(size)
    )
    common.report(bad)
    if not loaded:
        error("no image could be processed")
        return 2
    sizes = {tuple(t.shape[-2:]) for _, t in loaded}
    if len(sizes) > 1:
        error(
            f"images of several sizes {sorted(sizes)[:4]}{' ...' if len(sizes) > 4 else ''}; "
            f"give --size"
        )
        return 2
    labels = [",".join(r.layers) if is_cnn else r.name for r in reps]
    subs = [common.folder_name(label) for label in labels]
    sweep = args.data_weight or []

    def rows_of(n):
        return [f"{n}-C{c:g}" for c in sweep] if len(sweep) > 1 else [n]

    reserved = ["summary.json", "layers.png"] + [
        f"{s}/{f}" for s in subs for f in ("result.json", "invariance.json")
    ]
    names = common.names_for(
        [p for p, _ in loaded],
        out,
        _outputs(subs, rows_of, args.restarts, args.window is not None, args.invariance),
        reserved,
        inputs=paths,
    )
    batch = torch.stack([t for _, t in loaded])
    overrides = {} if getattr(args, "prior", "tv") == "tv" else {"prior": args.prior}
    rows_batch, row_names = batch, [r for n in names for r in rows_of(n)]
    if len(sweep) > 1:
        rows_batch = batch.repeat_interleave(len(sweep), 0)
        overrides["data_weight"] = torch.tensor(sweep).repeat(len(names))
    elif len(sweep) == 1:
        overrides["data_weight"] = sweep[0]
    errors = {p: m for p, m in bad}
    failed_any, per_rep, records, originals = False, [], {}, None
    for rep, label, sub in zip(reps, labels, subs):
        mask = None
        if is_cnn and (args.window is not None or args.channels is not None):
            try:
                mask = rep.code_mask(
                    tuple(batch.shape[-2:]), window=args.window, channels=args.channels
                )
            except ValueError as e:
                error(f"--window/--channels for {label}: {e}")
                return 2
        kw = dict(
            representation=rep,
            recipe=args.recipe,
            steps=args.steps,
            batch_size=args.batch_size,
            generator=torch.Generator().manual_seed(args.seed),
            device=args.device,
            backend=args.backend,
            progress=not args.no_progress,
            names=row_names,
            mask=mask,
            **overrides,
        )
        if args.invariance:
            inv = pyinvert.invariance_map(rows_batch, restarts=args.restarts, **kw)
            res = inv.inversion
            recon = res.images[:, 0].cpu()
        else:
            inv = res = pyinvert.invert(rows_batch, restarts=args.restarts, **kw)
            recon = res.images.cpu() if res.images.dim() == 4 else res.images[:, 0].cpu()
        try:
            _save_layer(out / sub, args, inv, res, recon, rep, mask, row_names)
        except OSError as e:
            message = common.cannot_write(f"the results of layer {label} into {out / sub}", e)
            error(message)
            errors.update({p: message for p, _ in loaded})
        per_rep.append(recon)
        originals = res.originals.cpu()
        fe = res.feature_error if res.feature_error.dim() == 1 else res.feature_error[:, 0]
        failed = res.failed if res.failed.dim() == 1 else res.failed.any(1)
        failed_any |= bool(failed.any())
        for i, n in enumerate(row_names):
            entry = _entry(i, recon, originals, fe, failed, res, rep, is_cnn)
            records.setdefault(n, {})[label] = entry
            say(
                f"{n} [{label}]: feature error {entry['feature_error']:.4f}  "
                f"PSNR {entry['psnr']:.2f} dB"
                + (f"  SSIM {entry['ssim']:.3f}" if "ssim" in entry else "")
                + ("  FAILED" if entry["failed"] else "")
            )
    summary = {
        "representation": args.rep,
        "joint": args.joint,
        "recipe": args.recipe,
        "images": dict(zip(names, [p for p, _ in loaded])),
        "results": records,
        "errors": errors,
    }
    try:
        io.save_image(
            out / "layers.png",
            figures.layer_grid(list(originals), per_rep, labels, names=row_names),
        )
        io.write_json(out / "summary.json", summary)
    except OSError as e:
        error(
            common.cannot_write(f"layers.png / summary.json into {out}", e)
            + " (the previous ones, if any, are kept)"
        )
        return 1
    say(f"wrote {out / 'layers.png'} and {out / 'summary.json'}")
    return 1 if (errors or failed_any) else 0


def _save_layer(sub, args, inv, res, recon, rep, mask, row_names):
    inv.save(sub, row_names)
    if args.invariance:
        top = float(inv.spread.max())
        for i, n in enumerate(row_names):
            fig = figures.invariance_figure(
                res.originals[i].cpu(), list(res.images[i].cpu()), inv.spread[i], vmax=top
            )
            io.save_image(sub / f"{n}-invariance.png", fig)
    if mask is not None and args.window is not None and mask.dim() == 3:
        st = rep.stride
        ys = torch.nonzero(mask.sum((0, 2)) > 0).flatten()
        xs = torch.nonzero(mask.sum((0, 1)) > 0).flatten()
        box = (
            int(ys.min()) * st,
            int(xs.min()) * st,
            (int(ys.max()) + 1) * st,
            (int(xs.max()) + 1) * st,
        )
        for i, n in enumerate(row_names):
            io.save_image(
                sub / f"{n}-window.png",
                figures.window_figure(
                    res.originals[i].cpu(),
                    recon[i],
                    box,
                    title=f"{args.window}x{args.window} window",
                ),
            )


def _entry(i, recon, originals, fe, failed, res, rep, is_cnn):
    entry = {
        "feature_error": float(fe[i]),
        "failed": bool(failed[i]),
        "psnr": float(metrics.psnr(recon[i : i + 1], originals[i : i + 1])),
    }
    if min(recon.shape[-2:]) >= 11:
        entry["ssim"] = float(metrics.ssim(recon[i : i + 1], originals[i : i + 1]))
    if is_cnn and (
        rep.layers[-1] in ("classifier", "classifier.1", "fc") or res.targets.dim() == 2
    ):
        entry["target_top1"] = int(res.targets[i].argmax())
        code = res.codes[i] if res.codes.dim() == res.targets.dim() else res.codes[i, 0]
        entry["reconstruction_top1"] = int(code.argmax())
    return entry
