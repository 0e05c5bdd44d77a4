"""The per-row L-BFGS on a GPU: the row path (one ``pyinvert::lbfgs_tell`` launch per tell)
against the tensor path (some 300 small kernels per tell, CUDA's default until this check has
run), on quadratics of the texture benchmark's sizes (D = 3 x 96^2 and 3 x 224^2, history 10,
B = 1 and 8).

* agreement: the two paths driven side by side for the first ``--steps`` tells; every ask
  compared bit for bit (the step of the first difference, or None);
* speed: seconds per ask/tell of each path, the median of the steps after the history is full,
  each synchronized (the tell's host logic is part of what is timed).

Writes bench/results/lbfgs-cuda.json (lbfgs-cpu.json with --device cpu, a dry run of the same
code where there is no GPU). Called by bench/bench_gpu.py; standalone::

    python bench/bench_gpu_lbfgs.py [--device cuda] [--steps 40]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402

from pyinvert.optim.lbfgs import LBFGS  # noqa: E402

SIZES = (3 * 96 * 96, 3 * 224 * 224)
BATCHES = (1, 8)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(B, D, steps, device):
    """(the step of the first ask where the two paths differ or None, seconds per tell of the
    tensor path, of the row path)."""
    gen = torch.Generator().manual_seed(B * 7 + D)
    A = (torch.rand(B, D, generator=gen) + 0.5).to(device)
    x0 = torch.randn(B, D, generator=gen).to(device)
    kw = dict(max_iter=10**6, max_eval=10**6, history_size=10, tolerance_grad=0.0)
    opts = {p: LBFGS(x0, _path=p, tolerance_change=0.0, **kw) for p in ("tensor", "rows")}
    seconds = {p: [] for p in opts}
    first_difference = None
    for step in range(steps):
        asks = {}
        for path, opt in opts.items():
            z = opt.ask()
            asks[path] = z.clone()
            f, g = (A * z * z).sum(1), 2 * A * z
            sync(device)
            t0 = time.perf_counter()
            opt.tell(f, g)
            sync(device)
            seconds[path].append(time.perf_counter() - t0)
        if first_difference is None and not torch.equal(asks["tensor"], asks["rows"]):
            first_difference = step
    full = slice(12, None)  # after the history has filled
    return first_difference, *(statistics.median(seconds[p][full]) for p in ("tensor", "rows"))


def bench_lbfgs(device="cuda", steps=40, deadline=None):
    device = torch.device(device)
    rows = []
    for D in SIZES:
        for B in BATCHES:
            if deadline is not None and time.time() > deadline:
                break
            diff, tensor_s, rows_s = compare(B, D, steps, device)
            rows.append(
                dict(
                    D=D,
                    B=B,
                    bit_identical_asks=diff is None,
                    first_difference_step=diff,
                    tensor_path_ms=1e3 * tensor_s,
                    row_path_ms=1e3 * rows_s,
                    speedup=tensor_s / rows_s,
                )
            )
            print(rows[-1], flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    payload = dict(device=name, torch=torch.__version__, steps=steps, rows=rows)
    write_results(f"lbfgs-{device.type}", payload)
    return payload


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_lbfgs: SKIPPED: no CUDA device")
        return 0
    bench_lbfgs(args.device, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
