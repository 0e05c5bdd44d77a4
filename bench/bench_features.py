"""HOG and dense SIFT: fused ops vs the pure-PyTorch references and peers, same run.

Inputs: the bundled 224x224 photos (cycled to fill the batch), float32, RGB for HOG (cell 8,
9 orientations, UoCTTI; hard and bilinear "HOGb" orientation assignment) and their gray mean
for dense SIFT (step 4, bin 8). For B in {1, 32}: median forward and forward+backward times of
our ops and of pyinvert.reference, and the ratio reference / ours. Forward-only peers where
installed, run image by image (their APIs take one image): VLFeat through ctypes (the C code
our HOG and DSIFT equal), skimage.feature.hog, cv2.HOGDescriptor (OpenCV 4.x), and
kornia.feature.DenseSIFTDescriptor (batched). Peers other than VLFeat compute different
variants of the features: their rows are timings of comparable work, not of the same output.

Before timing, each of our ops is checked against its reference (features; gradient of a
fixed random weighting of the outputs, at the photos plus 1e-3 noise to keep pixels off kinks)
and against VLFeat; an op that disagrees is reported and not timed. Times are medians after warm-up, with torch's
default thread count; absolute times on a shared 2-core machine drift, so compare the ratios
and see the load average recorded with the results.

Usage: python bench/bench_features.py [--batches 1 32] [--quick] [--no-peers] [--threads N]
"""

import argparse
import os
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_time, print_table, write_results  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert import reference, vlfeat  # noqa: E402
from pyinvert.data import sample_paths  # noqa: E402

HOG_SETTINGS = {
    "hog": dict(cell_size=8, num_orientations=9, variant="uoctti", bilinear_orientations=False),
    "hogb": dict(cell_size=8, num_orientations=9, variant="uoctti", bilinear_orientations=True),
}
DSIFT_SETTINGS = dict(step=4, bin_size=8, flat_window=False)


def photos(batch):
    """[B, 3, 224, 224] float32 in [0, 1]: the bundled photos, cycled (gray ones replicated)."""
    images = []
    for path in sample_paths():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]  # gray -> 3 equal channels
        images.append(torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255))
    return torch.stack([images[i % len(images)] for i in range(batch)])


def timer(fn, quick):
    """Median time of fn(), with fewer repeats for slow functions."""
    first = median_time(fn, warmup=1, repeats=1, min_seconds=0)
    if first > 1.0 or quick:
        return median_time(fn, warmup=0, repeats=3 if first < 3 else 1, min_seconds=0)
    return median_time(fn, warmup=2, repeats=10, min_seconds=1.0)


def fwd(fn, x, kwargs, pick=lambda out: out):
    def run():
        with torch.no_grad():
            return pick(fn(x, **kwargs))

    return run


def fwd_bwd(fn, x, kwargs, pick=lambda out: out):
    def run():
        x.grad = None
        pick(fn(x, **kwargs)).square().sum().backward()
        return x.grad

    return run


class Disagreement(Exception):
    pass


def check(name, ours, expected, tol, what, relative=False):
    """Max abs error of ours vs expected; raises Disagreement above tol (absolute, or relative
    to max |expected| if `relative`)."""
    err = (ours - expected).abs().max().item() if ours.numel() else 0.0
    scale = expected.abs().max().item() if expected.numel() else 0.0
    limit = tol * (max(scale, 1e-30) if relative else max(1.0, scale))
    if not err <= limit:
        raise Disagreement(
            f"{name} {what} disagrees with its reference (max abs error {err:.2e}"
            f", reference scale {scale:.2e})"
        )
    return err / max(scale, 1e-30) if relative else err


