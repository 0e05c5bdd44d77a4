"""CVPR 2015 Table 1: the normalized reconstruction error of HOG, HOGb and DSIFT inversions,
and of HOGgle (Vondrick et al. 2013), the paper's baseline.

A row of the table is a :class:`Row`: a representation and a method that maps
``(images, representation, settings) -> reconstructions``; every row's error is measured the
same way (:func:`pyinvert.metrics.table1_error` of the reconstructions' codes). A new method
(a trained decoder) is one entry of :data:`ROWS`.

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, Sec. 4.1 and Table 1.
    C. Vondrick, A. Khosla, T. Malisiewicz, A. Torralba, "HOGgles: Visualizing Object Detection
    Features", ICCV 2013.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

import pyinvert
from pyinvert import data, figures, io, metrics
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import make_representation
from pyinvert.tasks.inversion import InversionResult
from pyinvert.decoders import hoggle as _hoggle
from pyinvert.decoders.hoggle import PairedDictionary, hog_config
from pyinvert.decoders.store import find_decoder, load, same_representation

#: The paper's Table 1 (CVPR 2015), mean +- std of the error in %, first 100 ILSVRC12 val images.
REPORTED_TABLE1 = OrderedDict(
    [
        ("hoggle", (66.20, 13.7)),
        ("hog", (28.10, 7.9)),
        ("hogb", (10.67, 5.2)),
        ("dsift", (10.04, 7.5)),
    ]
)


@dataclass(frozen=True)
class RunSettings:
    """What :func:`table1` passes to every row's method (the arguments of
    :func:`pyinvert.invert`)."""

    recipe: object
    steps: Optional[int]
    seed: int
    backend: str
    progress: bool
    batch_size: Optional[int]
    device: object


@dataclass(frozen=True)
class Row:
    """One row of Table 1.

    Attributes:
        rep: the representation whose codes are inverted and compared ("hog", ...).
        method: ``method(images, rep, settings)``: images [B, 3, H, W] in [0, 1], the built
            representation and the :class:`RunSettings`; returns the reconstructions
            [B, C, H, W] in [0, 1], or an :class:`~pyinvert.tasks.inversion.InversionResult`
            (whose codes, targets, feature error and seconds are then used as they are).
        label: the row's name in the printed table.
    """

    rep: str
    method: Callable
    label: str


def optimization(images, rep, settings: RunSettings) -> InversionResult:
    """The paper's method: :func:`pyinvert.invert` with the recipe."""
    return pyinvert.invert(
        images,
        representation=rep,
        recipe=settings.recipe,
        steps=settings.steps,
        generator=torch.Generator().manual_seed(settings.seed),
        backend=settings.backend,
        progress=settings.progress,
        batch_size=settings.batch_size,
        device=settings.device,
    )


def hoggle(dictionary=None) -> Callable:
    """The HOGgle method (:class:`pyinvert.decoders.hoggle.PairedDictionary`) with a
    dictionary: a PairedDictionary, a file, or None for the shipped one (read when the row
    runs)."""

    def method(images, rep, settings):
        pd = dictionary
        if pd is None and not _hoggle.SHIPPED.is_file():
            raise ValueError(
                f"table1: the HOGgle row needs its dictionary at {_hoggle.SHIPPED} (train it with "
                f"python bench/train_hoggle.py), found none"
            )
        if not isinstance(pd, PairedDictionary):
            pd = PairedDictionary.load(pd, representation=rep)
        elif pd.config != hog_config(rep):
            raise ValueError(
                f"table1: the HOGgle dictionary was learned for HOG {pd.config}, the row "
                f"inverts HOG {hog_config(rep)}"
            )
        return pd.invert_images(images)

    return method


def decoder(name=None) -> Callable:
    """A trained decoder's reconstruction (:mod:`pyinvert.decoders`, Dosovitskiy & Brox):
    ``name`` is a shipped name, a file, or None for the one named after the row's
    representation."""

    def method(images, rep, settings):
        return pyinvert.invert(
            images,
            representation=rep,
            method="decoder",
            decoder=name,
            device=settings.device,
            progress=False,
        )

    return method


#: The rows :func:`table1` knows, in the paper's order (then the trained decoders, which the
#: paper does not have).
ROWS = OrderedDict(
    [
        ("hoggle", Row("hog", hoggle(), "HOGgle (HOG)")),
        ("hog", Row("hog", optimization, "ours HOG")),
        ("hogb", Row("hogb", optimization, "HOGb")),
        ("dsift", Row("dsift", optimization, "DSIFT")),
        ("hog-decoder", Row("hog", decoder("hog"), "HOG decoder")),
        ("dsift-decoder", Row("dsift", decoder("dsift"), "DSIFT decoder")),
    ]
)


def default_rows(recipe="cvpr2015") -> tuple:
    """The rows run by default: all of :data:`ROWS`, less "hoggle" when its shipped
    dictionary is not installed and less a decoder row whose shipped decoder was trained on
    another configuration than ``recipe`` gives its representation (the DSIFT decoder: the
    cvpr2015 bins)."""

    rec = get_recipe(recipe)

    def available(name):
        if name == "hoggle":
            return _hoggle.SHIPPED.is_file()
        if not name.endswith("-decoder"):
            return True
        try:
            found = load(find_decoder(name[: -len("-decoder")])).metadata["representation"]
        except (FileNotFoundError, ValueError):
            return False
        return same_representation(found, make_representation(ROWS[name].rep, recipe=rec).config())

    return tuple(n for n in ROWS if available(n))


#: The run-level files of :func:`table1` (no input's file may take these names).
TABLE1_FILES = ("table1.json", "table1-montage.png")


