"""Attribution benchmark against captum in the same process, MobileNetV2 (ImageNet weights) at
224², one thread.

1. Occlusion, window 32 / stride 16 and window 16 / stride 8, baseline black, the top-1
   target: pyinvert (incremental inference; ``--plain`` adds the batched re-run of the whole
   network) against captum's ``Occlusion``. Round 1 runs captum at every
   ``perturbations_per_eval`` of ``--ppe``; its fastest setting is then run in every later
   round, interleaved with pyinvert's (so both see the same load). Every map is checked
   against captum's (max error <= 1e-5 x max(1, max |captum|), as the tests) before any time
   is reported. Times: medians over the rounds, wall clock and CPU time of the process (on a
   shared machine the CPU time is the steadier of the two); the speedups are the medians of
   the per-round ratios. Peak memory: the process's peak resident set during the call (the
   kernel's high-water mark, reset before each call) minus the resident set before it, the
   same for every implementation in the same process; the benchmark runs with glibc's mmap
   threshold fixed at 64 KiB, so freed buffers go back to the system and every call starts
   from the same floor. ``peak_mib`` is the largest over an implementation's calls after its
   first in the process; ``peak_mib_first_call`` is the first's, which also fills
   process-wide caches that later calls reuse (oneDNN's kernels for the shapes met; what the
   call leaves resident is reported as ``resident_mib_left_by_first_call``; captum's batch-1
   kernels are already made by the benchmark's target forward before its first call).
   pyinvert keeps no state between calls: each call folds and packs its own weights, and that
   is counted.
2. Gradient methods for 1 and 10 targets per image: one call with 10 targets against 10
   single-target calls, and for the input-gradient methods the batched backward
   (``is_grads_batched``) beside the default loop of backward passes (and captum's Saliency,
   10 calls).

Usage:
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/bench_attribution.py [--quick] [--repeats 3]
"""

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_results  # noqa: E402

_MMAP = "65536"


def _status_kib(field):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def measure(call, kept=False):
    """(result, wall s, cpu s, peak extra MiB) of ``call()``; ``kept``: also the MiB still
    resident after it (what the call left behind, e.g. library caches)."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak RSS to the current RSS
        f.write("5")
    before = _status_kib("VmRSS")
    w0, c0 = time.perf_counter(), time.process_time()
    out = call()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = (_status_kib("VmHWM") - before) / 1024
    if not kept:
        return out, wall, cpu, peak
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return out, wall, cpu, peak, (_status_kib("VmRSS") - before) / 1024


class _Norm(torch.nn.Module):
    def forward(self, x):
        from pyinvert.models import normalize

        return normalize(x)


def _setup(size):
    from pyinvert.data import sample_path
    from pyinvert.models import load_model, prepare_image

    torch.set_num_threads(1)
    model = load_model("mobilenet_v2", "imagenet", download=False)
    x = prepare_image(sample_path("chelsea"), size)[None]
    return model, x


def occlusion_calls(model, x, window, stride, args):
    from captum.attr import Occlusion

    from pyinvert.attribution import attribute
    from pyinvert.models import normalize

    with torch.no_grad():
        target = int(model(normalize(x)).argmax())
    occ = Occlusion(torch.nn.Sequential(_Norm(), model).eval())

    def captum(ppe):
        return lambda: occ.attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=ppe,
        )[:, 0]

    def ours(incremental, batch):
        return lambda: attribute(
            x,
            model,
            "occlusion",
            targets=target,
            window=window,
            stride=stride,
            batch_size=batch,
            incremental=incremental,
        ).maps["occlusion"][:, 0]

    calls = {("captum", p): captum(p) for p in args.ppe}
    calls[("incremental", args.batch)] = ours(True, args.batch)
    if args.plain:
        calls[("plain", 1)] = ours(False, 1)
    return calls


def _warm_peak(rs):
    """The peak over the calls after an implementation's first in the process (its first
    also fills process-wide caches, e.g. oneDNN's kernels, that later calls reuse); the
    first call's own when it ran once."""
    return max(r["peak"] for r in (rs[1:] or rs))


