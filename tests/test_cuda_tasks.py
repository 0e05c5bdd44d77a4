"""The tasks on CUDA: HOG / HOGb / DSIFT and CNN inversion, activation maximization, the batch job
(``python -m pyinvert batch ... --device cuda``) and, with more than one GPU, torchrun with nccl.

Every test is marked ``cuda`` (tests/conftest.py skips them without a CUDA device). A seeded run
draws its initial images and jitter from CPU generators, so in float64 (no TF32, no fast-math:
the kernels' double arithmetic differs from the CPU's in the last bits only) a CUDA run follows
the CPU run; float32 runs are held to the quality thresholds the CPU tests use.
"""

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import pyinvert
from pyinvert import models
from pyinvert.data import sample_path

pytestmark = pytest.mark.cuda

CUDA = "cuda"
ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def photo(name, size):
    """A bundled photo resized to size x size, float32 [3, H, W] in [0, 1]."""
    image = cv2.imread(str(sample_path(name)), cv2.IMREAD_COLOR)[..., ::-1]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255


def photos(size=40):
    return torch.stack([photo(n, size) for n in PHOTOS])


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    )


def on(module, device, dtype=torch.float32):
    return copy.deepcopy(module).to(device=device, dtype=dtype)


# ---- HOG / DSIFT inversion --------------------------------------------------------------------


def test_hog_inversion_on_cuda_reaches_the_cpu_quality():
    # The CPU suite's bar (tests/test_invert.py): feature error < 0.15 after 200 steps.
    r = pyinvert.invert(
        photos(), representation="hog", steps=200, generator=gen(), device=CUDA, progress=False
    )
    assert r.settings["device"].startswith(CUDA)
    assert r.images.shape == (3, 1, 40, 40)
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert not r.failed.any()
    assert (r.feature_error < 0.15).all(), r.feature_error
    assert (r.loss_history[:, -1] < 0.2 * r.loss_history[:, 0]).all()


