"""The same inversions with the TV prior and with a learned prior, side by side.

Representations: HOG, DSIFT (gray) and MobileNetV2 features.3 (RGB, the shipped ImageNet
weights), recipe cvpr2015, ``--steps`` iterations each. Images: the two held-out photos
(china, flower; evaluation only: nothing is tuned here), area-downscaled by 4 and
centre-cropped to 96 x 96. Priors: "tv" (the recipe), "foe" (the recipe's TV plus the shipped FoE,
pyinvert.priors.objective.inversion_prior), and for features.3 also the recipe's TV
plus an FoE trained on features.3 activations of the training photos
(pyinvert.priors.objective.train_feature_prior; a FeaturePrior term on that layer).

Table: the normalized feature error |Phi(x) - Phi0|^2 / |Phi0|^2 and the PSNR / SSIM of the
reconstruction against the original (for HOG/DSIFT against its gray version). Writes
bench/results/compare-priors.json and bench/results/compare-priors.png.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=. python bench/compare_priors.py [--steps 200]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

import pyinvert
from pyinvert import io, metrics
from pyinvert.data.photos import heldout_photos, training_photos
from pyinvert.figures.inversion import montage
from pyinvert.priors.objective import FeaturePrior, train_feature_prior
from pyinvert.representations import make_representation
from pyinvert.representations.base import to_gray

from common import RESULTS_DIR

REPS = ("hog", "dsift", "cnn:mobilenet_v2:features.3")


def images(size=96):
    out = []
    for img in heldout_photos().values():
        small = F.interpolate(img[None], scale_factor=0.25, mode="area")[0]
        H, W = small.shape[-2:]
        y, x = (H - size) // 2, (W - size) // 2
        out.append(small[:, y : y + size, x : x + size])
    return torch.stack(out)


def feature_prior(layer):
    crops = []
    for img in list(training_photos().values())[:6]:
        small = F.interpolate(img[None], scale_factor=0.5, mode="area")[0]
        crops.append(small[:, :128, :128])
    t0 = time.perf_counter()
    model = train_feature_prior(layer, torch.stack(crops), filter_size=3, n_experts=24, steps=150)
    return model, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = images()
    rows, grid, labels = [], [], []
    for rep_name in REPS:
        rep = make_representation(rep_name)
        priors = {"tv": "tv", "foe": "foe"}
        if rep_name.startswith("cnn"):
            model, secs = feature_prior(rep)
            priors["tv + feature FoE"] = FeaturePrior(model, rep, weight=0.01)
        for label, prior in priors.items():
            t0 = time.perf_counter()
            res = pyinvert.invert(
                x,
                representation=rep,
                steps=args.steps,
                progress=False,
                generator=torch.Generator().manual_seed(0),
                prior=prior,
            )
            ref = res.originals
            rec = res.images
            if rec.shape[1] != ref.shape[1]:
                ref = to_gray(ref)
            row = {
                "representation": rep_name,
                "prior": label,
                "feature_error": [round(float(v), 4) for v in res.feature_error],
                "psnr": [round(float(v), 2) for v in metrics.psnr(rec, ref)],
                "ssim": [round(float(v), 3) for v in metrics.ssim(rec, ref)],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(json.dumps(row))
            for i in range(x.shape[0]):
                if len(grid) <= i:
                    grid.append([])
                if len(grid[i]) == 0:
                    grid[i].append(x[i])
                    if i == 0:
                        labels.append("original")
                grid[i].append(rec[i].expand(3, -1, -1))
                if i == 0:
                    labels.append(f"{rep_name.replace('cnn:mobilenet_v2:', '')} {label}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    io.write_json(RESULTS_DIR / "compare-priors.json", {"steps": args.steps, "rows": rows})
    io.save_image(RESULTS_DIR / "compare-priors.png", montage(grid, col_labels=labels, height=96))


if __name__ == "__main__":
    main()
