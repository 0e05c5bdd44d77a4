"""``./run gpu-check [--quick]``: build, test and benchmark the CUDA kernels in one call.

Phases, each with its own time budget (the whole call: under 8 minutes, 3 with --quick):

1. find a Python whose torch is a CUDA build: $PYINVERT_GPU_PYTHON, then ``python3`` on the PATH,
   then .venv-cuda and .venv. Nothing is downloaded when one exists (a GPU machine may have no
   network). Only where none exists *and* a GPU is present is the pinned torch installed into
   .venv-cuda (as ``./run cuda-check`` does);
2. build the extension with its CUDA kernels for the GPU present (TORCH_CUDA_ARCH_LIST from
   torch.cuda.get_device_capability(); 9.0 for a compile check without a GPU), CUDA_HOME from
   the nvcc on the PATH or /usr/local/cuda, in a scratch copy of the tree under
   build/gpu-check/ (the CPU build in pyinvert/ and .venv is not touched);
3. run every CUDA test (``pytest -k cuda``; --quick: tests/test_cuda_*.py) from that copy;
4. run bench/bench_gpu.py there and copy its bench/results/*-cuda.json back;
5. write a summary (bench/results/gpu-check.md when a GPU was measured; always in the log
   folder) and, when $OUT names a folder (the device tool's), copy the summary, the JSON
   files and the logs there.

Without a GPU every phase that needs one prints ``SKIPPED: <reason>``; what can run still
runs (the CUDA tests are collected and reported as skipped), and the exit status is 0.
Exit status 1: something that ran failed.

The MobileNetV2 ImageNet weights travel with the tree in .gpu-carry/weights/ (``./run
gpu-prepare`` puts them there); without them the tests that need them skip, and the CNN
benchmark uses random weights (the same work).
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "gpu-check"
RESULTS = ROOT / "bench" / "results"
CARRY = ROOT / ".gpu-carry"
TREE_PARTS = [
    "csrc",
    "pyinvert",
    "tests",
    "bench",
    "setup.py",
    "pyproject.toml",
    "README.md",
    "requirements.txt",
    "requirements-weights.txt",
]
PROBE = """import json, sys
try:
    import torch
