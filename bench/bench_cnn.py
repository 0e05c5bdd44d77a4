"""Images per second of CNN layer inversion, and the engine's overhead over the bare network.

For each batch size B (the bundled photos, 224 x 224, tiled to B images) and each recipe
(IJCV 2016 and CVPR 2015, CNN variants), :func:`pyinvert.invert` runs ``--steps`` iterations
of ``cnn:MODEL:LAYER`` (default MobileNetV2 ``features.6``), seeded. Two numbers:

* images/s: B / (wall time of the whole ``invert`` call, targets and initialization
  included), the fastest of ``--repeats`` runs;
* overhead: in a second run of the same inversion, a callback runs the *bare* network after
  every iteration: the network alone (``model`` cut after the layer, on the normalized crop
  the iteration saw, then ``torch.autograd.grad`` to that input with a fixed gradient of the
  code's shape), timed on its own. The iteration times (callback to callback, the bare pass
  excluded) and the bare times are thus interleaved one to one; the minimum of each over all
  iterations and repeats is taken (the machine is shared: another process's load slows the
  2-thread runs a lot, and the minimum is the least disturbed), and
  ``overhead = (iteration - bare) / bare`` (also the median over iterations of the same
  ratio for each iteration and the bare pass right after it): everything an iteration does besides the network
  (jitter crop, normalization, hooks, objective, image prior, update rule, projection,
  NaN checks, histories).

  On a shared machine the difference of two noisy times is itself noisy, so the engine's cost
  is also measured directly: the same inversion with the network replaced by a near-free
  stand-in of the same code shape (``engine_only_ms``, min over iterations), reported as
  ``overhead_direct = engine_only / bare``.

Before timing, the cut network is checked to give the representation's code (same values),
so the bare pass computes what the inversion's forward computes.

    python bench/bench_cnn.py [--steps 10] [--batches 1,8,32] [--recipes ijcv2016,cvpr2015]
                              [--layer features.6] [--repeats 2] [--weights imagenet|none]
                              [--threads N] [--hog-batches 1,16] [--hog-steps 10]

It also times HOG inversion (CVPR 2015 recipe) at 224 x 224, ms per image-step at B = 1 and
B = 16 (the batch job's batched-vs-one-at-a-time ratio depends on it).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_results  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import data  # noqa: E402
from pyinvert.representations.cnn import cnn_from_spec  # noqa: E402
from pyinvert.tasks.inversion import as_image_batch  # noqa: E402
from pyinvert.optim.jitter import center_crop  # noqa: E402


def photos(B, size):
    base = as_image_batch([str(p) for p in data.sample_paths()])
    if base.shape[1] == 1:
        base = base.expand(-1, 3, -1, -1)
    if size != base.shape[-1]:
        base = torch.nn.functional.interpolate(base, size=(size, size), mode="area")
    reps = (B + base.shape[0] - 1) // base.shape[0]
    return base.repeat(reps, 1, 1, 1)[:B].contiguous()


def cut_network(rep, size):
    """The network up to rep's (single) layer as a plain callable, without hooks: for a layer
    ``"a.k"`` with ``model.a`` an nn.Sequential, ``model.a[:k + 1]``; checked against the
    representation's code. Falls back to the representation's own hooked forward."""
    layer = rep.layers[0]
    parts = layer.split(".")
    probe = torch.randn(2, 3, size, size) * 60
    with torch.no_grad():
        want = rep(probe)
    if len(rep.layers) == 1 and len(parts) == 2 and parts[1].isdigit():
        parent = getattr(rep.model, parts[0], None)
        if isinstance(parent, nn.Sequential):
            net = parent[: int(parts[1]) + 1]
            with torch.no_grad():
                got = net(rep.normalize(probe))
            if got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5):
                return net, "cut"
    print(f"bench_cnn: no plain cut of {rep.name}; the bare pass uses the hooked forward")
    return (lambda z: rep(z * torch.tensor(rep.std).view(1, 3, 1, 1) * 255.0)), "hooked"


def bare_pass(net, xn, grad_out):
    """The network's forward to the layer and the gradient to its input, alone."""
    xn = xn.detach().requires_grad_(True)
    out = net(xn)
    (g,) = torch.autograd.grad(out, xn, grad_out)
    return g