def check_op(name, op, ref, x, kwargs, pick, vl_fn=None):
    """Agreement of our op with the reference (values, gradient) and with VLFeat.

    The gradient is compared for a fixed random weighting of the outputs, at the photos plus
    a little seeded noise: 8-bit photos put many pixels exactly on kinks (zero differences,
    bin boundaries), where two correct implementations may pick different one-sided
    derivatives."""
    out = fwd(op, x, kwargs, pick)()
    report = {
        "max_abs_vs_reference": check(name, out, fwd(ref, x, kwargs, pick)(), 1e-5, "forward")
    }
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(out.shape, generator=gen)
    noisy = x + 1e-3 * torch.rand(x.shape, generator=gen)
    grads = []
    for fn in (op, ref):
        xg = noisy.clone().requires_grad_()
        (pick(fn(xg, **kwargs)) * weights).sum().backward()
        grads.append(xg.grad)
    report["max_rel_grad_vs_reference"] = check(
        name, grads[0], grads[1], 1e-4, "gradient", relative=True
    )
    if vl_fn is not None:
        expected = torch.stack([torch.from_numpy(vl_fn(x[b].numpy())) for b in range(len(x))])
        report["max_abs_vs_vlfeat"] = check(name, out, expected, 1e-4, "forward (VLFeat)")
    return report


def hog_peers(x, quick, name):
    """Forward-only peers of HOG setting `name` on the batch x, image by image:
    peer -> (seconds, note)."""
    images = [x[b].numpy() for b in range(len(x))]
    s = HOG_SETTINGS[name]
    rows = {}
    if vlfeat.available():
        from pyinvert.vlfeat.hog import vl_hog

        rows[f"vlfeat ({name})"] = (
            timer(
                lambda: [
                    vl_hog(
                        im,
                        s["cell_size"],
                        s["num_orientations"],
                        s["variant"],
                        s["bilinear_orientations"],
                    )
                    for im in images
                ],
                quick,
            ),
            "same output, C, 1 thread",
        )
    else:
        print("vlfeat: skipped: not available")
    if name != "hog":
        return rows
    try:
        from skimage.feature import hog as sk_hog

        hwc = [np.ascontiguousarray(im.transpose(1, 2, 0)) for im in images]
        rows["skimage.feature.hog"] = (
            timer(
                lambda: [
                    sk_hog(
                        im,
                        orientations=9,
                        pixels_per_cell=(8, 8),
                        cells_per_block=(2, 2),
                        channel_axis=-1,
                    )
                    for im in hwc
                ],
                quick,
            ),
            "Dalal-Triggs blocks, not equal",
        )
    except ImportError:
        print("skimage.feature.hog: skipped: not available")
    if int(cv2.__version__.split(".")[0]) >= 4:
        descriptor = cv2.HOGDescriptor((224, 224), (16, 16), (8, 8), (8, 8), 9)
        u8 = [np.ascontiguousarray((im.transpose(1, 2, 0) * 255).astype(np.uint8)) for im in images]
        rows["cv2.HOGDescriptor"] = (
            timer(lambda: [descriptor.compute(im) for im in u8], quick),
            "Dalal-Triggs blocks, uint8, not equal",
        )
    else:
        print("cv2.HOGDescriptor: skipped: needs OpenCV 4.x")
    return rows


def dsift_peers(gray, quick):
    rows = {}
    try:
        from pyinvert.vlfeat.dsift import vl_dsift

        images = [np.ascontiguousarray(gray[b, 0].numpy()) for b in range(len(gray))]
        rows["vlfeat (dsift)"] = (
            timer(lambda: [vl_dsift(im, **DSIFT_SETTINGS) for im in images], quick),
            "same output, C, 1 thread",
        )
    except (ImportError, NotImplementedError, RuntimeError) as error:
        print(f"vlfeat dsift: skipped: not available ({error})")
    try:
        from kornia.feature import DenseSIFTDescriptor

        module = DenseSIFTDescriptor(
            num_ang_bins=8, num_spatial_bins=4, spatial_bin_size=8, stride=4, padding=0
        )
        rows["kornia DenseSIFTDescriptor"] = (
            timer(fwd(lambda t: module(t), gray, {}), quick),
            "batched, not equal",
        )
    except ImportError:
        print("kornia.feature.DenseSIFTDescriptor: skipped: not available")
    return rows


