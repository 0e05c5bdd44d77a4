"""Train the shipped HOGgle paired dictionary (pyinvert/decoders/weights/hoggle.pt), and
measure its Table 1 row.

    OMP_NUM_THREADS=1 python bench/train_hoggle.py [--out PATH] [--seed 0] [--steps N]
    OMP_NUM_THREADS=1 python bench/train_hoggle.py --evaluate [--out PATH]

Data: scikit-image's photographs (:func:`pyinvert.data.photos.training_photos`), never the
held-out ones. Prints the seconds and the file's size. ``--evaluate`` (no training) runs
``table1`` with the HOGgle row on the 5 bundled samples (crops of training photos) and on
224x224 crops of the held-out photos (6 per photo, on a fixed grid), and writes
bench/results/hoggle.json.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from pyinvert import io
from pyinvert.data.photos import heldout_photos
from pyinvert.decoders.hoggle import SHIPPED, PairedDictionary
from pyinvert.decoders.hoggle_train import TRAIN_SETTINGS, train_hoggle
from pyinvert.experiments.table1 import REPORTED_TABLE1, ROWS, Row, hoggle, table1

RESULTS = Path(__file__).with_name("results") / "hoggle.json"
CROP = 224


def heldout_crops(directory) -> list:
    """6 crops of CROP x CROP per held-out photo (2 rows x 3 columns, corners and centres of
    a grid spanning the photo), written as PNG files."""
    paths = []
    for name, photo in heldout_photos().items():
        H, W = photo.shape[-2:]
        for r, top in enumerate((0, H - CROP)):
            for c, left in enumerate((0, (W - CROP) // 2, W - CROP)):
                crop = photo[:, top : top + CROP, left : left + CROP]
                paths.append(str(io.save_image(Path(directory) / f"{name}-{r}{c}.png", crop)))
    return paths


def _shown(path) -> str:
    """``path`` relative to the repository when it is inside it."""
    path, root = Path(path).resolve(), Path(__file__).resolve().parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def evaluate(path, out_dir) -> dict:
    path = SHIPPED if path is None else path
    pd = PairedDictionary.load(path)
    rows = {"hoggle": Row("hog", hoggle(pd), ROWS["hoggle"].label)}
    report = {
        "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "dictionary": {"path": _shown(path), **pd.metadata, "lam": pd.lam, "window": pd.window},
        "reported": dict(zip(("mean", "std"), REPORTED_TABLE1["hoggle"])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"bundled-samples": None, "heldout-crops": heldout_crops(tmp)}
        for name, paths in sets.items():
            res = table1(
                paths, reps=("hoggle",), rows=rows, out=Path(out_dir) / name, progress=False
            )
            r = res["hoggle"]
            report[name] = {
                "images": len(r["errors"]),
                "mean": r["mean"],
                "std": r["std"],
                "mean_png": r["mean_png"],
                "std_png": r["std_png"],
                "errors": r["errors"],
                "seconds": r["seconds"],
                "montage": str(Path(out_dir) / name / "table1-montage.png"),
            }
            print(
                f"{name}: {r['mean']:.2f} +- {r['std']:.2f} % ({len(r['errors'])} images, "
                f"{r['seconds']:.2f} s); paper 66.20 +- 13.7"
            )
    report["bundled-samples"]["note"] = "crops of 5 of the training photos (not held out)"
    io.write_json(RESULTS, report)
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(SHIPPED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=TRAIN_SETTINGS["steps"])
    p.add_argument("--num-atoms", type=int, default=TRAIN_SETTINGS["num_atoms"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--evaluate", action="store_true", help="measure --out, do not train")
    p.add_argument("--eval-out", default="pyinvert-out/hoggle", help="montages go here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.evaluate:
        evaluate(a.out, a.eval_out)
        print(f"wrote {RESULTS}")
        return 0
    start = time.perf_counter()
    pd = train_hoggle(
        a.out, seed=a.seed, progress=not a.no_progress, steps=a.steps, num_atoms=a.num_atoms
    )
    size = Path(a.out).stat().st_size
    print(
        f"{pd!r}: {pd.metadata['pairs']} pairs, fit {pd.metadata['seconds']} s, "
        f"total {time.perf_counter() - start:.1f} s, {size / 2**20:.2f} MiB at {a.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
