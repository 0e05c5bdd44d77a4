"""GPU benchmarks: the fused kernels against pure PyTorch (eager and torch.compile) on the same GPU,
and HOG / CNN inversion throughput.

Ops (the bundled 224x224 photos, cycled to fill the batch; float32): the fused image prior (TV beta=2 + alpha-norm alpha=6, on
x * 255 - 128 as an inversion sees it), HOG (cell 8, 9 orientations, UoCTTI) and dense SIFT (gray,
step 4, bin 8), forward+backward (``out.backward(g)`` with a fixed random g) at B = 1, 32, 256,
against ``pyinvert.reference`` eager and ``torch.compile``d (default mode, compiled in a
subprocess under a time cap, so that a slow compile cannot eat the run's budget). Each
implementation is checked against the eager reference (values and gradient, ||a - b|| / ||b||)
before it is timed, on uniform noise of the timed shape: photos are full of
near-ties (8-bit steps, saturated areas) within rounding of the features' kinks (VLFeat's fast
atan2 jumps at gy = 0, the 1e-8 modulus threshold, the 0.2 clamp), where two correct float32
implementations may take different sides.

Bandwidth: the fewest bytes an op's fwd+bwd must move (x read, the output written, its gradient
read, dx written; what the op saves for its backward is not counted) over its time, against a
device-to-device copy of the same number of bytes (read + write) timed the same way: the
fraction ``bw_fraction`` = copy time / fused time. Inputs rotate among up to 16 copies (as many
as make twice the L2 cache, where 16 suffice), for the op and the copy alike; at B = 1 the data
fits in L2 anyway, and launches, not bytes, set the time.

Inversion: ``pyinvert.invert`` of HOG and of ``cnn:mobilenet_v2:features.6`` (ImageNet weights if
found offline, else random: the same work) at 224x224 for B = 1 ... 256, a fixed number of steps;
images/s = B / the call's wall time (targets and initialisation included), and the speed-up of
one batched call over B calls of one image each (= images/s at B over images/s at 1).

L-BFGS: the per-row L-BFGS's row path (one lbfgs_tell launch per tell) against its tensor path,
bit for bit and per tell (bench/bench_gpu_lbfgs.py, lbfgs-cuda.json).

Times: CUDA events around each call, after warm-up; the median (and min/max) of the repeats.
Every JSON file names the GPU. Without a CUDA device this prints SKIPPED and exits 0.

Usage: python bench/bench_gpu.py [--quick] [--budget SECONDS] [--compile-cap SECONDS]
"""

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_lbfgs import bench_lbfgs  # noqa: E402
from common import RESULTS_DIR, print_table  # noqa: E402
from gpu_timing import DEVICE, copy_ceiling_GBps, cuda_time, gpu_info, l2_bytes, log, write  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import reference  # noqa: E402

PRIOR = dict(tv_weight=1.0, beta=2.0, norm_weight=1e-3, alpha=6.0)
HOG = dict(cell_size=8, num_orientations=9, variant="uoctti")
DSIFT = dict(step=4, bin_size=8)
OPS = {  # name -> (fused, reference, channels, input transform)
    "prior": (
        lambda x: pyinvert.image_prior(x, **PRIOR),
        lambda x: reference.image_prior(x, **PRIOR),
        3,
        lambda x: x * 255 - 128,
    ),
    "hog": (lambda x: pyinvert.hog(x, **HOG), lambda x: reference.hog(x, **HOG), 3, lambda x: x),
    "dsift": (
        lambda x: pyinvert.dsift(x, **DSIFT)[0],
        lambda x: reference.dsift(x, **DSIFT)[0],
        1,
        lambda x: x,
    ),
}


def photos(B, channels, size=224):
    """[B, C, size, size] float32 on the GPU: the bundled photos, cycled."""
    import cv2

    folder = Path(pyinvert.__file__).resolve().parent / "data"
    images = []
    for path in sorted(folder.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255)
    x = torch.stack([images[i % len(images)] for i in range(B)])
    if channels == 1:
        x = x.mean(1, keepdim=True)
    return x.to(DEVICE)