except Exception as e:
    print(json.dumps({"error": f"no torch ({type(e).__name__})"})); sys.exit()
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": 0}
try:
    info["gpus"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if info["gpus"]:
        info["name"] = torch.cuda.get_device_name(0)
        info["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
except Exception as e:
    info["cuda_error"] = str(e)[:200]
for mod in ("pytest", "numpy", "cv2", "xdist"):
    try:
        __import__(mod); info[mod] = True
    except Exception:
        info[mod] = False
print(json.dumps(info))
"""


class Check:
    def __init__(self, quick, log_dir):
        self.quick, self.log_dir = quick, log_dir
        self.start = time.time()
        self.deadline = self.start + (165 if quick else 450)
        self.phases = []  # (name, status, seconds, detail)
        self.log_file = open(log_dir / "gpu-check.log", "w")

    def say(self, text):
        print(f"[gpu-check] {text}", flush=True)
        self.log_file.write(text + "\n")
        self.log_file.flush()

    def phase(self, name, status, seconds, detail):
        self.phases.append((name, status, seconds, detail))
        self.say(f"{name}: {status}{': ' + detail if detail else ''} ({seconds:.0f} s)")

    def left(self):
        return self.deadline - time.time()

    def run(self, name, cmd, timeout, cwd=ROOT, env=None):
        """Runs cmd with output to <log_dir>/<name>.log; returns (exit code or None if killed,
        seconds, the log's last lines)."""
        path = self.log_dir / f"{name}.log"
        t0 = time.time()
        with open(path, "w") as log:
            log.write(f"$ {' '.join(map(str, cmd))}\n")
            log.flush()
            proc = subprocess.Popen(
                list(map(str, cmd)),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                code = None
        tail = path.read_text(errors="replace").splitlines()[-25:]
        return code, time.time() - t0, tail


def probe(python):
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as error:  # missing interpreter, crash, no output
        return {"error": f"cannot run ({type(error).__name__})"}


def gpus_without_torch():
    """GPUs the driver reports, whatever torch says (nvidia-smi -L)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return []
    return [line for line in out.splitlines() if line.startswith("GPU")]


def find_python(check):
    candidates = [
        os.environ.get("PYINVERT_GPU_PYTHON"),
        shutil.which("python3"),
        str(ROOT / ".venv-cuda" / "bin" / "python"),
        str(ROOT / ".venv" / "bin" / "python"),
    ]
    seen, cpu_python, notes = set(), None, []
    for python in filter(None, candidates):
        if python in seen or not Path(python).exists():
            continue
        seen.add(python)
        info = probe(python)
        notes.append(
            f"{python}: "
            + (
                info.get("error")
                or f"torch {info['torch']}, CUDA {info['cuda']}, {info['gpus']} GPU(s)"
            )
        )
        if "error" in info:
            continue
        if info["cuda"]:
            return python, info, notes
        cpu_python = cpu_python or (python, info)
    return None, cpu_python, notes


def install_cuda_torch(check):
    """Where a GPU is present but no CUDA torch: the pinned one into .venv-cuda (needs a
    package registry; never on the device machine, whose python3 has one)."""
    venv = ROOT / ".venv-cuda"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    code, seconds, tail = check.run(
        "install",
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "torch==2.14.1",
            "-r",
            ROOT / "requirements.txt",
        ],
        timeout=max(check.left() - 200, 60),
    )
    check.phase(
        "install",
        "ok" if code == 0 else "FAILED",
        seconds,
        "torch==2.14.1 into .venv-cuda" if code == 0 else tail[-1] if tail else "",
    )
    return (py, probe(py)) if code == 0 else (None, None)


def cuda_home():
    nvcc = shutil.which("nvcc")
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    return "/usr/local/cuda" if Path("/usr/local/cuda/bin/nvcc").exists() else None


def make_tree():
    """A scratch copy of the sources (no compiled files), rebuilt each call."""
    tree = SCRATCH / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc", "results")
    for part in TREE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, tree / part, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, tree / part)
    (tree / "bench" / "results").mkdir(exist_ok=True)
    return tree


def build(check, python, info, tree):
    home = cuda_home()
    if home is None:
        check.phase(
            "build", "SKIPPED", 0, "no CUDA toolkit (nvcc not on the PATH, no /usr/local/cuda)"
        )
        return False
    arch = info.get("capability") or "9.0"
    # The Python's own bin first: its ninja (without one, torch builds one file at a time).
    path = os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])
    env = dict(
        os.environ,
        PYINVERT_CUDA="1",
        CUDA_HOME=home,
        TORCH_CUDA_ARCH_LIST=arch,
        MAX_JOBS=str(min(16, os.cpu_count() or 2)),
        PATH=path,
    )
    temp = SCRATCH / f"tmp-{info['torch']}-sm{arch}"
    code, seconds, tail = check.run(
        "build",
        [python, "setup.py", "-q", "build_ext", "--inplace", "--build-temp", temp],
        timeout=330,
        cwd=tree,
        env=env,
    )  # must finish, even past the call's target
    if code == 0:
        verify = (
            "import torch, pyinvert; ops = [n for n in torch._C._dispatch_get_all_op_names()"
            " if n.startswith('pyinvert::') and torch._C._dispatch_has_kernel_for_dispatch_key("
            "n, 'CPU')]; missing = [o for o in ops if not torch._C."
            "_dispatch_has_kernel_for_dispatch_key(o, 'CUDA')]; "
            "print('missing CUDA kernels:', missing) if missing else None; "
            "raise SystemExit(1 if missing else 0)"
        )
        code, _, tail2 = check.run(
            "build-verify",
            [python, "-c", verify],
            timeout=120,
            cwd=tree,
            env=dict(env, PYTHONPATH=str(tree)),
        )
        tail = tail + tail2
    status = (
        "ok" if code == 0 else ("FAILED (killed: over its budget)" if code is None else "FAILED")
    )
    check.phase(
        "build",
        status,
        seconds,
        f"sm {arch}, CUDA_HOME {home}"
        if code == 0
        else " | ".join(line for line in tail if "error" in line.lower())[-600:],
    )
    return code == 0


def test_env(tree):
    env = dict(
        os.environ,
        PYTHONPATH=str(tree),
        OMP_NUM_THREADS="2",
        # Correctness is checked in true float32: TF32 convolutions/matmuls (a torch
        # default on CUDA) round to 10 mantissa bits. The benchmarks keep the defaults.
        NVIDIA_TF32_OVERRIDE="0",
    )
    if "PYINVERT_WEIGHTS" not in env and (CARRY / "weights").is_dir():
        env["PYINVERT_WEIGHTS"] = str(CARRY / "weights")
    return env


def run_tests(check, python, info, tree):
    files = (
        [f"tests/{p.name}" for p in sorted((tree / "tests").glob("test_cuda_*.py"))]
        if check.quick
        else ["tests"]
    )
    cmd = [
        python,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "--junitxml",
        check.log_dir / "tests.xml",
        *files,
    ]
    if not check.quick:
        cmd += ["-k", "cuda and not emulated_on_host"]
    if info.get("xdist") and info.get("gpus"):
        cmd += ["-n", "8"]
    # What is left after keeping time for the benchmarks, within [floor, cap].
    floor, cap, keep = (45, 70, 50) if check.quick else (90, 150, 150)
    budget = max(floor, min(cap, check.left() - keep))
    code, seconds, tail = check.run("tests", cmd, timeout=budget, cwd=tree, env=test_env(tree))
    counts = read_junit(check.log_dir / "tests.xml")
    detail = counts.get("line", tail[-1] if tail else "")
    if code is None:
        status = f"FAILED (killed after its {budget:.0f} s budget)"
    elif not info.get("gpus"):
        status = "SKIPPED" if code == 0 else "FAILED"
        detail = f"no GPU: {detail}; reasons: " + "; ".join(sorted(counts.get("reasons", {})))
    else:
        status = "ok" if code == 0 else "FAILED"
    check.phase("tests", status, seconds, detail)
    if status.startswith("FAILED"):
        for line in tail[-15:]:
            check.say(f"  | {line}")
    return counts


def read_junit(path):
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall(".//testcase")
    failed, reasons = [], {}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        skip = case.find("skipped")
        if skip is not None:
            reason = (skip.get("message") or "").replace("\n", " ")[:160]
            reasons[reason] = reasons.get(reason, 0) + 1
    skipped = sum(reasons.values())
    passed = len(cases) - len(failed) - skipped
    return {
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "reasons": reasons,
        # Not "N passed, N failed" alone on a line: CI reads such a line as its test result.
        "line": f"CUDA tests run: {passed} ok, {len(failed)} failing, {skipped} skipped",
    }


def imports(python):
    """Whether pyinvert (its CPU build) imports from the source tree with this Python."""
    return (
        subprocess.run(
            [python, "-c", "import pyinvert"],
            cwd=ROOT,
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=120,
        ).returncode
        == 0
    )


def run_bench(check, python, info, tree, copy):
    budget = check.left() - 10
    if budget < (30 if check.quick else 60):
        check.phase("bench", "SKIPPED", 0, f"only {budget:.0f} s left of the call's budget")
        return
    cap = 40 if check.quick else 60
    cmd = [python, "bench/bench_gpu.py", "--budget", f"{budget - 5:.0f}", "--compile-cap", cap]
    if check.quick:
        cmd.append("--quick")
    env = test_env(tree)  # but with torch's default (TF32) math, as users get it
    env.pop("NVIDIA_TF32_OVERRIDE")
    if "NVIDIA_TF32_OVERRIDE" in os.environ:
        env["NVIDIA_TF32_OVERRIDE"] = os.environ["NVIDIA_TF32_OVERRIDE"]
    code, seconds, tail = check.run("bench", cmd, timeout=budget + 20, cwd=tree, env=env)
    copied = []
    for path in sorted((tree / "bench" / "results").glob("*-cuda.json")) if copy else []:
        if info.get("gpus"):
            RESULTS.mkdir(exist_ok=True)
            shutil.copy2(path, RESULTS / path.name)
        shutil.copy2(path, check.log_dir / path.name)
        copied.append(path.name)
    status = (
        "ok" if code == 0 else ("FAILED (killed: over its budget)" if code is None else "FAILED")
    )
    if code == 0 and not info.get("gpus"):
        status = "SKIPPED"
    check.phase("bench", status, seconds, ", ".join(copied) or (tail[-1] if tail else ""))
    if status.startswith("FAILED"):
        for line in tail[-15:]:
            check.say(f"  | {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 3 minutes: the new CUDA test files only, B = 32 only",
    )
    args = parser.parse_args()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = SCRATCH / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    check = Check(args.quick, log_dir)
    check.say(f"logs in {log_dir}")
    t0 = time.time()
    python, info, notes = find_python(check)
    for note in notes:
        check.say(f"  python candidate {note}")
    smi = gpus_without_torch()
    if python is None and smi and os.environ.get("PYINVERT_GPU_NO_INSTALL") != "1":
        cpu = info
        python, info = install_cuda_torch(check)
        if python is None:
            python, info = cpu if cpu else (None, {})
    elif python is None:
        python, info = info if info else (None, {})
    if info.get("cuda"):
        check.phase(
            "find torch",
            "ok",
            time.time() - t0,
            f"{python}: torch {info['torch']}, CUDA {info['cuda']}, {info['gpus']} GPU(s)"
            + (f", {info['name']} (sm {info['capability']})" if info.get("gpus") else ""),
        )
    else:
        check.phase(
            "find torch",
            "SKIPPED",
            time.time() - t0,
            "no CUDA build of torch among the candidates above"
            + (
                ""
                if smi
                else "; no GPU either (nvidia-smi lists none), so nothing is "
                "installed (./run cuda-check installs torch==2.14.1 into .venv-cuda "
                "for a compile check)"
            ),
        )
        check.phase("build", "SKIPPED", 0, "needs a CUDA build of torch")
    built, tree = False, ROOT
    if info.get("cuda"):
        tree = make_tree()
        built = build(check, python, info, tree)
    has_gpu = bool(info.get("gpus"))
    gpu = has_gpu and built
    if not has_gpu:
        check.say(
            "SKIPPED: no GPU visible to torch"
            + (f" (nvidia-smi: {smi})" if smi else "")
            + ": the CUDA tests and benchmarks cannot run here; what runs without one "
            "runs below"
        )
    counts = {}
    runnable = python and info.get("pytest") and (built or (not has_gpu and imports(python)))
    if runnable:
        # Without a GPU the tests still run (from the source tree and its CPU build): they are
        # collected and report their skip reason.
        counts = run_tests(check, python, info, tree)
    else:
        check.phase(
            "tests",
            "SKIPPED",
            0,
            "the build failed"
            if has_gpu
            else "no Python with torch, pytest and an importable pyinvert (./run build)",
        )
    if runnable and (gpu or not has_gpu):
        run_bench(check, python, info, tree, copy=built)
    else:
        check.phase(
            "bench",
            "SKIPPED",
            0,
            "the build failed"
            if has_gpu
            else "no Python with torch and an importable pyinvert (./run build)",
        )
    from summary import write_summary  # tools/summary.py

    summary = write_summary(check, info, counts, gpu, log_dir, RESULTS if gpu else None)
    check.say(f"summary: {summary}")
    out = os.environ.get("OUT")
    if out and Path(out).is_dir():
        names = [
            "gpu-check.md",
            "ops-cuda.json",
            "inversion-cuda.json",
            "gpu-check.log",
            "build.log",
            "tests.log",
            "bench.log",
        ]
        for name in names:
            if (log_dir / name).exists():
                shutil.copy2(log_dir / name, Path(out) / name)
        check.say(f"copied the summary, results and logs to $OUT ({out})")
    print(summary.read_text())
    failed = [p for p in check.phases if p[1].startswith("FAILED")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
