"""Fitting time and peak memory of the equivariance maps: streaming (accumulate X^T X) versus
in-memory (all rows, then one least-squares solve), for HOG (3 x 3 maps) and MobileNetV2
layers (1 x 1 maps), over N crops of the bundled photos (default 1000).

Each configuration runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its
own; "fit seconds" is the whole training pass (crops, features, accumulation or row stacking,
and the solve), "solve-only memory" the float64 bytes the fit holds (d^2 + d d' for streaming,
N d + N d' for in-memory). The two fits must agree (max |W_stream - W_memory|) before their
times are reported.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/bench_equivariance.py [--crops 1000]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CONFIGS = [
    {"name": "hog k=3", "rep": "hog", "kernel": 3, "transforms": ["rot45"]},
    {
        "name": "mobilenet_v2 k=1",
        "rep": "cnn:mobilenet_v2:features.6,features.13,features.18",
        "kernel": 1,
        "transforms": ["rot45"],
    },
]


def child(cfg: dict, streaming: bool, crops: int, out: str) -> None:
    import torch

    from pyinvert.analysis import equivariance

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = equivariance(
        cfg["rep"],
        str(ROOT / "pyinvert" / "data"),
        cfg["transforms"],
        kernel=cfg["kernel"],
        ridge=1e-3,
        crops=crops,
        test_crops=8,
        size=128,
        chunk=16,
        streaming=streaming,
        generator=torch.Generator().manual_seed(0),
    )
    total = time.perf_counter() - t0
    maps = {"/".join(k): m.weight.detach().double().flatten(1) for k, m in res.maps.items()}
    torch.save(maps, out + ".pt")
    dims = {}
    for k, m in res.maps.items():
        d_out, d_in = m.weight.flatten(1).shape
        rows = res.settings["rows"]["('%s', '%s')" % k] if "rows" in res.settings else None
        dims["/".join(k)] = {"d_in": d_in, "d_out": d_out, "rows": rows}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump(
        {
            "fit_seconds": res.settings["fit_seconds"],
            "total_seconds": total,
            "peak_rss_bytes": rss,
            "dims": dims,
            "errors": {f"{r['layer']}/{r['transform']}": r["error_map"] for r in res.rows},
        },
        open(out, "w"),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", type=int, default=1000)
    ap.add_argument("--child", default=None)
    ap.add_argument("--streaming", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(CONFIGS[int(args.child)], bool(args.streaming), args.crops, args.out)
        return
    import tempfile

    import torch
    from common import RESULTS_DIR, machine_info

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(CONFIGS):
            runs = {}
            for streaming in (1, 0):
                out = f"{tmp}/{i}-{streaming}.json"
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(i),
                        "--streaming",
                        str(streaming),
                        "--crops",
                        str(args.crops),
                        "--out",
                        out,
                    ],
                    check=True,
                    env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                )
                runs[streaming] = json.load(open(out))
                runs[streaming]["maps"] = torch.load(out + ".pt")
            diff = max(
                float((runs[1]["maps"][k] - runs[0]["maps"][k]).abs().max())
                for k in runs[1]["maps"]
            )
            scale = max(float(runs[1]["maps"][k].abs().max()) for k in runs[1]["maps"])
            if diff > 1e-5 * max(scale, 1.0):
                raise SystemExit(
                    f"bench_equivariance: streaming and in-memory maps differ "
                    f"by {diff} for {cfg['name']}"
                )
            for streaming in (1, 0):
                r = runs[streaming]
                held = 0
                for d in r["dims"].values():
                    n = d["rows"] or 0
                    held += 8 * (
                        d["d_in"] ** 2 + d["d_in"] * d["d_out"]
                        if streaming
                        else n * (d["d_in"] + d["d_out"])
                    )
                results.append(
                    {
                        "config": cfg["name"],
                        "mode": "streaming" if streaming else "in-memory",
                        "crops": args.crops,
                        "fit_seconds": round(r["fit_seconds"], 2),
                        "peak_rss_MiB": round(r["peak_rss_bytes"] / 2**20, 1),
                        "regression_MiB": round(held / 2**20, 1),
                        "max_abs_map_difference": diff,
                        "dims": r["dims"],
                        "errors": r["errors"],
                    }
                )
                print(
                    results[-1]["config"],
                    results[-1]["mode"],
                    results[-1]["fit_seconds"],
                    "s",
                    results[-1]["peak_rss_MiB"],
                    "MiB peak,",
                    results[-1]["regression_MiB"],
                    "MiB held by the fit",
                    flush=True,
                )
    payload = {
        "machine": machine_info(),
        "description": "equivariance map fitting over N crops (128 px) of the bundled "
        "photos, rot45, ridge 1e-3, chunks of 16, one thread; each "
        "configuration in its own process (peak RSS its own)",
        "results": results,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "equivariance.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