class Case:
    """One op at one batch size: rotating inputs, the upstream gradient, the bytes it must move."""

    def __init__(self, name, B, l2_bytes):
        self.name, self.B = name, B
        fused, ref, channels, transform = OPS[name]
        base = transform(photos(B, channels))
        self.copies = max(1, min(16, math.ceil(2 * l2_bytes / (base.numel() * 4))))
        noise = torch.rand(base.shape, generator=torch.Generator().manual_seed(B))
        self.check_x = transform(noise.to(DEVICE))
        self.inputs = [base.clone().requires_grad_() for _ in range(self.copies)]
        with torch.no_grad():
            out = fused(base)
        self.grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        self.bytes = 2 * (base.numel() + out.numel()) * 4
        self.calls = 0

    def step(self, fn):
        def run():
            x = self.inputs[self.calls % self.copies]
            self.calls += 1
            x.grad = None
            fn(x).backward(self.grad)
            return x.grad

        return run

    def value_and_grad(self, fn):
        x = self.check_x.clone().requires_grad_()
        out = fn(x)
        out.backward(self.grad)
        return out.detach(), x.grad

    def copy_time(self):
        n = self.bytes // 8  # float32 elements read (and as many written)
        srcs = [torch.rand(n, device=DEVICE) for _ in range(self.copies)]
        dst = torch.empty_like(srcs[0])
        k = iter(range(10**9))
        return cuda_time(lambda: dst.copy_(srcs[next(k) % self.copies]))[0]


def agreement(case, fn, ref_values):
    """Errors of fn against the eager reference: ||a - b|| / ||b|| (the gate: robust to the odd
    entry that two float32 roundings clamp at 0.2 on different sides) and max |a - b| / max |b|
    (reported)."""
    out, grad = case.value_and_grad(fn)
    ref_out, ref_grad = ref_values
    errors = {}
    for key, a, b in (("forward", out, ref_out), ("gradient", grad, ref_grad)):
        a, b = a.double(), b.double()
        errors[key] = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
        errors[key + "_max"] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    return errors


AGREE = {"forward": 1e-4, "gradient": 1e-3}  # float32 against the eager float32 reference


def time_impl(case, name, fn, ref_values, repeats):
    errors = agreement(case, fn, ref_values)
    row = {"op": case.name, "B": case.B, "impl": name, **{f"err_{k}": v for k, v in errors.items()}}
    if any(not errors[k] <= AGREE[k] for k in AGREE):
        row["skipped"] = f"disagrees with the reference {errors}: not timed"
        log(f"{case.name} B={case.B} {name}: SKIPPED: {row['skipped']}")
        return row
    median, lo, hi = cuda_time(case.step(fn), repeats=repeats)
    row.update(ms=1e3 * median, ms_min=1e3 * lo, ms_max=1e3 * hi)
    return row


def compiled_worker(args):
    """Subprocess: torch.compile'd reference of one op, one JSON line per batch size."""
    l2 = l2_bytes()
    compiled = torch.compile(OPS[args.op][1])
    first_compile = 0.0
    for B in args.batches:
        if first_compile and time.time() + 1.5 * first_compile > args.deadline:
            print(
                json.dumps(
                    {"op": args.op, "B": B, "impl": "compiled", "skipped": "compile cap reached"}
                ),
                flush=True,
            )
            continue
        case = Case(args.op, B, l2)
        t0 = time.perf_counter()
        case.value_and_grad(compiled)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        first_compile = first_compile or seconds
        ref_values = case.value_and_grad(OPS[args.op][1])
        row = time_impl(case, "compiled", compiled, ref_values, args.repeats)
        row["compile_s"] = seconds
        print(json.dumps(row), flush=True)