def table1(
    paths: Optional[Sequence] = None,
    *,
    reps=None,
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
    rows: Optional[Mapping[str, Row]] = None,
):
    """Reproduce CVPR 2015 Table 1 on images (default: the bundled photos).

    Writes ``<name>-<row>.png`` per image and row (names as
    :func:`pyinvert.io.output_names` gives them), ``table1.json`` and ``table1-montage.png``
    (rows: the originals, then each row's reconstructions) into ``out``.

    Args:
        paths: image files, all of one size (at least 2: the error is normalized by their
            mean pairwise code distance). Default: the 5 bundled photos.
        reps: rows, of :data:`ROWS` ("hoggle", "hog", "hogb", "dsift", "hog-decoder",
            "dsift-decoder") and ``rows``.
            Default: None (:func:`default_rows`).
        recipe, steps, seed, backend, progress, batch_size, device: as :func:`pyinvert.invert`.
        out: the output folder.
        max_pixels: the pixel limit of :func:`pyinvert.io.load_image`.
        on_error: ``on_error(path, message)`` for an image that cannot be read (it is then
            left out); None: such an image raises ValueError.
        rows: more rows, or replacements of :data:`ROWS` entries, by name. Default: None.

    Returns:
        A dict row -> {"mean", "std", "errors", "mean_png", "std_png", "feature_error",
        "seconds"} (errors in %, per image; ``*_png``: measured on the saved 8-bit PNGs).

    Raises:
        ValueError: an unknown row, an unreadable image (without ``on_error``), fewer than 2
            readable images, or images of several sizes.
        OSError: an output file cannot be written.
    """
    known = OrderedDict(ROWS)
    known.update(rows or {})
    reps = tuple(default_rows(recipe) if reps is None else reps)
    unknown = [r for r in reps if r not in known]
    if unknown or not reps:
        raise ValueError(f"table1: expected rows among {', '.join(known)}, got {list(reps)}")
    paths = [str(p) for p in (paths or data.sample_paths())]
    out = Path(out)
    rec = get_recipe(recipe)
    settings = RunSettings(rec, steps, seed, backend, progress, batch_size, device)
    built = [
        (name, known[name], make_representation(known[name].rep, backend=backend, recipe=rec))
        for name in reps
    ]
    need = max((r.min_size for _, _, r in built), default=1)
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
    results, montage_rows, originals = OrderedDict(), [], None
    for name, row, rep in built:
        start = time.perf_counter()
        res = row.method(batch, rep, settings)
        if isinstance(res, InversionResult):
            images, codes, targets = res.images, res.codes, res.targets
            feature_error, seconds, originals_row = res.feature_error, res.seconds, res.originals
        else:
            images = _check_reconstructions(name, res, batch)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                x = batch.to(images)
                targets = rep(rep.preprocess(x))
                codes = rep(rep.preprocess(images))
                originals_row = rep.postprocess(rep.preprocess(x))
            feature_error = metrics.feature_error(codes, targets)
        err = metrics.table1_error(codes, targets).cpu() * 100
        # the same error on the saved 8-bit reconstructions (what a reader of the PNGs gets)
        q = torch.round(images * 255) / 255
        with torch.no_grad():
            qcodes = rep(rep.preprocess(q.to(targets)))
        err_png = metrics.table1_error(qcodes, targets).cpu() * 100
        results[name] = {
            "mean": float(err.mean()),
            "std": float(err.std()),
            "errors": err.tolist(),
            "mean_png": float(err_png.mean()),
            "std_png": float(err_png.std()),
            "feature_error": feature_error.tolist(),
            "seconds": seconds,
        }
        originals = originals_row.cpu()
        montage_rows.append(list(images.cpu()))
        for i, n in enumerate(names):
            io.save_image(out / f"{n}-{name}.png", images[i])
    if originals is not None:
        grid = figures.montage(
            [list(originals)] + montage_rows, row_labels=["original", *results], col_labels=None
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


def _check_reconstructions(name, images, batch):
    """A row method's output: [B, C, H, W] like the batch (C of 1 or 3)."""
    B, _, H, W = batch.shape
    if (
        not isinstance(images, torch.Tensor)
        or images.dim() != 4
        or images.shape[0] != B
        or tuple(images.shape[-2:]) != (H, W)
        or images.shape[1] not in (1, 3)
    ):
        got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"table1: expected row {name!r} to return reconstructions of shape "
            f"({B}, 1 or 3, {H}, {W}), got {got}"
        )
    return images.detach().float()


def format_table1(results, rows: Optional[Mapping[str, Row]] = None) -> str:
    """The paper's Table 1 beside ``results`` (from :func:`table1`), as text: the paper's
    rows, then any other row of ``results`` (``rows``: their labels, as given to
    :func:`table1`)."""
    known = OrderedDict(ROWS)
    known.update(rows or {})
    lines = [
        "CVPR 2015 Table 1: reconstruction error (%), mean +- std",
        f"{'representation':<16}{'reported (paper)':>20}{'ours':>18}{'ours, 8-bit PNG':>20}",
    ]
    names = list(REPORTED_TABLE1) + [n for n in results if n not in REPORTED_TABLE1]
    for name in names:
        label = known[name].label if name in known else name
        reported = "-"
        if name in REPORTED_TABLE1:
            m, s = REPORTED_TABLE1[name]
            reported = f"{m:6.2f} +- {s:4.1f}"
        if name in results:
            r = results[name]
            ours = f"{r['mean']:6.2f} +- {r['std']:5.2f}"
            png = f"{r['mean_png']:6.2f} +- {r['std_png']:5.2f}"
        else:
            ours = png = "-"
        lines.append(f"{label:<16}{reported:>20}{ours:>18}{png:>20}")
    lines.append(
        "reported: first 100 ILSVRC12 validation images; ours: the images given "
        "(default: the 5 bundled photos)"
    )
    return "\n".join(lines)
