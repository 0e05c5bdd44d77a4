"""RunOptions: one value for how a task runs, accepted by every task beside the old keywords."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyinvert
from pyinvert import RunOptions
from pyinvert.objectives import Activation


def images(n=2, size=32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def tiny_cnn():
    torch.manual_seed(0)
    return pyinvert.CNN(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), "1")


FIELDS = [f.name for f in RunOptions.__dataclass_fields__.values()]


@pytest.mark.parametrize(
    "task",
    [
        pyinvert.invert,
        pyinvert.visualize,
        pyinvert.actmax,
        pyinvert.caricature,
        pyinvert.dream,
        pyinvert.invariance_map,
    ],
)
def test_every_task_takes_options(task):
    assert "options" in inspect.signature(task).parameters


def test_defaults_equal_the_tasks_keyword_defaults():
    params = inspect.signature(pyinvert.invert).parameters
    for name in FIELDS:
        assert params[name].default == getattr(RunOptions(), name) or (
            params[name].default is None and getattr(RunOptions(), name) is None
        ), name


def test_options_give_the_same_result_as_keywords():
    x = images()
    kw = dict(steps=12, restarts=2, batch_size=3, progress=False)
    a = pyinvert.invert(x, representation="hog", generator=torch.Generator().manual_seed(1), **kw)
    b = pyinvert.invert(
        x,
        representation="hog",
        options=RunOptions(generator=torch.Generator().manual_seed(1), **kw),
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.loss_history, b.loss_history)
    c = pyinvert.actmax(tiny_cnn(), [0, 2], image_size=16, steps=5, progress=False, seeds=[3, 4])
    d = pyinvert.actmax(
        tiny_cnn(), [0, 2], image_size=16, options=RunOptions(steps=5, progress=False, seeds=[3, 4])
    )
    assert torch.equal(c.images, d.images)


def test_resolve_rules():
    base = RunOptions(steps=5, restarts=2)
    assert RunOptions.resolve("f", base, restarts=1) is base  # a default keeps the option
    assert RunOptions.resolve("f", base, restarts=2).restarts == 2
    assert RunOptions.resolve("f", None, dtype=torch.float64).dtype == torch.float64
    assert RunOptions.resolve("f", base, batch_size=4).batch_size == 4
    with pytest.raises(
        ValueError, match="invert: restarts is given twice, as 3 and in options as 2; give it once"
    ):
        pyinvert.invert(images(), options=base, restarts=3, progress=False)
    with pytest.raises(TypeError, match="visualize: expected options to be a RunOptions, got dict"):
        pyinvert.visualize(
            Activation(0), representation=tiny_cnn(), B=1, image_size=8, options={"steps": 1}
        )


@pytest.mark.parametrize(
    "fn, call",
    [
        ("invert", lambda o: pyinvert.invert(images(1), options=o)),
        (
            "visualize",
            lambda o: pyinvert.visualize(
                Activation(0), representation=tiny_cnn(), B=1, image_size=8, options=o
            ),
        ),
        ("actmax", lambda o: pyinvert.actmax(tiny_cnn(), [0], image_size=8, options=o)),
        ("caricature", lambda o: pyinvert.caricature(images(1), tiny_cnn(), options=o)),
        ("dream", lambda o: pyinvert.dream(images(1), tiny_cnn(), options=o)),
    ],
)
def test_errors_name_the_called_function(fn, call):
    with pytest.raises(ValueError, match=f"^{fn}: expected restarts to be an int >= 1, got 0"):
        call(RunOptions(restarts=0, progress=False))
    with pytest.raises(
        TypeError, match=f"^{fn}: expected dtype float32 or float64, got torch.float16"
    ):
        call(RunOptions(dtype=torch.float16, progress=False))
    with pytest.raises(ValueError, match=f"^{fn}: expected steps >= 1, got 0"):
        call(RunOptions(steps=0, progress=False))


def test_check_messages():
    with pytest.raises(ValueError, match="f: expected batch_size to be None or an int >= 1"):
        RunOptions(batch_size=0).check("f")
    with pytest.raises(TypeError, match="f: expected generator to be a torch.Generator, got int"):
        RunOptions(generator=1).check("f")
    with pytest.raises(ValueError, match=r"f: expected backend in \('fused', 'reference'\)"):
        RunOptions(backend="cuda").check("f")
    assert RunOptions(seeds=[1]).to_dict()["seeded"] is True


def test_recipe_weight_errors_name_the_task():
    with pytest.raises(
        ValueError,
        match=r"^actmax: expected tv_weight to be a float or of "
        r"shape \(1,\), got \[3\]",
    ):
        pyinvert.actmax(
            tiny_cnn(), [0], image_size=8, steps=1, progress=False, tv_weight=torch.ones(3)
        )
    with pytest.raises(ValueError, match=r"^visualize: expected norm_weight to be a float"):
        pyinvert.visualize(
            Activation(0),
            representation=tiny_cnn(),
            B=1,
            image_size=8,
            steps=1,
            progress=False,
            norm_weight=torch.ones(2),
        )