def run_compiled(op, batches, cap, repeats):
    """Rows of the compiled reference from a worker subprocess killed after `cap` seconds."""
    deadline = time.time() + cap
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        op,
        "--batches",
        *map(str, batches),
        "--deadline",
        str(deadline),
        "--repeats",
        str(repeats),
    ]
    torch.cuda.empty_cache()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=cap + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    done = {r["B"] for r in rows}
    for B in batches:
        if B not in done:
            reason = (
                f"torch.compile did not finish within the {cap:.0f} s cap"
                if proc.returncode in (None, -9)
                else f"compile worker failed (exit {proc.returncode}): {err.strip()[-300:]}"
            )
            rows.append({"op": op, "B": B, "impl": "compiled", "skipped": reason})
    return rows


def finish_rows(rows, copy_ms):
    """Adds speed-ups over each baseline and the bandwidth fraction to the fused rows."""
    by_key = {(r["op"], r["B"], r["impl"]): r for r in rows}
    for r in rows:
        if r["impl"] != "fused" or "ms" not in r:
            continue
        for base in ("eager", "compiled"):
            other = by_key.get((r["op"], r["B"], base), {})
            if "ms" in other:
                r[f"vs_{base}"] = other["ms"] / r["ms"]
        key = (r["op"], r["B"])
        if key in copy_ms:
            r["GBps"] = r["bytes"] / (r["ms"] / 1e3) / 1e9
            r["copy_GBps"] = r["bytes"] / (copy_ms[key] / 1e3) / 1e9
            r["bw_fraction"] = copy_ms[key] / r["ms"]


def bench_ops(args, info, deadline):
    """Fused and eager at B = 32, 1, 256, then the compiled reference (in that order of B, as
    long as its cap allows); the JSON file is rewritten after each step."""
    repeats = 10 if args.quick else 25
    rows, copy_ms = [], {}
    payload = {
        "gpu": info,
        "rows": rows,
        "settings": {
            "prior": PRIOR,
            "hog": HOG,
            "dsift": DSIFT,
            "compile": "default mode",
            "image": "224x224 photos, float32",
        },
    }
    info["copy_GBps_1GiB"] = copy_ceiling_GBps()

    def eager_and_fused(B):
        for op in OPS:
            if time.time() > deadline:
                rows.append({"op": op, "B": B, "impl": "fused", "skipped": "budget"})
                log(f"{op} B={B}: SKIPPED: budget")
                continue
            case = Case(op, B, l2_bytes())
            ref_values = case.value_and_grad(OPS[op][1])
            fused = time_impl(case, "fused", OPS[op][0], ref_values, repeats)
            fused.update(bytes=case.bytes, copies=case.copies)
            rows.extend([fused, time_impl(case, "eager", OPS[op][1], ref_values, repeats)])
            copy_ms[(op, B)] = 1e3 * case.copy_time()
            log(
                f"{op} B={B}: fused {fused.get('ms', float('nan')):.3f} ms, "
                f"eager {rows[-1].get('ms', float('nan')):.3f} ms"
            )
            del case
            write("ops", payload)

    for B in [32] if args.quick else [32, 1, 256]:
        eager_and_fused(B)
    compile_batches = [32] if args.quick else [32, 256, 1]
    for i, op in enumerate(OPS):
        cap = min(args.compile_cap, (deadline - time.time()) / (len(OPS) - i))
        if cap < 15:
            rows.extend(
                {"op": op, "B": B, "impl": "compiled", "skipped": "budget"} for B in compile_batches
            )
            log(f"{op}: compiled reference SKIPPED: budget")
            continue
        got = run_compiled(op, compile_batches, cap, repeats)
        rows.extend(got)
        log(
            f"{op}: compiled "
            + ", ".join(
                f"B={r['B']} "
                + (
                    f"{r['ms']:.3f} ms (compile {r['compile_s']:.0f} s)"
                    if "ms" in r
                    else "SKIPPED: " + r.get("skipped", "?")
                )
                for r in got
            )
        )
        write("ops", payload)
    finish_rows(rows, copy_ms)
    write("ops", payload)
    return payload


