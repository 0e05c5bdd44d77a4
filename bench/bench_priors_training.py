"""Training speed of the learned priors (score matching steps per second, 1 thread).

One step = draw a batch (crops / patches of the training photos), score matching loss
(closed-form Laplacian, one backward for the score kept in the graph), backward to the
parameters, Adam. Measured on the settings of the shipped models (FoE 5x5, 24 experts,
16x16 crops, batch 64; ICA 8x8, 64 filters, 8x8 patches, batch 64) and the RGB separable FoE.
Results: bench/results/priors-training.json.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_priors_training.py
"""

import time

import torch

from common import write_results, print_table
from pyinvert.data.photos import training_photos
from pyinvert.priors import FoE, ICA, SeparableFoE, train

CASES = {
    "foe 5x5 x24, 16x16 crops": lambda: FoE(5, 24, 1),
    "ica 8x8 x64, 8x8 patches": lambda: ICA(8, 64, 1),
    "separable rgb 5x5 8x3, 16x16 crops": lambda: SeparableFoE(5, 8, 3),
}


def main(steps: int = 60):
    torch.set_num_threads(1)
    photos = training_photos()
    rows = []
    for name, make in CASES.items():
        train(make(), photos, steps=3, batch_size=64, progress=False)  # warm-up
        model = make()
        t0 = time.perf_counter()
        res = train(model, photos, steps=steps, batch_size=64, progress=False)
        total = time.perf_counter() - t0
        # the whitening (20,000 patches, once per run) is timed by a 0-step run
        t1 = time.perf_counter()
        train(make(), photos, steps=0, batch_size=64, progress=False)
        setup = time.perf_counter() - t1
        per_step = (total - setup) / steps
        rows.append(
            {
                "case": name,
                "steps_per_second": round(1.0 / per_step, 2),
                "ms_per_step": round(1e3 * per_step, 2),
                "setup_seconds": round(setup, 3),
                "final_loss": res.losses[-1],
            }
        )
    print_table(rows, ["case", "steps_per_second", "ms_per_step", "setup_seconds"])
    write_results("priors-training", {"steps": steps, "threads": 1, "results": rows})


if __name__ == "__main__":
    main()
