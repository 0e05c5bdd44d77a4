"""Images per second of batched HOG inversion (CVPR 2015 recipe), fused vs reference backend.

Both backends run the same loop (pyinvert.invert) for a fixed number of iterations on the
bundled photos (tiled to B images); before timing, a short run checks that they agree.

    python bench/bench_invert.py [--iterations 100] [--batches 1,8,32] [--size 224]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_results  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import data  # noqa: E402
from pyinvert.tasks.inversion import as_image_batch  # noqa: E402


def photos(B, size):
    base = as_image_batch([str(p) for p in data.sample_paths()])
    if size != base.shape[-1]:
        base = torch.nn.functional.interpolate(base, size=(size, size), mode="area")
    reps = (B + base.shape[0] - 1) // base.shape[0]
    return base.repeat(reps, 1, 1, 1)[:B].contiguous()


def run(images, backend, iterations):
    t0 = time.perf_counter()
    res = pyinvert.invert(
        images,
        representation="hog",
        steps=iterations,
        backend=backend,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return time.perf_counter() - t0, res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (min taken)")
    args = p.parse_args(argv)

    # Agreement check: the two backends follow the same trajectory for a few steps.
    x = photos(2, 64)
    _, a = run(x, "fused", 5)
    _, b = run(x, "reference", 5)
    diff = float((a.images - b.images).abs().max())
    print(f"fused vs reference after 5 iterations (2 x 64x64): max |diff| = {diff:.2e}")
    if diff > 1e-2:
        raise SystemExit("bench_invert: the backends disagree; not timing")

    rows = []
    for B in [int(v) for v in args.batches.split(",")]:
        images = photos(B, args.size)
        row = {"B": B, "size": args.size, "iterations": args.iterations}
        for backend in ("fused", "reference"):
            run(images[:1], backend, 2)  # warm-up
            seconds = min(run(images, backend, args.iterations)[0] for _ in range(args.repeats))
            row[f"{backend}_s"] = seconds
            row[f"{backend}_img_per_s"] = B / seconds
        row["speedup"] = row["reference_s"] / row["fused_s"]
        rows.append(row)
        print_table([row], list(row))
    print()
    print_table(
        rows, ["B", "size", "iterations", "fused_img_per_s", "reference_img_per_s", "speedup"]
    )
    write_results(
        "invert",
        {
            "description": "HOG inversion (cvpr2015 recipe), images/s, fused vs reference backend",
            "agreement_max_abs_diff": diff,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