def inversion_speed(rep, B, steps, size=224):
    images = photos(B, 3, size).clamp(0, 1)
    kw = dict(
        representation=rep,
        steps=steps,
        device=DEVICE,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    pyinvert.invert(images, **dict(kw, steps=2))  # warm-up (cuDNN, allocator, this B's shapes)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    pyinvert.invert(images, **kw)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_inversion(args, info, deadline):
    from pyinvert import models

    try:
        model, weights = models.load_model("mobilenet_v2", "imagenet", download=False), "imagenet"
    except models.WeightsNotFoundError:
        model, weights = models.load_model("mobilenet_v2", None), "random"
    cnn = pyinvert.CNN(model.to(DEVICE), "features.6", model_name="mobilenet_v2")
    steps = 10 if args.quick else 20
    batches = [1, 32] if args.quick else [1, 4, 16, 64, 256]
    rows = []
    payload = {
        "gpu": info,
        "rows": rows,
        "steps": steps,
        "image": "224x224 photos",
        "cnn": {"layer": "mobilenet_v2 features.6", "weights": weights},
    }
    for name, rep in (("hog", "hog"), ("cnn", cnn)):
        for B in batches:
            if time.time() > deadline:
                rows.append({"rep": name, "B": B, "skipped": "budget"})
                continue
            seconds = inversion_speed(rep, B, steps)
            rows.append(
                {
                    "rep": name,
                    "B": B,
                    "seconds": seconds,
                    "images_per_s": B / seconds,
                    "ms_per_step": 1e3 * seconds / steps,
                }
            )
            log(f"{name} inversion B={B}: {B / seconds:.1f} images/s")
            write("inversion", payload)
        one = next((r for r in rows if r["rep"] == name and r["B"] == 1 and "seconds" in r), None)
        for r in rows:
            if r["rep"] == name and one and "seconds" in r:
                r["vs_one_at_a_time"] = r["images_per_s"] / one["images_per_s"]
    write("inversion", payload)
    return payload


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 32 only, fewer repeats")
    parser.add_argument("--budget", type=float, default=240, help="seconds for the whole run")
    parser.add_argument(
        "--compile-cap",
        type=float,
        default=60,
        help="seconds for compiling and timing one op's compiled reference",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        log(
            f"bench_gpu: SKIPPED: no CUDA device (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda}); nothing was measured"
        )
        return 0
    if not torch._C._dispatch_has_kernel_for_dispatch_key("pyinvert::hog", "CUDA"):
        log(
            "bench_gpu: FAILED: a CUDA device is present but pyinvert was built without its CUDA "
            "kernels (build with PYINVERT_CUDA=1: ./run gpu-check does)"
        )
        return 2
    if args.worker:
        args.op = args.worker
        compiled_worker(args)
        return 0
    start = time.time()
    info = gpu_info()
    log(f"bench_gpu on {info['name']} (sm {info['capability']}), torch {info['torch']}")
    reserve = 20 if args.quick else 50  # seconds kept for the inversion benchmarks
    ops = bench_ops(args, info, start + args.budget - reserve - 10)
    inv = bench_inversion(args, info, start + args.budget - 10)
    bench_lbfgs("cuda", deadline=start + args.budget)  # (lbfgs-cuda.json; about 5 s)
    print()
    print_table(
        [r for r in ops["rows"] if r["impl"] == "fused"],
        ["op", "B", "ms", "vs_eager", "vs_compiled", "GBps", "copy_GBps", "bw_fraction"],
    )
    print()
    print_table(inv["rows"], ["rep", "B", "images_per_s", "ms_per_step", "vs_one_at_a_time"])
    log(f"wrote {RESULTS_DIR}/ops-cuda.json, inversion-cuda.json and lbfgs-cuda.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