def run_plain(images, rep, recipe, steps):
    t0 = time.perf_counter()
    res = pyinvert.invert(
        images,
        representation=rep,
        recipe=recipe,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return time.perf_counter() - t0, res


def run_interleaved(images, rep, recipe, steps, net, size):
    """Per-iteration times (the bare pass excluded) and bare times, one after the other."""
    iters, bares = [], []
    state = {"t": None, "g": None}

    def callback(t, x, loss, error, active):
        now = time.perf_counter()
        if state["t"] is not None:
            iters.append(now - state["t"])
        xn = rep.normalize(center_crop(x, (size, size))).contiguous()
        if state["g"] is None:
            with torch.no_grad():
                out = net(xn)
            gen = torch.Generator().manual_seed(1)
            state["g"] = torch.randn(out.shape, generator=gen) / out[0].numel()
        t0 = time.perf_counter()
        bare_pass(net, xn, state["g"])
        bares.append(time.perf_counter() - t0)
        state["t"] = time.perf_counter()

    pyinvert.invert(
        images,
        representation=rep,
        recipe=recipe,
        steps=steps + 1,
        generator=torch.Generator().manual_seed(0),
        progress=False,
        callback=callback,
    )
    return iters, bares


def hog_rows(args):
    """HOG inversion (CVPR 2015 recipe) at 224 x 224: ms per image-step at each B of
    --hog-batches, the batches interleaved, min over iterations and repeats."""
    sizes = [int(v) for v in args.hog_batches.split(",") if v]
    got = {B: {"iter": [], "wall": []} for B in sizes}
    images = {B: photos(B, args.size) for B in sizes}
    for B in sizes:  # warm-up
        pyinvert.invert(
            images[B],
            representation="hog",
            steps=2,
            progress=False,
            generator=torch.Generator().manual_seed(0),
        )
    for _ in range(args.repeats):
        for B in sizes:
            ts = []
            t0 = time.perf_counter()
            pyinvert.invert(
                images[B],
                representation="hog",
                steps=args.hog_steps + 1,
                progress=False,
                generator=torch.Generator().manual_seed(0),
                callback=lambda *a: ts.append(time.perf_counter()),
            )
            got[B]["wall"].append(time.perf_counter() - t0)
            got[B]["iter"] += [b - a for a, b in zip(ts, ts[1:])]
    rows = []
    for B in sizes:
        it = min(got[B]["iter"])
        rows.append(
            {
                "B": B,
                "size": args.size,
                "iter_ms": 1e3 * it,
                "ms_per_image_step": 1e3 * it / B,
                "median_ms_per_image_step": 1e3 * statistics.median(got[B]["iter"]) / B,
                "wall_s": min(got[B]["wall"]),
                "steps": args.hog_steps + 1,
            }
        )
    base = rows[0]["ms_per_image_step"]
    for r in rows:
        r["vs_first"] = base / r["ms_per_image_step"]
    return rows


class _StandIn(torch.nn.Module):
    """The representation with its network replaced by a near-free stand-in of the same code
    shape (average pooling of the normalized input, channels repeated): an inversion with it
    costs what the engine does besides the network (the normalization and the stand-in's own
    small pooling included, the hooks excluded)."""

    def __init__(self, rep, size):
        super().__init__()
        self.rep = rep
        with torch.no_grad():
            self.shape = tuple(rep(torch.zeros(1, 3, size, size)).shape[1:])
        self.stride = size // self.shape[-1]
        for k in (
            "channels",
            "kind",
            "name",
            "layers",
            "min_size",
            "preprocess",
            "postprocess",
            "config",
            "layer_strides",
        ):
            if hasattr(rep, k):
                object.__setattr__(self, k, getattr(rep, k))

    def forward(self, x):
        C = self.shape[0]
        p = torch.nn.functional.avg_pool2d(self.rep.normalize(x), self.stride)
        return p.repeat(1, (C + 2) // 3, 1, 1)[:, :C]


def run_engine_only(images, standin, recipe, steps):
    """Per-iteration times of the same inversion with the stand-in network."""
    ts = []
    pyinvert.invert(
        images,
        representation=standin,
        recipe=recipe,
        steps=steps + 1,
        generator=torch.Generator().manual_seed(0),
        progress=False,
        callback=lambda *a: ts.append(time.perf_counter()),
    )
    return [b - a for a, b in zip(ts, ts[1:])]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--recipes", default="ijcv2016,cvpr2015")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--layer", default="features.6")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=2, help="runs per setting (min taken)")
    p.add_argument("--weights", default="imagenet", help="'imagenet' or 'none' (random)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 is far less disturbed by "
        "another process on a shared 2-core machine",
    )
    p.add_argument(
        "--hog-batches", default="1,16", help="batch sizes of the HOG timing ('' for none)"
    )
    p.add_argument("--hog-steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = None if args.weights.lower() == "none" else args.weights
    spec = f"cnn:{args.model}:{args.layer}"
    rep = cnn_from_spec(spec, weights=weights)
    net, bare_kind = cut_network(rep, args.size)
    standin = _StandIn(rep, args.size)
    recipes = [r for r in args.recipes.split(",") if r]

    rows = []
    for B in [int(v) for v in args.batches.split(",")]:
        images = photos(B, args.size)
        run_plain(images[:1], rep, recipes[0], 2)  # warm-up
        got = {
            r: {"wall": [], "iter": [], "bare": [], "bare_next": [], "load": [], "eng": []}
            for r in recipes
        }
        for _ in range(args.repeats):
            for r in recipes:  # interleaved: recipe after recipe, repeat after repeat
                got[r]["load"].append(os.getloadavg()[0])
                got[r]["wall"].append(run_plain(images, rep, r, args.steps)[0])
                it, bt = run_interleaved(images, rep, r, args.steps, net, args.size)
                got[r]["iter"] += it
                got[r]["bare"] += bt
                got[r]["bare_next"] += bt[1:]  # the bare pass right after each iteration
                got[r]["eng"] += run_engine_only(images, standin, r, args.steps)
        for r in recipes:
            g = got[r]
            it, bt = min(g["iter"]), min(g["bare"])
            row = {
                "B": B,
                "recipe": r,
                "steps": args.steps,
                "img_per_s": B / min(g["wall"]),
                "iter_ms": 1e3 * it,
                "bare_ms": 1e3 * bt,
                "overhead_pct": 100.0 * (it - bt) / bt,
                "overhead_paired_median_pct": 100.0
                * statistics.median((i - b) / b for i, b in zip(g["iter"], g["bare_next"])),
                "engine_only_ms": 1e3 * min(g["eng"]),
                "overhead_direct_pct": 100.0 * min(g["eng"]) / bt,
                "iter_median_ms": 1e3 * statistics.median(g["iter"]),
                "bare_median_ms": 1e3 * statistics.median(g["bare"]),
                "ms_per_image_step": 1e3 * it / B,
                "load_before": max(g["load"]),
            }
            rows.append(row)
            print_table([row], list(row))
    print()
    print_table(
        rows,
        [
            "B",
            "recipe",
            "steps",
            "img_per_s",
            "iter_ms",
            "bare_ms",
            "overhead_pct",
            "overhead_paired_median_pct",
            "engine_only_ms",
            "overhead_direct_pct",
            "ms_per_image_step",
            "load_before",
        ],
    )
    hog = hog_rows(args) if args.hog_batches else []
    if hog:
        print("\nHOG inversion (cvpr2015), ms per image-step:")
        print_table(hog, list(hog[0]))
    write_results(
        "cnn",
        {
            "description": f"CNN layer inversion ({spec}, {args.size}x{args.size}), images/s "
            f"for {args.steps} steps (wall of invert), and per-iteration overhead "
            f"over the bare network forward+backward (min over iterations)",
            "representation": spec,
            "weights": args.weights,
            "bare": bare_kind,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "rows": rows,
            "hog": {
                "description": "HOG inversion (cvpr2015 recipe), ms per image-step (min over "
                "iterations), vs_first = speed-up over the first batch size",
                "rows": hog,
            },
        },
    )


if __name__ == "__main__":
    main()
