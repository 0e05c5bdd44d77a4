"""Fused image prior vs the pure-PyTorch reference (eager and torch.compile), same run.

For B in {1, 8, 32, 128}, 3x224x224 float32, the CVPR prior (TV beta=2 + alpha-norm alpha=6)
and the IJCV prior (TV beta=2 + isotropic alpha=6): median forward+backward time of each
implementation, the ratios, and our achieved bandwidth (bytes: read x once, write the
gradient once) against the copy bandwidth of a buffer of the same size, measured in this run.

Steady state: each implementation is warmed up (compilation, allocator, thread pool) and then
timed as the median of many calls. The fused op allocates its outputs through torch's CPU
allocator; glibc's malloc may return large freed buffers to the OS and fault them back in on
every call, which costs time regardless of the kernel. We report the numbers as a user gets
them with default settings, and state GLIBC_TUNABLES if it was set.

Usage: python bench/bench_priors.py [--batches 1 8 32 128] [--no-compile] [--quick]
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import copy_bandwidth, median_time, print_table, write_results  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import reference  # noqa: E402

PRIORS = {
    "cvpr": dict(tv_weight=1.0, beta=2.0, norm_weight=1e-3, alpha=6.0, isotropic=False),
    "ijcv": dict(tv_weight=1.0, beta=2.0, norm_weight=1e-3, alpha=6.0, isotropic=True),
}


def forward_backward(fn, x, kwargs):
    def step():
        x.grad = None
        fn(x, **kwargs).sum().backward()
        return x.grad

    return step


def check_agreement(x, kwargs, compiled):
    steps = {
        "fused": forward_backward(pyinvert.image_prior, x, kwargs),
        "eager": forward_backward(reference.image_prior, x, kwargs),
    }
    if compiled is not None:
        steps["compiled"] = forward_backward(compiled, x, kwargs)
    values = {k: (fn(), None) for k, fn in steps.items()}
    grads = {k: v[0].clone() for k, v in values.items()}
    ref = grads["eager"]
    for name, grad in grads.items():
        err = ((grad - ref).abs().max() / ref.abs().max()).item()
        if err > 1e-4:
            raise SystemExit(
                f"bench_priors: {name} disagrees with the reference "
                f"(max rel. grad error {err:.2e}); not timing"
            )
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    torch.manual_seed(0)
    timing = dict(warmup=1, repeats=3, min_seconds=0.0) if args.quick else {}

    rows = []
    for prior_name, kwargs in PRIORS.items():
        compiled = None if args.no_compile else torch.compile(reference.image_prior, dynamic=False)
        for B in args.batches:
            x = (torch.rand(B, 3, 224, 224) * 255 - 128).requires_grad_()
            steps = check_agreement(x, kwargs, compiled)
            times = {name: median_time(fn, **timing) for name, fn in steps.items()}
            nbytes = 2 * x.numel() * x.element_size()
            copy_bw = copy_bandwidth(x.numel() * x.element_size())
            row = dict(
                prior=prior_name,
                B=B,
                fused_ms=1e3 * times["fused"],
                eager_ms=1e3 * times["eager"],
                vs_eager=times["eager"] / times["fused"],
                fused_GBps=nbytes / times["fused"] / 1e9,
                copy_GBps=copy_bw / 1e9,
            )
            row["bw_fraction"] = row["fused_GBps"] / row["copy_GBps"]
            if "compiled" in times:
                row["compiled_ms"] = 1e3 * times["compiled"]
                row["vs_compiled"] = times["compiled"] / times["fused"]
            rows.append(row)
            print_table([row], list(row))
    print()
    columns = [
        "prior",
        "B",
        "fused_ms",
        "eager_ms",
        "compiled_ms",
        "vs_eager",
        "vs_compiled",
        "fused_GBps",
        "copy_GBps",
        "bw_fraction",
    ]
    print_table(rows, columns)
    write_results(
        "priors",
        {
            "rows": rows,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "shape": [3, 224, 224],
            "dtype": "float32",
            "priors": PRIORS,
        },
    )


if __name__ == "__main__":
    main()
