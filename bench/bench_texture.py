"""Texture synthesis and style transfer on MobileNetV2: seconds per step against a pure-PyTorch
implementation of the same recipe, the engine's overhead over the network's forward+backward,
and a 4-weight style sweep batched versus four runs.

* reference: the PyTorch tutorial's structure (loss modules attached to the network's layers,
  here as forward hooks since MobileNetV2 is not a plain Sequential; the corrected layers:
  our post-ReLU6 defaults, average over positions, 1/(4 N^2) weighting) driven by
  ``torch.optim.LBFGS`` (strong Wolfe, history 10) on one image. Checked first: its loss at
  a random image equals :class:`pyinvert.objectives.Gram`'s.
* seconds per step: CPU time / L-BFGS iterations, and CPU time / closure evaluations
  (the line search may evaluate more than once per iteration: the fair unit); the medians of
  --pairs runs of each, interleaved with each other (the machine's speed drifts).
* engine overhead: pyinvert.texture's seconds per evaluation over the bare evaluation it
  makes (the network's forward to the last layer with hooks, the same Gram objective, one
  backward; the mean of 10 calls) in percent: what the engine adds (the per-row L-BFGS
  arithmetic, histories, per-step Python, setup). Paired ratios: each engine run against the
  bare calls timed next to it, in alternating order, the median of --pairs pairs (the machine
  is shared); at --steps and at --long-steps (the steady state a default-length run sees).
  And inside the same runs (:class:`NetworkSpans`): the engine's seconds over the network's
  own seconds in them, free of the drift between runs, and the same for the bare calls (the
  spans' gap: the Python around the network that any loop of evaluations pays); the engine's
  figure net of that gap is what it adds to a bare loop. The bare calls are timed with the
  engine runs' hooks attached, so that both pay for them. Last, what the L-BFGS's passes over
  its buffers do to the network's own speed (which the in-run figures cannot see): a bare
  evaluation right after an ask/tell of the engine's size against the one after it.
  ``overhead_percent`` in the JSON is the in-run figure net of the gap (at --long-steps)
  times that (the paired figures are ``overhead_percent_paired*``).
* sweep: style_transfer with style_weight = Tensor[4] (one batch of 4 rows) versus four
  calls with one weight each (the fastest of --repeats interleaved pairs), with each
  weight's Gram and content errors, and the style-only limit (content_weight = 0): what a
  very large style weight tends to at this iteration budget.

    python bench/bench_texture.py [--sizes 96,224] [--steps 40] [--threads 1] [--repeats 3]
        [--long-steps 100] [--pairs 5]
"""

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table, write_results  # noqa: E402
from texture_reference import TutorialTexture, reference_run  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import io, models  # noqa: E402
from pyinvert.cli.common import fit  # noqa: E402
from pyinvert.data import sample_path  # noqa: E402
from pyinvert.objectives import Gram  # noqa: E402
from pyinvert.optim import engine as _engine  # noqa: E402
from pyinvert.optim.heap import keep_freed_memory  # noqa: E402
from pyinvert.optim.lbfgs import LBFGS  # noqa: E402
from pyinvert.tasks.texture import MOBILENET_TEXTURE_LAYERS, LayerMaps, make_cnn  # noqa: E402


#: Every time here is the CPU time of this process (one thread), not wall time: the machine is
#: shared, and wall time counts the other users' load (it varied 3x within minutes). The
#: engine's own timer (Result.seconds) is pointed at the same clock.
clock = time.process_time
_engine.time = types.SimpleNamespace(perf_counter=clock)


