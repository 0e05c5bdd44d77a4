"""Timing and reporting helpers shared by the benchmarks.

Timings are medians over repeated calls after warm-up (steady state: caches, allocator and
thread pool warmed). Speed is reported as ratios between implementations measured in the same
run, since absolute times on a shared 2-core machine drift.
"""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def median_time(fn, *, warmup=3, repeats=15, min_seconds=0.5, max_repeats=200):
    """Median wall time of fn() in seconds, after `warmup` untimed calls.

    Repeats at least `repeats` times and until `min_seconds` have passed (at most max_repeats).
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or (
        time.perf_counter() - start < min_seconds and len(times) < max_repeats
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(num_bytes, dtype=torch.float32):
    """Measured copy bandwidth (bytes/s) for a buffer of num_bytes: read once + write once."""
    n = max(num_bytes // torch.tensor([], dtype=dtype).element_size(), 1)
    src = torch.randn(n, dtype=dtype)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / seconds


def machine_info():
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
    }


def print_table(rows, columns):
    """Print rows (dicts) as an aligned text table with the given column keys."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_results(name, payload):
    """Write payload (plus machine info) to bench/results/<name>.json atomically."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2))
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path
