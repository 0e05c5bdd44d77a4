"""What bench/bench_gpu.py's GPU benchmarks share: the GPU's description, timing by CUDA
events, the L2 size, the device's copy ceiling, and writing a result file atomically."""

import json
import os
import statistics
import time

import torch
from common import RESULTS_DIR

DEVICE = "cuda"


def log(*args):
    print(*args, flush=True)


def gpu_info():
    p = torch.cuda.get_device_properties(0)
    return {
        "name": p.name,
        "capability": f"{p.major}.{p.minor}",
        "sms": p.multi_processor_count,
        "memory_gib": round(p.total_memory / 2**30, 1),
        "l2_mib": round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def cuda_time(fn, *, warmup=3, repeats=20, max_seconds=3.0):
    """(median, min, max) seconds of fn() by CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times, start_wall = [], time.perf_counter()
    while len(times) < repeats and (
        len(times) < 3 or time.perf_counter() - start_wall < max_seconds
    ):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), min(times), max(times)


def write(name, payload):
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-cuda.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    return path


def l2_bytes():
    return getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 50 * 2**20


def copy_ceiling_GBps() -> float:
    """The device's copy ceiling: a 1 GiB device-to-device copy (bytes read + written)."""
    big = torch.empty(2**28, device=DEVICE)
    return 2 * big.numel() * 4 / cuda_time(lambda: big.clone())[0] / 1e9
