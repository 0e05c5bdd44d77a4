"""The human-readable summary of ``./run gpu-check`` (gpu-check.md), from its phases, the test
report and bench/bench_gpu.py's JSON files."""

import datetime
import json
import platform
import shutil
import subprocess


def _load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value, digits=3):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _nvcc_version():
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return "no nvcc on the PATH"
    try:
        return (
            subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
            .stdout.strip()
            .splitlines()[-1]
        )
    except Exception:
        return "nvcc did not answer"


def _ops_section(ops):
    lines = [
        "## Ops: fused kernels against pure PyTorch on the same GPU",
        "",
        "Forward+backward (`out.backward(g)`), 224x224 photos, float32, CUDA events, "
        "median of the repeats after warm-up. eager / compiled: `pyinvert.reference` "
        "as is and `torch.compile`d (default mode; compile time in parentheses, not in "
        "the time). vs: their time over the fused time (> 1: the fused kernel is "
        "faster). GB/s: the fewest bytes the op must move (x read, output written, its "
        "gradient read, dx written) over the fused time; of copy: that bandwidth over "
        "a device-to-device copy of the same bytes, timed the same way "
        f"(1 GiB copy: {_fmt(ops['gpu'].get('copy_GBps_1GiB'), 4)} GB/s).",
        "",
        "| op | B | fused ms | eager ms | compiled ms | vs eager | vs compiled | GB/s | "
        "copy GB/s | of copy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {(r["op"], r["B"], r["impl"]): r for r in ops["rows"]}
    keys = sorted({(r["op"], r["B"]) for r in ops["rows"]}, key=lambda k: (k[1], k[0]))
    notes = []
    for op, B in keys:
        fused = rows.get((op, B, "fused"), {})
        cells = []
        for impl in ("fused", "eager", "compiled"):
            r = rows.get((op, B, impl), {})
            if "ms" in r:
                cells.append(
                    _fmt(r["ms"]) + (f" ({r['compile_s']:.0f} s)" if "compile_s" in r else "")
                )
            else:
                cells.append("not measured" if r else "")
                if r.get("skipped"):
                    notes.append(f"- {op} B={B} {impl}: {r['skipped']}")
        lines.append(
            f"| {op} | {B} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(
                _fmt(fused.get(k))
                for k in ("vs_eager", "vs_compiled", "GBps", "copy_GBps", "bw_fraction")
            )
            + " |"
        )
    lines += [""] + notes + [""]
    verdict = []
    for op in ("prior", "hog", "dsift"):
        fused = rows.get((op, 32, "fused"), {})
        compiled = rows.get((op, 32, "compiled"), {})
        if "vs_compiled" in fused:
            word = "beats" if fused["vs_compiled"] > 1 else "does NOT beat"
            verdict.append(
                f"- {op}: the fused kernel {word} torch.compile'd pure PyTorch at "
                f"B = 32 ({fused['ms']:.3g} ms against {compiled['ms']:.3g} ms: "
                f"x{fused['vs_compiled']:.3g})"
            )
        else:
            verdict.append(
                f"- {op}: fused against torch.compile at B = 32 not measured ("
                f"{compiled.get('skipped') or fused.get('skipped') or 'missing'})"
            )
        best = max(
            (r for r in ops["rows"] if r["op"] == op and "bw_fraction" in r),
            key=lambda r: r["B"],
            default=None,
        )
        if best:
            verdict.append(
                f"  - bandwidth at B = {best['B']}: {best['GBps']:.4g} GB/s, "
                f"{100 * best['bw_fraction']:.3g}% of a copy of the same bytes"
            )
    return lines + ["Verdict:", ""] + verdict + [""]


def _inversion_section(inv):
    lines = [
        "## Inversion throughput",
        "",
        f"`pyinvert.invert`, {inv['steps']} steps, {inv['image']}, CUDA; images/s = B / "
        "wall time of the call (targets and initialisation included); vs one at a time "
        f"= images/s at B over images/s at B = 1. CNN: {inv['cnn']['layer']}, "
        f"{inv['cnn']['weights']} weights.",
        "",
        "| representation | B | images/s | ms/step | vs one at a time |",
        "|---|---|---|---|---|",
    ]
    for r in inv["rows"]:
        if "images_per_s" in r:
            lines.append(
                f"| {r['rep']} | {r['B']} | {_fmt(r['images_per_s'], 4)} | "
                f"{_fmt(r['ms_per_step'])} | {_fmt(r.get('vs_one_at_a_time'))} |"
            )
        else:
            lines.append(f"| {r['rep']} | {r['B']} | not measured: {r.get('skipped')} | | |")
    return lines + [""]


def write_summary(check, info, counts, gpu, log_dir, results_dir):
    """Writes <log_dir>/gpu-check.md (and <results_dir>/gpu-check.md); returns the log copy."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = info.get("name") if info and info.get("gpus") else None
    total = sum(p[2] for p in check.phases)
    mode = "--quick" if check.quick else "full"
    lines = [
        f"# GPU check ({mode}): {name or 'no GPU: nothing was measured on a GPU'}",
        "",
        f"{now}; {platform.node()}; {check.deadline - check.start:.0f} s budget, "
        f"{total:.0f} s used. torch {info.get('torch', '-') if info else '-'} (CUDA "
        f"{info.get('cuda') if info else '-'}), nvcc: {_nvcc_version()}. Logs: {log_dir}",
        "",
        "## Phases",
        "",
        "| phase | status | seconds | detail |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {t:.0f} | {d.replace('|', '/')} |" for n, s, t, d in check.phases]
    lines += ["", "## Tests", ""]
    if counts:
        lines.append(
            counts["line"]
            + (" (correctness in true float32: NVIDIA_TF32_OVERRIDE=0)" if gpu else "")
        )
        lines += [f"- FAILED {n}" for n in counts["failed"]]
        lines += [f"- skipped ({k}): {v}" for k, v in sorted(counts["reasons"].items())]
    else:
        lines.append("not run (see the phases)")
    lines.append("")
    ops = _load(log_dir / "ops-cuda.json") if gpu else None
    inv = _load(log_dir / "inversion-cuda.json") if gpu else None
    lines += _ops_section(ops) if ops else ["## Ops", "", "not measured (see the phases)", ""]
    lines += (
        _inversion_section(inv)
        if inv
        else ["## Inversion throughput", "", "not measured (see the phases)", ""]
    )
    skipped = [p for p in check.phases if p[1] != "ok"]
    if skipped:
        lines += ["## Not done", ""] + [f"- {n}: {s}: {d}" for n, s, _, d in skipped] + [""]
    text = "\n".join(lines)
    path = log_dir / "gpu-check.md"
    path.write_text(text)
    if results_dir is not None:
        results_dir.mkdir(exist_ok=True)
        (results_dir / "gpu-check.md").write_text(text)
    return path
