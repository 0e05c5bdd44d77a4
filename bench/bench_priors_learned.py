"""Fused Fields-of-Experts energy+gradient vs the pure-PyTorch conv2d formulation, same run.

The shipped model's shape: 24 Student-t experts of 5x5, gray (C = 1) images, and the same with
C = 3; B in {1, 8, 32}, 224x224 float32. Each step is forward + backward (energy [B] and its
gradient with respect to x): the fused op (pyinvert.priors.foe_op.foe_energy, whose backward
reuses the gradient of the one pass) against pyinvert.reference.foe.foe_energy eagerly and
under torch.compile. All three are first checked to agree.

The machine is shared and noisy: the implementations are timed interleaved (fused, eager,
compiled, fused, ...), each round a median of a few calls, and the reported ratio is the median
of the per-round ratios (paired), along with the median times. Threads: each --threads value
in turn (torch.set_num_threads).

Usage: python bench/bench_priors_learned.py [--batches 1 8 32] [--threads 1 2] [--rounds 5]
       [--no-compile] [--quick]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from pyinvert.priors.foe_op import foe_energy  # noqa: E402
from pyinvert.reference import foe as reference  # noqa: E402

N_EXPERTS, K, SIZE = 24, 5, 224


def step_fn(fn, x, filters, alphas):
    def step():
        x.grad = None
        fn(x, filters, alphas, "student_t").sum().backward()
        return x.grad

    return step


def timed(fn, calls):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds per case")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 call (smoke run)")
    args = parser.parse_args()
    rounds, calls = (2, 1) if args.quick else (args.rounds, 3)
    torch.manual_seed(0)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for C in args.channels:
            filters = torch.randn(N_EXPERTS, C, K, K) / (K * C**0.5)
            alphas = torch.rand(N_EXPERTS) + 0.5
            for B in args.batches:
                x = torch.rand(B, C, SIZE, SIZE).requires_grad_()
                # A fresh compile per case: one function compiled for 12 shapes would pass
                # dynamo's recompile limit (8) and silently run eagerly.
                torch._dynamo.reset()
                compiled = (
                    None if args.no_compile else torch.compile(reference.foe_energy, dynamic=False)
                )
                steps = {
                    "fused": step_fn(foe_energy, x, filters, alphas),
                    "eager": step_fn(reference.foe_energy, x, filters, alphas),
                }
                if compiled is not None:
                    steps["compiled"] = step_fn(compiled, x, filters, alphas)
                grads = {name: fn().clone() for name, fn in steps.items()}  # also the warm-up
                for name, grad in grads.items():
                    err = ((grad - grads["eager"]).abs().max() / grads["eager"].abs().max()).item()
                    if err > 1e-4:
                        raise SystemExit(
                            f"bench_priors_learned: {name} disagrees with the reference "
                            f"(max rel. grad error {err:.2e}); not timing"
                        )
                for fn in steps.values():
                    fn()
                per_round = {name: [] for name in steps}
                for _ in range(rounds):
                    for name, fn in steps.items():
                        per_round[name].append(timed(fn, calls))
                row = dict(threads=threads, C=C, B=B)
                for name, times in per_round.items():
                    row[f"{name}_ms"] = 1e3 * statistics.median(times)
                for base in ("eager", "compiled"):
                    if base in per_round:
                        ratios = [b / f for b, f in zip(per_round[base], per_round["fused"])]
                        row[f"vs_{base}"] = statistics.median(ratios)
                        row[f"vs_{base}_rounds"] = [round(r, 3) for r in ratios]
                rows.append(row)
                print_table([row], [c for c in row if not c.endswith("_rounds")])
    columns = [
        "threads",
        "C",
        "B",
        "fused_ms",
        "eager_ms",
        "compiled_ms",
        "vs_eager",
        "vs_compiled",
    ]
    print()
    print_table(rows, columns)
    write_results(
        "priors-learned",
        {
            "rows": rows,
            "what": "forward+backward (energy [B] and dE/dx), student_t, float32",
            "shape": {"size": [SIZE, SIZE], "n_experts": N_EXPERTS, "k": K},
            "method": f"interleaved rounds ({rounds}) of median-of-{calls} calls; ratio = median "
            "of per-round ratios",
            "command": "python bench/bench_priors_learned.py " + " ".join(sys.argv[1:]),
        },
    )


if __name__ == "__main__":
    main()