def bench_occlusion(args, model, x):
    rows = []
    for window, stride in args.windows:
        calls = occlusion_calls(model, x, window, stride, args)
        runs = {k: [] for k in calls}
        ref = None
        best = None
        for rnd in range(args.repeats):
            keys = list(calls) if rnd == 0 else [best] + [k for k in calls if k[0] != "captum"]
            for key in keys:
                m, wall, cpu, peak, kept = measure(calls[key], kept=True)
                if ref is None:
                    ref = m
                err = (m - ref).abs().max().item()
                if err > 1e-5 * max(1.0, ref.abs().max().item()):
                    raise RuntimeError(f"{key} disagrees with captum: max error {err}")
                runs[key].append({"wall": wall, "cpu": cpu, "peak": peak, "kept": kept, "err": err})
                print(
                    f"  w{window}/s{stride} {key[0]:12s} batch {key[1]:3d} round {rnd}: "
                    f"{wall:.2f} s wall, {cpu:.2f} s cpu, {peak:.1f} MiB peak, "
                    f"{kept:.1f} MiB left resident",
                    flush=True,
                )
            if rnd == 0:
                best = min((k for k in calls if k[0] == "captum"), key=lambda k: runs[k][0]["cpu"])
        for (impl, batch), rs in runs.items():
            rows.append(
                {
                    "window": window,
                    "stride": stride,
                    "impl": impl,
                    "batch": batch,
                    "rounds": len(rs),
                    "seconds": statistics.median(r["wall"] for r in rs),
                    "cpu_seconds": statistics.median(r["cpu"] for r in rs),
                    "peak_mib": _warm_peak(rs),
                    "peak_mib_first_call": rs[0]["peak"],
                    "resident_mib_left_by_first_call": rs[0]["kept"],
                    "max_err_vs_captum": max(r["err"] for r in rs),
                }
            )
        cap = runs[best]
        for key in calls:
            if key[0] == "captum":
                continue
            rs = runs[key]
            n = min(len(rs), len(cap))
            rows.append(
                {
                    "window": window,
                    "stride": stride,
                    "impl": f"ratio {key[0]}",
                    "captum_best_ppe": best[1],
                    "speedup_vs_captum_best": statistics.median(
                        cap[i]["wall"] / rs[i]["wall"] for i in range(n)
                    ),
                    "speedup_cpu_vs_captum_best": statistics.median(
                        cap[i]["cpu"] / rs[i]["cpu"] for i in range(n)
                    ),
                    "memory_vs_captum_fastest": _warm_peak(rs) / _warm_peak(cap),
                    "memory_vs_captum_least": _warm_peak(rs)
                    / min(_warm_peak(runs[k]) for k in calls if k[0] == "captum"),
                    "memory_first_call_vs_captum_fastest_first_call": rs[0]["peak"]
                    / cap[0]["peak"],
                }
            )
        mine = [r for r in rows if r["window"] == window]
        print_table(
            [r for r in mine if "seconds" in r],
            [
                "window",
                "stride",
                "impl",
                "batch",
                "rounds",
                "seconds",
                "cpu_seconds",
                "peak_mib",
                "peak_mib_first_call",
            ],
        )
        print_table(
            [r for r in mine if "seconds" not in r],
            [
                "window",
                "impl",
                "captum_best_ppe",
                "speedup_vs_captum_best",
                "speedup_cpu_vs_captum_best",
                "memory_vs_captum_fastest",
            ],
        )
    return rows


GRADIENT_CASES = (
    ("saliency", {}),
    ("guided_backprop", {}),
    ("gradcam", {}),
    ("integrated_gradients", {"steps": 8}),
    ("smoothgrad", {"samples": 8}),
)