@pytest.mark.parametrize("rep", ["hog", "hogb", "dsift"])
def test_inversion_float64_cuda_follows_cpu(rep):
    kw = dict(representation=rep, steps=15, progress=False, dtype=torch.float64)
    cpu = pyinvert.invert(photos()[:2], generator=gen(3), device="cpu", **kw)
    cuda = pyinvert.invert(photos()[:2], generator=gen(3), device=CUDA, **kw)
    torch.testing.assert_close(cuda.images.cpu(), cpu.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(cuda.loss_history.cpu(), cpu.loss_history, rtol=1e-6, atol=0)
    torch.testing.assert_close(cuda.feature_error.cpu(), cpu.feature_error, rtol=1e-6, atol=0)


def test_inversion_batch_equals_single_on_cuda():
    kw = dict(representation="hog", steps=15, progress=False, device=CUDA, dtype=torch.float64)
    both = pyinvert.invert(photos()[:2], seeds=[5, 6], **kw)
    one = pyinvert.invert(photos()[1:2], seeds=[6], **kw)
    torch.testing.assert_close(both.images[1:2].cpu(), one.images.cpu(), rtol=0, atol=1e-9)


# ---- CNN inversion and activation maximization ------------------------------------------------


def test_cnn_inversion_float64_cuda_follows_cpu():
    model = models.load_model("mobilenet_v2", None)  # random weights: same arithmetic
    images = photos(64)[:2]
    kw = dict(steps=5, progress=False, dtype=torch.float64, generator=None)
    results = {}
    for device in ("cpu", CUDA):
        rep = pyinvert.CNN(
            on(model, device, torch.float64), "features.6", model_name="mobilenet_v2"
        )
        kw["generator"] = gen(1)
        results[device] = pyinvert.invert(images, representation=rep, device=device, **kw)
    cpu, cuda = results["cpu"], results[CUDA]
    torch.testing.assert_close(cuda.codes.cpu(), cpu.codes, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(cuda.images.cpu(), cpu.images, rtol=0, atol=1e-6)


def test_cnn_inversion_with_imagenet_weights_on_cuda(imagenet_mobilenet):
    # tests/test_cnn.py measured on the CPU (seed 0, 128 px, ijcv2016, 150 steps): SSIM 0.81
    # from features.3, feature error 0.018; the bars are its 0.7 and 0.05.
    from pyinvert import metrics

    img = photo("chelsea", 128)[None]
    rep = pyinvert.CNN(imagenet_mobilenet.to(CUDA), "features.3", model_name="mobilenet_v2")
    r = pyinvert.invert(
        img,
        representation=rep,
        recipe="ijcv2016",
        steps=150,
        generator=gen(),
        device=CUDA,
        progress=False,
    )
    assert float(metrics.ssim(r.images.cpu(), img)) >= 0.7
    assert float(r.feature_error) < 0.05


def test_actmax_float64_cuda_follows_cpu():
    results = {}
    for device in ("cpu", CUDA):
        rep = pyinvert.CNN(on(tiny_net(), device, torch.float64), "6")
        results[device] = pyinvert.actmax(
            rep,
            [0, 5],
            image_size=32,
            steps=5,
            generator=gen(),
            device=device,
            dtype=torch.float64,
            progress=False,
        )
    cpu, cuda = results["cpu"], results[CUDA]
    torch.testing.assert_close(cuda.images.cpu(), cpu.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(cuda.probabilities.cpu(), cpu.probabilities, rtol=1e-6, atol=0)


def test_actmax_raises_the_activation_on_cuda():
    rep = pyinvert.CNN(on(tiny_net(), CUDA), "6")
    r = pyinvert.actmax(
        rep, [2], image_size=32, steps=30, generator=gen(), device=CUDA, progress=False
    )
    h = r.measure_history[0]
    assert float(h[-1]) > float(h[0])
    assert r.settings["device"].startswith(CUDA)


def test_class_actmax_with_imagenet_weights_on_cuda(imagenet_mobilenet):
    # tests/test_cnn.py measured on the CPU (seed 0, 128 px, 150 steps): p >= 0.997.
    rep = pyinvert.CNN(imagenet_mobilenet.to(CUDA), "classifier.1", model_name="mobilenet_v2")
    r = pyinvert.actmax(
        rep, [281, 945, 1], image_size=128, steps=150, generator=gen(), device=CUDA, progress=False
    )
    assert r.probabilities.min() >= 0.9, r.probabilities.tolist()
    assert not bool(r.failed.any())


# ---- the batch job ----------------------------------------------------------------------------


def write_manifest(folder: Path, n=4, size=48):
    rows = []
    for i in range(n):
        image = cv2.imread(str(sample_path(PHOTOS[i % len(PHOTOS)])), cv2.IMREAD_COLOR)
        image = cv2.resize(image[3 * i :, 3 * i :], (size, size), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(folder / f"p{i}.png"), image)
        rows.append((f"item{i:03d}", f"p{i}.png", "hog" if i % 2 == 0 else "dsift"))
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("id", "image", "rep"), *rows])
    return path


def run_cli(args, **kwargs):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def read_items(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    return summary, {item["id"]: item for item in summary["items"]}


def test_batch_job_with_device_cuda_matches_cpu(tmp_path):
    manifest = write_manifest(tmp_path)
    outs = {}
    for device in ("cpu", CUDA):
        out = tmp_path / device
        result = run_cli(
            [
                "-m",
                "pyinvert",
                "batch",
                str(manifest),
                "--out",
                str(out),
                "--steps",
                "5",
                "--device",
                device,
                "--quiet",
            ]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outs[device] = out
    cpu_summary, cpu_items = read_items(outs["cpu"])
    cuda_summary, cuda_items = read_items(outs[CUDA])
    assert cuda_summary["job"]["device"].startswith(CUDA)
    assert cuda_summary["job"]["ok"] == 4 and cuda_summary["job"]["exit_status"] == 0
    for key, a in cpu_items.items():
        b = cuda_items[key]
        assert a["status"] == b["status"] == "ok"
        assert b["feature_error"] == pytest.approx(a["feature_error"], rel=1e-3, abs=1e-4)
        ra = cv2.imread(str(outs["cpu"] / a["reconstruction"]), cv2.IMREAD_UNCHANGED)
        rb = cv2.imread(str(outs[CUDA] / b["reconstruction"]), cv2.IMREAD_UNCHANGED)
        assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 2


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="torchrun with nccl needs 2 GPUs")
def test_torchrun_nccl_two_gpus_match_one(tmp_path):
    manifest = write_manifest(tmp_path, n=6)
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--steps", "5", "--device", CUDA]
    assert (
        run_cli(
            ["-m", "pyinvert", "batch", str(manifest), "--out", str(one), *common, "--quiet"]
        ).returncode
        == 0
    )
    result = run_cli(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "pyinvert",
            "batch",
            str(manifest),
            "--out",
            str(two),
            *common,
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[rank 0]" in result.stdout and "[rank 1]" in result.stdout, result.stderr
    s1, items1 = read_items(one)
    s2, items2 = read_items(two)
    assert s2["job"]["world_size"] == 2 and s2["job"]["exit_status"] == 0
    ranks = set()
    for key, a in items1.items():
        b = items2[key]
        assert a["status"] == b["status"] == "ok"
        assert b["feature_error"] == pytest.approx(a["feature_error"], rel=1e-5)
        ranks.add(json.loads((two / b["record"]).read_text())["rank"])
    assert ranks == {0, 1}