def median_time(fn, *, warmup=3, repeats=15):
    """Median CPU seconds of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


class NetworkSpans:
    """CPU seconds the network spends in each evaluation with gradients: from the forward's
    start (a pre-hook on the first module) to the gradient of that module's input (a hook on
    it: the end of the backward, but for the input normalization's). Summed over a run, the
    engine's seconds less these are what the engine adds, measured inside the same run (the
    machine's load drifts between runs: the paired ratios against bare evaluations spread by
    +-10% here)."""

    def __init__(self, first: torch.nn.Module):
        self.total, self.count = 0.0, 0
        self.handle = first.register_forward_pre_hook(self._start)

    def _start(self, module, inputs):
        x = inputs[0]
        if not (torch.is_grad_enabled() and x.requires_grad):
            return
        t0 = clock()

        def end(grad):
            self.total += clock() - t0
            self.count += 1

        x.register_hook(end)

    def close(self):
        self.handle.remove()


def photo(name, size):
    t = io.load_image(sample_path(name)).float()
    return fit(t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3], size)[None]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="96,224", help="image sizes (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved sweep repeats")
    ap.add_argument("--long-steps", type=int, default=100, help="steps of the steady-state run")
    ap.add_argument("--pairs", type=int, default=5, help="engine/bare pairs per overhead figure")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the allocator setting the engine makes at its first run (pyinvert.optim.heap), made first
    # so that the reference, the bare evaluations and the engine all run under it
    keep_freed_memory()
    net = models.load_model("mobilenet_v2", "imagenet", download=False)
    sizes = [int(v) for v in args.sizes.split(",")]
    runs = [measure(net, S, args.steps, args.repeats, args.long_steps, args.pairs) for S in sizes]
    write_results(
        "texture",
        {
            "command": f"python bench/bench_texture.py --sizes {args.sizes} --steps {args.steps} "
            f"--threads {args.threads} --repeats {args.repeats} --long-steps {args.long_steps} "
            f"--pairs {args.pairs}",
            "clock": "time.process_time: CPU seconds of this process (the machine is shared)",
            "steps": args.steps,
            "layers": list(MOBILENET_TEXTURE_LAYERS),
            "runs": runs,
        },
    )


def quadratic_step(D: int):
    """One ask/tell of a per-row L-BFGS (history 10, one row of D values) on a quadratic, as a
    function: the L-BFGS arithmetic the engine adds to each evaluation."""
    A = torch.rand(D, generator=torch.Generator().manual_seed(0)) + 0.5
    opt = LBFGS(torch.randn(1, D), max_iter=10**6, max_eval=10**6, history_size=10,
                tolerance_grad=0.0, tolerance_change=0.0)  # fmt: skip

    def step():
        z = opt.ask()
        opt.tell((A * z * z).sum(1), 2 * A * z)

    return step


def lbfgs_tell_seconds(D: int) -> float:
    """Seconds of one :func:`quadratic_step` (warm, its history full)."""
    return median_time(quadratic_step(D), warmup=20, repeats=40)


def network_after_tell(S: int, bare, first, pairs: int = 40) -> float:
    """What the L-BFGS's passes over its buffers do to the next network evaluation (the in-run
    figures cannot see it): the network's seconds in a bare evaluation that follows an ask/tell
    of the engine's size (history 10, full) over those in the bare evaluation after it, the
    median of ``pairs`` consecutive pairs (so the machine's drift cancels), minus 1."""
    tell = quadratic_step(3 * S * S)
    for _ in range(15):  # a full history
        tell()
    spans, ratios = NetworkSpans(first), []
    for _ in range(pairs):
        tell()
        s0 = spans.total
        bare()
        s1 = spans.total
        bare()
        ratios.append((s1 - s0) / (spans.total - s1))
    spans.close()
    return statistics.median(ratios) - 1.0


def measure(net, S, steps, repeats, long_steps=100, pairs=5):
    """One size's numbers (printed, and returned for the JSON)."""
    source = photo("chelsea", S)

    # agreement: the tutorial's loss equals the Gram objective at a random image
    rep = make_cnn(net, MOBILENET_TEXTURE_LAYERS, None, None, "mobilenet_v2")
    x = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        src_maps = rep.layer_outputs(rep.preprocess(source))
        shapes = {k: tuple(v.shape[1:]) for k, v in src_maps.items()}
        ours = Gram.from_maps(src_maps, shapes=shapes)(rep(rep.preprocess(x)), None)
        ref = TutorialTexture(net, list(MOBILENET_TEXTURE_LAYERS), source)
        theirs = ref.loss(x)
    ref.close()
    assert torch.allclose(ours, theirs.reshape(1), rtol=1e-4), (ours, theirs)

    # pure PyTorch (tutorial) vs pyinvert.texture, one image, the same steps
    ref_runs = []  # the reference's runs, one in each pair below (the machine drifts)
    calls = [0]

    def count(module, inputs, output):  # the engine's evaluations are the calls with grad
        calls[0] += bool(output.requires_grad)

    # engine overhead: its seconds per evaluation over the bare evaluation it makes, as paired
    # ratios (each engine run against the bare evaluations timed next to it, in alternating
    # order), the median of the pairs, at the bench's steps and at a longer run (the steady
    # state of a default-length texture)
    with torch.no_grad():
        term = Gram.from_maps(src_maps, shapes=shapes)
    x0 = rep.preprocess(torch.rand(1, 3, S, S)).requires_grad_(True)
    maps = LayerMaps(rep)

    def bare():
        loss, _ = term.evaluate(maps(x0), x0)  # the network to the last layer, hooks, Gram
        torch.autograd.grad(loss.sum(), x0)

    last = dict(net.named_modules())[MOBILENET_TEXTURE_LAYERS[-1]]

    first = dict(net.named_modules())["features.0"]
    inside = []  # (engine seconds, the network's seconds in them) per run

    def engine_run(n_steps):
        calls[0] = 0
        handle = last.register_forward_hook(count)
        spans = NetworkSpans(first)
        res = pyinvert.texture(source, net, steps=n_steps, progress=False, seeds=[0])
        handle.remove()
        spans.close()
        assert spans.count == calls[0], (spans.count, calls[0])
        inside.append((n_steps, res.seconds, spans.total))
        return res, calls[0]

    bare_inside = []  # (bare seconds, the network's seconds in them) per block of calls

    def bare_mean(calls=10, warmup=2):  # with the engine runs' hooks, so both pay for them
        for _ in range(warmup):
            bare()
        handle = last.register_forward_hook(count)
        spans = NetworkSpans(first)
        t0 = clock()
        for _ in range(calls):
            bare()
        total = clock() - t0
        handle.remove()
        spans.close()
        bare_inside.append((total, spans.total))
        return total / calls

    def paired(n_steps, with_reference=False):
        ratios, engine_s, bare_means = [], [], []
        for k in range(pairs):
            if with_reference:
                ref_runs.append(reference_run(net, source, n_steps, 0))
            if k % 2:
                res, n = engine_run(n_steps)
            mean = bare_mean()
            if not k % 2:
                res, n = engine_run(n_steps)
            ratios.append(res.seconds / n / mean)
            engine_s.append(res.seconds / n)
            bare_means.append(mean)
        return res, n, ratios, engine_s, bare_means

    res, evals, ratios, engine_s, bare_means = paired(steps, with_reference=True)
    ref_s = statistics.median(r[0] for r in ref_runs)
    ref_it, ref_ev, ref_loss = ref_runs[-1][1:]  # (the same in every run)
    per_eval = statistics.median(engine_s)
    ours_s = per_eval * evals
    bare_s = statistics.median(bare_means)
    overhead = statistics.median(ratios) - 1.0
    _, long_evals, long_ratios, _, _ = paired(long_steps)
    overhead_long = statistics.median(long_ratios) - 1.0

    def inside_overhead(n_steps):  # the engine's seconds over the network's, summed over runs
        runs_ = [(e, n) for k, e, n in inside if k == n_steps]
        return sum(e for e, _ in runs_) / sum(n for _, n in runs_) - 1.0

    inside_short, inside_long = inside_overhead(steps), inside_overhead(long_steps)
    # the spans' own gap on the bare evaluations (what the in-run figure shows for no engine),
    # and the engine's in-run figure net of it: what it adds to a bare loop of evaluations
    gap = sum(t for t, _ in bare_inside) / sum(n for _, n in bare_inside) - 1.0
    net_short, net_long = (1 + inside_short) / (1 + gap) - 1, (1 + inside_long) / (1 + gap) - 1

    slowdown = network_after_tell(S, bare, first)
    adds = (1 + net_long) * (1 + slowdown) - 1
    ours_it = int(torch.isfinite(res.loss_history).sum())
    ours_loss = float(pyinvert.io.last_finite(res.loss_history)[0])
    tell_s = lbfgs_tell_seconds(3 * S * S)

    # sweep: 4 style weights batched vs 4 runs (interleaved, the fastest of each)
    content, style = photo("chelsea", S), photo("coffee", S)
    ws = [1e1, 1e2, 1e3, 1e4]
    batched_s, four_s = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = clock()
        sweep = pyinvert.style_transfer(
            content, style, net, style_weight=torch.tensor(ws), steps=steps, progress=False
        )
        batched_s = min(batched_s, clock() - t0)
        t0 = clock()
        singles = [
            pyinvert.style_transfer(
                content, style, net, style_weight=w, steps=steps, progress=False
            )
            for w in ws
        ]
        four_s = min(four_s, clock() - t0)
    limit = pyinvert.style_transfer(
        content, style, net, content_weight=0.0, style_weight=1.0, steps=steps, progress=False
    )

    rows = [
        {
            "what": "reference (torch.optim.LBFGS, hooks)",
            "seconds": ref_s,
            "iterations": ref_it,
            "evaluations": ref_ev,
            "s_per_iter": ref_s / max(ref_it, 1),
            "s_per_eval": ref_s / max(ref_ev, 1),
            "final_loss": ref_loss,
        },
        {
            "what": "pyinvert.texture (per-row L-BFGS)",
            "seconds": ours_s,
            "iterations": ours_it,
            "evaluations": evals,
            "s_per_iter": ours_s / max(ours_it, 1),
            "s_per_eval": per_eval,
            "final_loss": ours_loss,
        },
    ]
    print_table(
        rows,
        ["what", "seconds", "iterations", "evaluations", "s_per_iter", "s_per_eval", "final_loss"],
    )
    print(
        f"bare evaluation {bare_s * 1e3:.2f} ms, engine {per_eval * 1e3:.2f} ms per "
        f"evaluation: overhead {100 * overhead:.1f}% at {steps} steps (median of {pairs} "
        f"pairs, {100 * (min(ratios) - 1):.1f} to {100 * (max(ratios) - 1):.1f}%), "
        f"{100 * overhead_long:.1f}% at {long_steps} steps; the L-BFGS ask/tell alone (warm) "
        f"{tell_s * 1e3:.2f} ms = {100 * tell_s / bare_s:.1f}%"
    )
    print(
        f"inside the runs: the engine's seconds are {100 * inside_short:.1f}% ({steps} steps) "
        f"and {100 * inside_long:.1f}% ({long_steps} steps) over the network's own, the bare "
        f"evaluations' {100 * gap:.1f}%: the engine adds {100 * net_short:.1f}% and "
        f"{100 * net_long:.1f}% to a bare loop of evaluations"
    )
    print(
        f"the network's time right after an L-BFGS tell against right after another "
        f"evaluation: {100 * slowdown:+.1f}%; so the engine adds {100 * adds:.1f}% to the "
        f"network's forward+backward ({long_steps} steps)"
    )
    print(
        f"4-weight sweep: batched {batched_s:.2f} s, four runs {four_s:.2f} s "
        f"({four_s / batched_s:.2f}x)"
    )
    sweep_rows = [
        {
            "style_weight": w,
            "mean_gram_error": float(sweep.gram_error[i].mean()),
            "content_error": float(sweep.content_error[i]),
            "alone_mean_gram_error": float(singles[i].gram_error[0].mean()),
            "alone_content_error": float(singles[i].content_error[0]),
        }
        for i, w in enumerate(ws)
    ]
    print_table(sweep_rows, list(sweep_rows[0]))
    print(
        f"style-only limit (content_weight 0): Gram error "
        f"{float(limit.gram_error[0].mean()):.5f}, content error "
        f"{float(limit.content_error[0]):.4f}"
    )
    print(f"-- {S} px above --")
    return {
        "size": S,
        "agreement": {"gram_objective": float(ours), "tutorial": float(theirs)},
        "texture": rows,
        "speed_ratio_per_eval_reference_over_ours": rows[0]["s_per_eval"] / per_eval,
        "speed_ratio_per_iter_reference_over_ours": rows[0]["s_per_iter"] / rows[1]["s_per_iter"],
        "engine": {
            "bare_evaluation_mean_s": bare_s,
            "engine_s_per_evaluation": per_eval,
            "overhead_percent_paired": 100 * overhead,
            "overhead_percent_pairs": [100 * (r - 1) for r in ratios],
            "long_run_steps": long_steps,
            "long_run_evaluations": long_evals,
            "overhead_percent_paired_long_run": 100 * overhead_long,
            "overhead_percent_long_run_pairs": [100 * (r - 1) for r in long_ratios],
            "overhead_percent_inside_runs": 100 * inside_short,
            "overhead_percent_inside_long_runs": 100 * inside_long,
            "spans_gap_percent_on_bare_evaluations": 100 * gap,
            "overhead_percent_inside_runs_net_of_gap": 100 * net_short,
            "overhead_percent_inside_long_runs_net_of_gap": 100 * net_long,
            "network_slowdown_percent_after_tell": 100 * slowdown,
            "overhead_percent": 100 * adds,
            "lbfgs_tell_s": tell_s,
            "lbfgs_tell_percent": 100 * tell_s / bare_s,
        },
        "sweep": {
            "batched_s": batched_s,
            "four_runs_s": four_s,
            "speedup": four_s / batched_s,
            "rows": sweep_rows,
            "style_only_limit": {
                "mean_gram_error": float(limit.gram_error[0].mean()),
                "content_error": float(limit.content_error[0]),
            },
        },
    }


if __name__ == "__main__":
    main()
