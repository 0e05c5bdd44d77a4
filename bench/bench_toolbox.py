"""The toolbox's throughput: gallery encoding (images/s, cold and from the code cache) and
fooling (PGD steps/s) against torchattacks' PGD on the same model, epsilon and steps.

Before timing, the neighbours of the encoded gallery are checked against brute force
(``torch.cdist``), and the two PGDs' results compared (success rates and the largest pixel
difference are reported; their float64 equality is tests/test_toolbox_fool.py's). Times are
the fastest of interleaved runs (the shared machine's load bursts slow all alike).

    OMP_NUM_THREADS=2 python bench/bench_toolbox.py [--size 128] [--gallery 64] [--batch 8]
                                                   [--steps 10] [--save]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyinvert  # noqa: E402
import torchattacks  # noqa: E402 (the benchmark's oracle)
from bench.common import print_table, write_results  # noqa: E402
from pyinvert.data import sample_path  # noqa: E402
from pyinvert.models import load_model, prepare_image  # noqa: E402
from pyinvert.toolbox.codes import Encoder  # noqa: E402
from pyinvert.toolbox.common import Source  # noqa: E402
from pyinvert.toolbox.fooling import Normalized  # noqa: E402

SAMPLES = ["camera", "chelsea", "coffee", "rocket", "astronaut"]


def photos(n, size):
    """n crops of the bundled photos (shifted, so that no two are equal)."""
    base = [prepare_image(sample_path(s), size + 16) for s in SAMPLES]
    out = []
    for i in range(n):
        dy, dx = (i // 5) % 16, (3 * i) % 16
        out.append(base[i % 5][:, dy : dy + size, dx : dx + size])
    return torch.stack(out)


def interleaved_min(fns, rounds=5):
    """The fastest of ``rounds`` runs of each function, the functions taking turns (on a shared
    machine, a load burst then slows all of them alike)."""
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()  # warm-up
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def bench_encoding(model, size, n):
    rep = pyinvert.CNN(model, "features.18")
    gallery = photos(n, size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # correctness first: neighbours of the gallery in itself = brute force
        r = pyinvert.neighbors(gallery[:4], gallery, rep, k=3, size=None, chunk=7)
        with torch.no_grad():
            codes = torch.nn.functional.normalize(rep(rep.preprocess(gallery)).flatten(1), dim=1)
        brute = torch.cdist(codes[:4].double(), codes.double()).argsort(1)[:, :3]
        assert torch.equal(r.indices, brute), (r.indices, brute)
        for batch in (8, 32):
            src = Source(gallery, None, "bench")
            enc = Encoder(rep, "feature", True, cache_dir=tmp)
            enc.encode_source(src, batch)
            cold, cached = interleaved_min(
                [
                    lambda src=src, batch=batch: Encoder(rep, "feature", True).encode_source(
                        src, batch
                    ),
                    lambda enc=enc, src=src, batch=batch: enc.encode_source(src, batch),
                ],
                3,
            )
            rows.append(
                {
                    "what": f"encode features.18 {size}px",
                    "batch": batch,
                    "images_per_s": n / cold,
                    "cached_images_per_s": n / cached,
                }
            )
    return rows


def bench_fooling(model, size, batch, steps):
    x = photos(batch, size)
    # goldfish, strawberry, tabby, analog clock, digital clock, then more ImageNet classes
    t = torch.tensor([1, 949, 281, 409, 530, 2, 3, 4] * (batch // 8 + 1))[:batch]
    eps, alpha = 8 / 255, 2.5 * 8 / 255 / steps
    net = Normalized(model).eval()
    attack = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)
    attack.set_mode_targeted_by_label(quiet=True)
    ours = pyinvert.fool(x, model, t, eps=eps, steps=steps, early_stop=False)
    adv = attack(x, t)
    with torch.no_grad():
        theirs_hit = net(adv).argmax(1) == t
    agree = {
        "ours_success": float(ours.success.float().mean()),
        "oracle_success": float(theirs_hit.float().mean()),
        "max_abs_difference": float((ours.images - adv).abs().max()),
    }
    t_ours, t_early, t_theirs = interleaved_min(
        [
            lambda: pyinvert.fool(x, model, t, eps=eps, steps=steps, early_stop=False),
            lambda: pyinvert.fool(x, model, t, eps=eps, steps=steps),
            lambda: attack(x, t),
        ]
    )
    early = pyinvert.fool(x, model, t, eps=eps, steps=steps)
    return [
        {
            "what": f"fool linf {size}px B={batch}",
            "steps": steps,
            "ours_steps_per_s": steps / t_ours,
            "oracle_steps_per_s": steps / t_theirs,
            "speedup": t_theirs / t_ours,
            "early_stop_seconds": t_early,
            "early_stop_mean_iterations": float(early.iterations.float().mean()),
            "early_stop_success": float(early.success.float().mean()),
            **agree,
        }
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--gallery", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--save", action="store_true", help="write bench/results/toolbox.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = load_model("mobilenet_v2", weights="imagenet")
    start = time.perf_counter()
    enc = bench_encoding(model, args.size, args.gallery)
    print_table(enc, ["what", "batch", "images_per_s", "cached_images_per_s"])
    fool = bench_fooling(model, args.size, args.batch, args.steps)
    print_table(
        fool,
        [
            "what",
            "steps",
            "ours_steps_per_s",
            "oracle_steps_per_s",
            "speedup",
            "ours_success",
            "oracle_success",
            "max_abs_difference",
            "early_stop_mean_iterations",
            "early_stop_success",
        ],
    )
    payload = {
        "args": vars(args),
        "encoding": enc,
        "fooling": fool,
        "seconds": time.perf_counter() - start,
    }
    if args.save:
        write_results("toolbox", payload)
    return payload


if __name__ == "__main__":
    main()
