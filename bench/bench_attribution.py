"""Attribution benchmark against captum in the same run, MobileNetV2 (ImageNet weights) at 224².

1. Occlusion, window 32 / stride 16 and window 16 / stride 8, baseline black, the top-1
   target: pyinvert (incremental inference, and the plain batched re-run) against captum's
   ``Occlusion`` at each ``perturbations_per_eval`` of ``--ppe`` (its fastest is reported).
   The maps are checked equal before any time is reported. Each run is a fresh subprocess, so
   its peak memory is the process's peak RSS minus its RSS before the call.
2. Gradient methods for 1 and 10 targets per image: one call with 10 targets against 10
   single-target calls (and captum's Saliency, 10 calls).

Usage:
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/bench_attribution.py [--quick]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, print_table, write_results  # noqa: E402


def _rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _setup(size):
    from pyinvert.data import sample_path
    from pyinvert.models import load_model, prepare_image

    torch.set_num_threads(1)
    model = load_model("mobilenet_v2", "imagenet", download=False)
    x = prepare_image(sample_path("chelsea"), size)[None]
    return model, x


def one_occlusion(impl, window, stride, ppe, size, out):
    """Child process: one occlusion run; writes the map and the time, peak memory."""
    from pyinvert.attribution import attribute
    from pyinvert.models import normalize

    model, x = _setup(size)
    with torch.no_grad():
        target = int(model(normalize(x)).argmax())
    if impl == "captum":
        from captum.attr import Occlusion

        wrapped = torch.nn.Sequential(_Norm(), model).eval()
        occ = Occlusion(wrapped)

        def call():
            return occ.attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, stride, stride),
                baselines=0.0,
                target=target,
                perturbations_per_eval=ppe,
            )[:, 0]
    else:

        def call():
            return attribute(
                x,
                model,
                "occlusion",
                targets=target,
                window=window,
                stride=stride,
                batch_size=ppe,
                incremental=impl == "incremental",
            ).maps["occlusion"][:, 0]

    before = _rss_kib()
    t0 = time.perf_counter()
    m = call()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    torch.save(m, out)
    print(json.dumps({"seconds": seconds, "peak_extra_mib": peak / 1024}))


class _Norm(torch.nn.Module):
    def forward(self, x):
        from pyinvert.models import normalize

        return normalize(x)


def run_child(impl, window, stride, ppe, size, tmp):
    out = tmp / f"{impl}-{window}-{stride}-{ppe}.pt"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        impl,
        str(window),
        str(stride),
        str(ppe),
        str(size),
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    return rec, torch.load(out)


def bench_occlusion(args, tmp):
    """Each case ``--repeats`` times, round-robin (the machine is shared: the fastest of the
    repeats is the least disturbed), after checking every map against captum's."""
    rows = []
    for window, stride in args.windows:
        cases = [("captum", p) for p in args.ppe] + [
            ("plain", args.plain_batch),
            ("incremental", args.batch),
        ]
        results, ref = {}, None
        for rep in range(args.repeats):
            for impl, ppe in cases:
                rec, m = run_child(impl, window, stride, ppe, args.size, tmp)
                if ref is None:
                    ref = m
                err = (m - ref).abs().max().item()
                if err > 1e-4 * max(1.0, ref.abs().max().item()):
                    raise RuntimeError(f"{impl} disagrees with captum: max error {err}")
                old = results.get((impl, ppe))
                if old is None or rec["seconds"] < old["seconds"]:
                    results[(impl, ppe)] = dict(rec, err=err)
                print(
                    f"  w{window}/s{stride} {impl:12s} batch {ppe:3d} run {rep}: "
                    f"{rec['seconds']:.2f} s, {rec['peak_extra_mib']:.1f} MiB",
                    flush=True,
                )
        for (impl, ppe), rec in results.items():
            rows.append(
                {
                    "window": window,
                    "stride": stride,
                    "impl": impl,
                    "batch": ppe,
                    "seconds": rec["seconds"],
                    "peak_mib": rec["peak_extra_mib"],
                    "max_err_vs_captum": rec["err"],
                }
            )
        captum = [r for k, r in results.items() if k[0] == "captum"]
        best = min(captum, key=lambda r: r["seconds"])
        for impl, b in (("plain", args.plain_batch), ("incremental", args.batch)):
            r = results[(impl, b)]
            rows.append(
                {
                    "window": window,
                    "stride": stride,
                    "impl": f"ratio {impl}",
                    "speedup_vs_captum_best": best["seconds"] / r["seconds"],
                    "memory_vs_captum_fastest": r["peak_extra_mib"] / best["peak_extra_mib"],
                    "memory_vs_captum_least": r["peak_extra_mib"]
                    / min(c["peak_extra_mib"] for c in captum),
                }
            )
        print_table(
            [r for r in rows if r["window"] == window and "seconds" in r],
            ["window", "stride", "impl", "batch", "seconds", "peak_mib", "max_err_vs_captum"],
        )
        print_table(
            [r for r in rows if r["window"] == window and "seconds" not in r],
            [
                "window",
                "stride",
                "impl",
                "speedup_vs_captum_best",
                "memory_vs_captum_fastest",
                "memory_vs_captum_least",
            ],
        )
    return rows


