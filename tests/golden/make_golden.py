"""Seeded outputs of the public API, saved before the task-layer redesign (issue 10) so that
tests/test_golden.py can check that the redesign changed no result, and saved again when a
kernel's arithmetic changed on purpose (the image prior's AVX2+FMA build).

Run once, at the commit before a change that must not alter results, from the repository root:
    OMP_NUM_THREADS=1 python tests/golden/make_golden.py
It writes tests/golden/golden.pt. Every call below is made through the public API only
(``pyinvert.<name>``), single-threaded, on inputs that the script makes itself.
"""

from pathlib import Path

import torch

import pyinvert
from pyinvert import models

torch.set_num_threads(1)
OUT = Path(__file__).with_name("golden.pt")


def images(seed, n, size):
    """Smooth random images (a blurred noise field), so HOG/DSIFT see real gradients."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bicubic", align_corners=False
    ).clamp(0, 1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def record(r):
    return {
        "images": r.images.clone(),
        "feature_error": r.feature_error.clone(),
        "loss_history": r.loss_history.clone(),
    }


def compute() -> dict:
    """Every seeded result, keyed by call."""
    out = {}
    x = images(0, 2, 40)
    for rep in ("hog", "hogb", "dsift"):
        for recipe in ("cvpr2015", "ijcv2016"):
            r = pyinvert.invert(
                x, representation=rep, recipe=recipe, steps=15, generator=gen(1), progress=False
            )
            out[f"invert/{rep}/{recipe}"] = record(r)
    model = models.load_model("mobilenet_v2", "imagenet", download=False)
    xc = images(2, 2, 64)
    for recipe in ("cvpr2015", "ijcv2016"):
        rep = pyinvert.CNN(model, ["features.3", "features.6"], model_name="mobilenet_v2")
        r = pyinvert.invert(
            xc, representation=rep, recipe=recipe, steps=8, generator=gen(3), progress=False
        )
        out[f"invert/cnn/{recipe}"] = record(r)
    r = pyinvert.actmax(
        pyinvert.CNN(model, "classifier.1"),
        [281, 945],
        image_size=64,
        steps=8,
        generator=gen(4),
        progress=False,
    )
    out["actmax/classes"] = {"images": r.images.clone()}
    r = pyinvert.actmax(
        pyinvert.CNN(model, "features.6"),
        [3],
        neuron="center",
        image_size=64,
        steps=8,
        generator=gen(5),
        progress=False,
    )
    out["actmax/neuron"] = {"images": r.images.clone()}
    r = pyinvert.caricature(
        xc, pyinvert.CNN(model, "features.6"), steps=8, generator=gen(6), progress=False
    )
    out["caricature"] = {"images": r.images.clone()}
    r = pyinvert.dream(
        xc[:1],
        pyinvert.CNN(model, "features.6"),
        octaves=2,
        steps=3,
        generator=gen(7),
        progress=False,
    )
    out["dream"] = {"images": r.images.clone()}
    return out


def main():
    out = compute()
    torch.save(out, OUT)
    print(f"wrote {OUT}: {sorted(out)}")


if __name__ == "__main__":
    main()
