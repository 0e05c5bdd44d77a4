"""Fit the default denoising weights (pyinvert.priors.denoise.DEFAULT_WEIGHTS) on TRAINING
photos only, and evaluate the priors on the held-out photos at those defaults.

Tuning data: 9 gray crops of 96 x 96 from pyinvert.data.photos.training_photos(), one per
photo in their fixed order, each photo area-downscaled by 2 first (as the held-out
evaluation's photos are), positions from torch.Generator seed 1; noise from seed 2. Grid: weights 2^(k/2) around a start value, the best mean PSNR wins (a
coarse grid, then a finer one around the best).

Evaluation (``--eval``): the held-out photos (china, flower), gray, 4 crops of 128 x 128
each (the quadrant centres of the image downscaled by 2), noise seed 3; each prior at its
tabulated default weight; PSNR and SSIM (pyinvert.metrics).

Usage:
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/tune_denoise.py --sigma 25 [--priors tv,foe,ica]
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/tune_denoise.py --eval --sigma 25
"""

import argparse
import importlib
import json
import math
import time

import torch
import torch.nn.functional as F

from pyinvert import metrics
from pyinvert.data.photos import heldout_photos, training_photos
from pyinvert.priors.store import load
from pyinvert.representations.base import to_gray

dn = importlib.import_module("pyinvert.priors.denoise")  # the module, not the function

#: Where the search starts at sigma = 25 (scaled by 25 / sigma for other sigmas).
START = {"tv": 6.7, "foe": 0.14, "ica": 0.05}


def _half(gray):
    return F.interpolate(gray, scale_factor=0.5, mode="area", recompute_scale_factor=False)


def training_crops(size=96, count=9):
    g = torch.Generator().manual_seed(1)
    crops = []
    for img in list(training_photos().values())[:count]:
        gray = _half(to_gray(img[None]))[0]
        H, W = gray.shape[-2:]
        y = int(torch.randint(H - size + 1, (1,), generator=g))
        x = int(torch.randint(W - size + 1, (1,), generator=g))
        crops.append(gray[:, y : y + size, x : x + size])
    return torch.stack(crops)


def heldout_crops(size=128):
    crops = []
    for img in heldout_photos().values():
        gray = to_gray(img[None])
        half = _half(gray)[0]
        H, W = half.shape[-2:]
        for cy in (H // 4, 3 * H // 4):
            for cx in (W // 4, 3 * W // 4):
                y = min(max(cy - size // 2, 0), H - size)
                x = min(max(cx - size // 2, 0), W - size)
                crops.append(half[:, y : y + size, x : x + size])
    return torch.stack(crops)


def noisy_of(clean, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def score(prior, clean, noisy, sigma, weight, steps):
    out = dn.denoise(noisy, prior, sigma, weight=weight, steps=steps).clamp(0, 1)
    return metrics.psnr(out, clean), metrics.ssim(out, clean), out


def tune(name, sigma, steps, clean, noisy):
    prior = "tv" if name == "tv" else load(name)
    tried = {}

    def psnr_at(w):
        if w not in tried:
            tried[w] = float(score(prior, clean, noisy, sigma, w, steps)[0].mean())
            print(f"  {name} sigma={sigma * 255:.0f} weight={w:.4g}: PSNR {tried[w]:.3f}")
        return tried[w]

    best = START[name] * 25.0 / (sigma * 255.0)
    for ratio in (4.0, math.sqrt(2.0)):
        while True:
            up, down = best * ratio, best / ratio
            here = psnr_at(best)
            if psnr_at(up) > here:
                best = up
            elif psnr_at(down) > here:
                best = down
            else:
                break
    return best, tried[best]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigma", type=float, nargs="+", default=[25.0])
    p.add_argument("--priors", default="tv,foe,ica")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval", action="store_true", help="held-out evaluation at the defaults")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.priors.split(",")
    results = {}
    for s in args.sigma:
        sigma = s / 255.0
        if args.eval:
            clean = heldout_crops()
            noisy = noisy_of(clean, sigma, 3)
            row = {
                "noisy": {
                    "psnr": float(metrics.psnr(noisy.clamp(0, 1), clean).mean()),
                    "ssim": float(metrics.ssim(noisy.clamp(0, 1), clean).mean()),
                }
            }
            for name in names:
                t0 = time.perf_counter()
                ps, ss, _ = score(name, clean, noisy, sigma, None, args.steps)
                row[name] = {
                    "weight": dn.default_weight(name, sigma),
                    "psnr": float(ps.mean()),
                    "ssim": float(ss.mean()),
                    "psnr_per_crop": [round(float(v), 3) for v in ps],
                    "seconds": time.perf_counter() - t0,
                }
                print(f"sigma {s:g} {name}: PSNR {ps.mean():.3f} SSIM {ss.mean():.4f}")
            results[str(s)] = row
        else:
            clean = training_crops()
            noisy = noisy_of(clean, sigma, 2)
            for name in names:
                w, v = tune(name, sigma, args.steps, clean, noisy)
                print(f"sigma {s:g} {name}: best weight {w:.4g} (training PSNR {v:.3f})")
                results.setdefault(str(s), {})[name] = {"weight": w, "training_psnr": v}
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