def bench_feature(feature, op, ref, x, kwargs, pick, quick, vl_fn, peers):
    """Rows for one feature at one batch size; None if the op is not available."""
    B = len(x)
    try:
        agreement = check_op(feature, op, ref, x[: min(B, 4)], kwargs, pick, vl_fn)
    except NotImplementedError as error:
        print(f"{feature}: skipped: not available ({error})")
        return None, None
    except Disagreement as error:
        print(f"{feature}: skipped, not timed: {error}")
        return None, {"disagreement": str(error)}
    rows = []
    xg = x.clone().requires_grad_()
    for mode, make in (
        ("fwd", lambda f: fwd(f, x, kwargs, pick)),
        ("fwd+bwd", lambda f: fwd_bwd(f, xg, kwargs, pick)),
    ):
        t_ours = timer(make(op), quick)
        t_ref = timer(make(ref), quick)
        rows.append(
            dict(
                feature=feature,
                mode=mode,
                B=B,
                impl="pyinvert",
                ms=t_ours * 1e3,
                ref_over_impl=t_ref / t_ours,
                note="",
            )
        )
        rows.append(
            dict(
                feature=feature,
                mode=mode,
                B=B,
                impl="reference",
                ms=t_ref * 1e3,
                ref_over_impl=1.0,
                note="pure PyTorch autograd",
            )
        )
        if mode == "fwd":
            for name, (seconds, note) in peers().items():
                rows.append(
                    dict(
                        feature=feature,
                        mode=mode,
                        B=B,
                        impl=name,
                        ms=seconds * 1e3,
                        ref_over_impl=t_ref / seconds,
                        note=note,
                    )
                )
    return rows, agreement


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-peers", action="store_true", help="skip VLFeat/skimage/cv2/kornia")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's default)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows, agreement = [], {}
    for B in args.batches:
        x = photos(B)
        gray = x.mean(1, keepdim=True)
        for name, kwargs in HOG_SETTINGS.items():
            vl_fn = None
            if vlfeat.available():
                from pyinvert.vlfeat.hog import vl_hog

                vl_fn = lambda im, s=kwargs: vl_hog(  # noqa: E731
                    im,
                    s["cell_size"],
                    s["num_orientations"],
                    s["variant"],
                    s["bilinear_orientations"],
                )
            peers = (
                (lambda: {})
                if args.no_peers
                else (lambda name=name: hog_peers(x, args.quick, name))
            )
            r, a = bench_feature(
                name, pyinvert.hog, reference.hog, x, kwargs, lambda o: o, args.quick, vl_fn, peers
            )
            rows += r or []
            if a:
                agreement[f"{name} B={B}"] = a
        vl_dsift_fn = None
        try:
            from pyinvert.vlfeat.dsift import vl_dsift

            vl_dsift_fn = lambda im: vl_dsift(im[0], **DSIFT_SETTINGS)[0]  # noqa: E731
        except ImportError:
            pass
        peers = (lambda: {}) if args.no_peers else (lambda: dsift_peers(gray, args.quick))
        r, a = bench_feature(
            "dsift",
            pyinvert.dsift,
            reference.dsift,
            gray,
            DSIFT_SETTINGS,
            lambda out: out[0],
            args.quick,
            vl_dsift_fn,
            peers,
        )
        rows += r or []
        if a:
            agreement[f"dsift B={B}"] = a
        if not r:
            print("dsift rows: skipped")

    print()
    print_table(rows, ["feature", "mode", "B", "impl", "ms", "ref_over_impl", "note"])
    print("\nref_over_impl: reference time / this implementation's time (higher is faster)")
    for key, report in agreement.items():
        print(
            f"agreement {key}: "
            + ", ".join(
                f"{k}={v:.2e}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items()
            )
        )
    write_results(
        "features",
        {
            "rows": rows,
            "agreement": agreement,
            "settings": {"hog": HOG_SETTINGS, "dsift": DSIFT_SETTINGS, "image": "3x224x224 photos"},
            "loadavg": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