def bench_gradients(args):
    from captum.attr import Saliency

    from pyinvert.attribution import attribute

    model, x = _setup(args.size)
    wrapped = torch.nn.Sequential(_Norm(), model).eval()
    sal = Saliency(wrapped)
    rows = []
    ten = list(range(10))
    for method, kw in (
        ("saliency", {}),
        ("guided_backprop", {}),
        ("gradcam", {}),
        ("integrated_gradients", {"steps": 8}),
    ):
        one = median_time(
            lambda: attribute(x, model, method, targets=0, **kw), warmup=1, repeats=3, min_seconds=0
        )
        many = median_time(
            lambda: attribute(x, model, method, targets=[ten], **kw),
            warmup=1,
            repeats=3,
            min_seconds=0,
        )
        rows.append(
            {
                "method": method,
                "one_target_s": one,
                "ten_targets_one_call_s": many,
                "ten_over_ten_singles": many / (10 * one),
            }
        )
        print_table(rows[-1:], list(rows[-1]))
    cap = median_time(
        lambda: [sal.attribute(x.clone(), target=t, abs=True) for t in ten],
        warmup=1,
        repeats=3,
        min_seconds=0,
    )
    ours = rows[0]["ten_targets_one_call_s"]
    rows.append(
        {
            "method": "captum Saliency, 10 calls",
            "ten_calls_s": cap,
            "pyinvert_one_call_speedup": cap / ours,
        }
    )
    print_table(rows[-1:], list(rows[-1]))
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, w, s, ppe, size, out = sys.argv[2:8]
        one_occlusion(impl, int(w), int(s), int(ppe), int(size), out)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument(
        "--ppe",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="captum perturbations_per_eval values tried (default: 1 8 32)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=4,
        help="pyinvert's incremental occlusion batch_size (default: 4)",
    )
    p.add_argument(
        "--plain-batch",
        type=int,
        default=1,
        help="batch_size of the plain re-run (on this CPU 1 beats 8; default: 1)",
    )
    p.add_argument("--quick", action="store_true", help="size 112, ppe 8 16 only")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each occlusion case; the fastest counts (default: 1)",
    )
    p.add_argument(
        "--windows",
        default="32x16,16x8",
        help="window x stride configurations (default: %(default)s)",
    )
    p.add_argument("--skip-occlusion", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.size, args.ppe = 112, [8, 16]
    args.windows = [tuple(int(v) for v in c.split("x")) for c in args.windows.split(",")]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        occ = [] if args.skip_occlusion else bench_occlusion(args, Path(d))
    grads = bench_gradients(args)
    if not args.quick:
        path = Path(__file__).resolve().parent / "results" / "attribution.json"
        kept = []
        if path.is_file():  # rows of configurations not rerun this time are kept
            done = set(args.windows)
            kept = [
                r
                for r in json.loads(path.read_text()).get("occlusion", [])
                if (r["window"], r["stride"]) not in done
            ]
        write_results(
            "attribution",
            {
                "size": args.size,
                "occlusion": kept + occ,
                "gradients": grads,
                "command": " ".join(sys.argv),
            },
        )


if __name__ == "__main__":
    main()