def bench_gradients(args, model, x):
    from captum.attr import Saliency

    from pyinvert.attribution import attribute, core

    sal = Saliency(torch.nn.Sequential(_Norm(), model).eval())
    ten = [list(range(10))]
    rows = []
    for method, kw in GRADIENT_CASES:
        attribute(x, model, method, targets=0, **kw)  # warm-up
        batched = method != "gradcam"
        times = {"one": [], "ten": [], "ten_batched": []}
        for _ in range(args.repeats):
            times["one"].append(measure(lambda: attribute(x, model, method, targets=0, **kw))[2])
            times["ten"].append(measure(lambda: attribute(x, model, method, targets=ten, **kw))[2])
            if batched:
                core.BATCHED_BACKWARD_ON_CPU = True
                try:
                    c = measure(lambda: attribute(x, model, method, targets=ten, **kw))[2]
                finally:
                    core.BATCHED_BACKWARD_ON_CPU = False
                times["ten_batched"].append(c)
        one, many = statistics.median(times["one"]), statistics.median(times["ten"])
        row = {
            "method": method,
            "one_target_cpu_s": one,
            "ten_targets_one_call_cpu_s": many,
            "ten_over_ten_singles": many / (10 * one),
        }
        if batched:
            b = statistics.median(times["ten_batched"])
            row["ten_targets_batched_backward_cpu_s"] = b
            row["batched_ten_over_ten_singles"] = b / (10 * one)
        rows.append(row)
        print_table(rows[-1:], list(row))
    cap = statistics.median(
        measure(lambda: [sal.attribute(x.clone(), target=t, abs=True) for t in ten[0]])[2]
        for _ in range(args.repeats)
    )
    rows.append(
        {
            "method": "captum Saliency, 10 calls",
            "ten_calls_cpu_s": cap,
            "pyinvert_one_call_speedup": cap / rows[0]["ten_targets_one_call_cpu_s"],
        }
    )
    print_table(rows[-1:], list(rows[-1]))
    return rows


def main():
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != _MMAP:  # see the module docstring
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP, MALLOC_TRIM_THRESHOLD_="0")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument(
        "--ppe",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="captum perturbations_per_eval values tried in round 1 (default: 1 8 32)",
    )
    p.add_argument(
        "--batch", type=int, default=8, help="pyinvert's occlusion batch_size (default: 8)"
    )
    p.add_argument("--plain", action="store_true", help="also time the plain batched re-run")
    p.add_argument("--quick", action="store_true", help="size 112, ppe 1 8, not saved")
    p.add_argument("--repeats", type=int, default=3, help="rounds (default: 3)")
    p.add_argument(
        "--windows",
        default="32x16,16x8",
        help="window x stride configurations (default: %(default)s)",
    )
    p.add_argument("--skip-occlusion", action="store_true")
    p.add_argument("--skip-gradients", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.size, args.ppe = 112, [1, 8]
    args.windows = [tuple(int(v) for v in c.split("x")) for c in args.windows.split(",")]
    model, x = _setup(args.size)
    occ = [] if args.skip_occlusion else bench_occlusion(args, model, x)
    grads = [] if args.skip_gradients else bench_gradients(args, model, x)
    if not args.quick:
        path = Path(__file__).resolve().parent / "results" / "attribution.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        done = set(args.windows)  # rows of configurations not rerun this time are kept
        kept = [r for r in old.get("occlusion", []) if (r["window"], r["stride"]) not in done]
        write_results(
            "attribution",
            {
                "size": args.size,
                "occlusion": kept + occ,
                "gradients": grads or old.get("gradients", []),
                "gradients_note": "measured in this run"
                if grads
                else "kept from an earlier run (not rerun by this command)",
                "peak_memory": "peak resident set during each call minus the resident set "
                "before it (VmHWM reset via /proc/self/clear_refs, malloc_trim before, glibc "
                "mmap threshold 64 KiB), the same for both libraries in one process; peak_mib: "
                "largest over the calls after the implementation's first",
                "command": "PYTHONPATH=$PWD OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            },
        )


if __name__ == "__main__":
    main()
