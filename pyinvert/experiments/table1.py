"""CVPR 2015 Table 1: the normalized reconstruction error of HOG, HOGb and DSIFT inversions.

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, Sec. 4.1 and Table 1.
"""

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

import pyinvert
from pyinvert import data, figures, io, metrics
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import make_representation

#: The paper's Table 1 (CVPR 2015), mean +- std of the error in %, first 100 ILSVRC12 val images.
REPORTED_TABLE1 = OrderedDict(
    [
        ("hoggle", (66.20, 13.7)),
        ("hog", (28.10, 7.9)),
        ("hogb", (10.67, 5.2)),
        ("dsift", (10.04, 7.5)),
    ]
)

#: The run-level files of :func:`table1` (no input's file may take these names).
TABLE1_FILES = ("table1.json", "table1-montage.png")


def table1(
    paths: Optional[Sequence] = None,
    *,
    reps=("hog", "hogb", "dsift"),
    recipe="cvpr2015",
    steps=None,
    out="pyinvert-out/table1",
    seed=0,
    backend="fused",
    progress=True,
    batch_size=None,
    device=None,
    max_pixels=None,
    on_error: Optional[Callable[[str, str], None]] = None,
):
    """Reproduce CVPR 2015 Table 1 on images (default: the bundled photos).

    Writes ``<name>-<rep>.png`` per image and representation (names as
    :func:`pyinvert.io.output_names` gives them), ``table1.json`` and ``table1-montage.png``
    (rows: the originals, then each representation's reconstructions) into ``out``.

    Args:
        paths: image files, all of one size (at least 2: the error is normalized by their
            mean pairwise code distance). Default: the 5 bundled photos.
        reps: representations, of "hog", "hogb", "dsift".
        recipe, steps, seed, backend, progress, batch_size, device: as :func:`pyinvert.invert`.
        out: the output folder.
        max_pixels: the pixel limit of :func:`pyinvert.io.load_image`.
        on_error: ``on_error(path, message)`` for an image that cannot be read (it is then
            left out); None: such an image raises ValueError.

    Returns:
        A dict rep -> {"mean", "std", "errors", "mean_png", "std_png", "feature_error",
        "seconds"} (errors in %, per image; ``*_png``: measured on the saved 8-bit PNGs).

    Raises:
        ValueError: an unreadable image (without ``on_error``), fewer than 2 readable images,
            or images of several sizes.
        OSError: an output file cannot be written.
    """
    paths = [str(p) for p in (paths or data.sample_paths())]
    out = Path(out)
    rec = get_recipe(recipe)
    built = [(name, make_representation(name, backend=backend, recipe=rec)) for name in reps]
    need = max((r.min_size for _, r in built), default=1)
    loaded = []
    for path in paths:
        try:
            img = io.load_image(path, max_pixels=max_pixels)
            if min(img.shape[-2:]) < need:
                raise ValueError(
                    f"table1: image {path} is {img.shape[-2]}x{img.shape[-1]}, "
                    f"smaller than the {need}x{need} pixels the representations "
                    f"need"
                )
        except ValueError as e:
            if on_error is None:
                raise
            on_error(path, str(e))
            continue
        loaded.append((path, img))
    if len(loaded) < 2:
        raise ValueError(
            f"table1: expected at least 2 readable images (the error is normalized "
            f"by their mean pairwise distance), got {len(loaded)}"
        )
    sizes = {tuple(t.shape[-2:]) for _, t in loaded}
    if len(sizes) != 1:
        raise ValueError(f"table1: expected images of one size, got {sorted(sizes)[:4]}")
    names = io.output_names(
        [p for p, _ in loaded],
        lambda n: [f"{n}-{r}.png" for r in reps],
        [*TABLE1_FILES, *io.inputs_inside([p for p, _ in loaded], out)],
    )
    batch = torch.stack([t.expand(3, -1, -1) for _, t in loaded])
    results, rows, originals = OrderedDict(), [], None
    for name, rep in built:
        res = pyinvert.invert(
            batch,
            representation=rep,
            recipe=rec,
            steps=steps,
            generator=torch.Generator().manual_seed(seed),
            backend=backend,
            progress=progress,
            batch_size=batch_size,
            device=device,
        )
        err = metrics.table1_error(res.codes, res.targets).cpu() * 100
        # the same error on the saved 8-bit reconstructions (what a reader of the PNGs gets)
        q = torch.round(res.images * 255) / 255
        with torch.no_grad():
            qcodes = rep(rep.preprocess(q.to(res.targets)))
        err_png = metrics.table1_error(qcodes, res.targets).cpu() * 100
        results[name] = {
            "mean": float(err.mean()),
            "std": float(err.std()),
            "errors": err.tolist(),
            "mean_png": float(err_png.mean()),
            "std_png": float(err_png.std()),
            "feature_error": res.feature_error.tolist(),
            "seconds": res.seconds,
        }
        originals = res.originals.cpu()
        rows.append(list(res.images.cpu()))
        for i, n in enumerate(names):
            io.save_image(out / f"{n}-{name}.png", res.images[i])
    if originals is not None:
        grid = figures.montage(
            [list(originals)] + rows, row_labels=["original", *results], col_labels=None
        )
        io.save_image(out / "table1-montage.png", grid)
    io.write_json(
        out / "table1.json",
        {
            "recipe": rec.name,
            "images": [p for p, _ in loaded],
            "names": names,
            "ours": results,
            "reported": {k: {"mean": m, "std": s} for k, (m, s) in REPORTED_TABLE1.items()},
        },
    )
    return results


def format_table1(results) -> str:
    """The paper's Table 1 beside ``results`` (from :func:`table1`), as text."""
    lines = [
        "CVPR 2015 Table 1: reconstruction error (%), mean +- std",
        f"{'representation':<16}{'reported (paper)':>20}{'ours':>18}{'ours, 8-bit PNG':>20}",
    ]
    for name, (m, s) in REPORTED_TABLE1.items():
        label = {"hoggle": "HOGgle (HOG)", "hog": "ours HOG", "hogb": "HOGb", "dsift": "DSIFT"}[
            name
        ]
        if name in results:
            r = results[name]
            ours = f"{r['mean']:6.2f} +- {r['std']:5.2f}"
            png = f"{r['mean_png']:6.2f} +- {r['std_png']:5.2f}"
        else:
            ours = png = "-"
        lines.append(f"{label:<16}{f'{m:6.2f} +- {s:4.1f}':>20}{ours:>18}{png:>20}")
    lines.append(
        "reported: first 100 ILSVRC12 validation images; ours: the images given "
        "(default: the 5 bundled photos)"
    )
    return "\n".join(lines)
