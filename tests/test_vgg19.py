"""VGG-19 in the zoo, the papers' layer aliases of VGG-16/19, average pooling, and the Gram
parameter count of Gatys et al. Random-weight VGG for shapes and names (no VGG checkpoint is
installed, nothing is downloaded); the shipped MobileNetV2 weights for a network without
aliases."""

import doctest
import importlib
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyinvert import models
from pyinvert.models import zoo

# The papers' names (Gatys et al. 2015/2016, after Simonyan & Zisserman's Caffe models) ->
# torchvision's indices, written out by hand from configuration E.
VGG19_ALIASES = {
    "conv1_1": "features.0",
    "relu1_1": "features.1",
    "conv1_2": "features.2",
    "relu1_2": "features.3",
    "pool1": "features.4",
    "conv2_1": "features.5",
    "relu2_1": "features.6",
    "conv2_2": "features.7",
    "relu2_2": "features.8",
    "pool2": "features.9",
    "conv3_1": "features.10",
    "relu3_1": "features.11",
    "conv3_2": "features.12",
    "relu3_2": "features.13",
    "conv3_3": "features.14",
    "relu3_3": "features.15",
    "conv3_4": "features.16",
    "relu3_4": "features.17",
    "pool3": "features.18",
    "conv4_1": "features.19",
    "relu4_1": "features.20",
    "conv4_2": "features.21",
    "relu4_2": "features.22",
    "conv4_3": "features.23",
    "relu4_3": "features.24",
    "conv4_4": "features.25",
    "relu4_4": "features.26",
    "pool4": "features.27",
    "conv5_1": "features.28",
    "relu5_1": "features.29",
    "conv5_2": "features.30",
    "relu5_2": "features.31",
    "conv5_3": "features.32",
    "relu5_3": "features.33",
    "conv5_4": "features.34",
    "relu5_4": "features.35",
    "pool5": "features.36",
    "fc6": "classifier.0",
    "relu6": "classifier.1",
    "fc7": "classifier.3",
    "relu7": "classifier.4",
    "fc8": "classifier.6",
}
VGG16_ALIASES = {
    "conv1_1": "features.0",
    "relu1_1": "features.1",
    "conv1_2": "features.2",
    "relu1_2": "features.3",
    "pool1": "features.4",
    "conv2_1": "features.5",
    "relu2_1": "features.6",
    "conv2_2": "features.7",
    "relu2_2": "features.8",
    "pool2": "features.9",
    "conv3_1": "features.10",
    "relu3_1": "features.11",
    "conv3_2": "features.12",
    "relu3_2": "features.13",
    "conv3_3": "features.14",
    "relu3_3": "features.15",
    "pool3": "features.16",
    "conv4_1": "features.17",
    "relu4_1": "features.18",
    "conv4_2": "features.19",
    "relu4_2": "features.20",
    "conv4_3": "features.21",
    "relu4_3": "features.22",
    "pool4": "features.23",
    "conv5_1": "features.24",
    "relu5_1": "features.25",
    "conv5_2": "features.26",
    "relu5_2": "features.27",
    "conv5_3": "features.28",
    "relu5_3": "features.29",
    "pool5": "features.30",
    "fc6": "classifier.0",
    "relu6": "classifier.1",
    "fc7": "classifier.3",
    "relu7": "classifier.4",
    "fc8": "classifier.6",
}
KIND = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d, "fc": nn.Linear}


def meta(name, **kwargs):
    with torch.device("meta"):
        return models.build_model(name, **kwargs)


@pytest.fixture(scope="module")
def vgg19():
    """Random-weight VGG-19 (max pooling) on the CPU, and the same weights with avg pooling."""
    torch.manual_seed(0)
    net = models.load_model("vgg19")
    avg = models.load_model("vgg19", pooling="avg")
    avg.load_state_dict(net.state_dict(), strict=True)
    return net, avg


def outputs(net, layers, x):
    found, handles = {}, []
    modules = dict(net.named_modules())
    for layer in layers:
        module = modules[models.resolve_layer(net, layer)]
        handles.append(
            module.register_forward_hook(lambda m, a, o, layer=layer: found.__setitem__(layer, o))
        )
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return found


# ---------------------------------------------------------------------------------------------
# The model and its weights file


def test_vgg19_is_configuration_e():
    net = meta("vgg19")
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == [
        f"features.{k}" for k in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    ]
    pools = [n for n, m in net.named_modules() if isinstance(m, nn.MaxPool2d)]
    assert pools == ["features.4", "features.9", "features.18", "features.27", "features.36"]
    assert sum(p.numel() for p in net.parameters()) == 143_667_240  # torchvision's vgg19
    assert type(net) is models.VGG19 and net.pooling == "max"


def test_weights_file_and_lookup(tmp_path, monkeypatch):
    assert models.WEIGHT_FILES["vgg19"] == "vgg19-dcbb9e9d.pth"
    assert models.weights_url("vgg19").endswith("/models/vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("PYINVERT_WEIGHTS", str(tmp_path / "explicit"))
    assert (
        models.hub_checkpoint_path("vgg19")
        == tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    )
    assert models.find_weights("vgg19") is None
    calls = []

    def no_network(url, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(
        models.WeightsNotFoundError,
        match=r"(?s)no ImageNet weights for 'vgg19': torchvision's file "
        r"vgg19-dcbb9e9d.pth was not found.*no network in tests",
    ):
        models.load_model("vgg19", "imagenet", pooling="avg")
    assert calls == [models.weights_url("vgg19")]
    # A file in the explicit folder is found, and checked against the hash in its name.
    fake = tmp_path / "explicit" / "vgg19-dcbb9e9d.pth"
    fake.parent.mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, fake)
    assert models.find_weights("vgg19") == fake
    with pytest.raises(
        models.WeightsHashError,
        match=r"vgg19-dcbb9e9d.pth is corrupt or not "
        r"the expected file: .*expected dcbb9e9d",
    ):
        models.load_model("vgg19", "imagenet")


def test_checkpoint_of_either_pooling_loads_strictly_into_the_other():
    max_net, avg_net = meta("vgg19"), meta("vgg19", pooling="avg")
    assert list(max_net.state_dict()) == list(avg_net.state_dict())
    zoo.load_state_dict(avg_net, max_net.state_dict(), "vgg19", "a max-pooling state dict")
    with pytest.raises(
        ValueError,
        match="load_model: vgg16 weights does not fit vgg19; 12 "
        "missing keys: features.16.bias, .*; 6 unexpected "
        "keys: features.17.bias",
    ):
        zoo.load_state_dict(avg_net, meta("vgg16").state_dict(), "vgg19", "vgg16 weights")


# ---------------------------------------------------------------------------------------------
# Average pooling


@pytest.mark.parametrize("name, pools", [("vgg16", 5), ("vgg19", 5)])
def test_avg_pooling_replaces_every_max_pooling(name, pools):
    net = meta(name, pooling="avg")
    kinds = [type(m) for m in net.modules()]
    assert nn.MaxPool2d not in kinds and kinds.count(nn.AvgPool2d) == pools
    for m in net.modules():
        if isinstance(m, nn.AvgPool2d):
            assert (m.kernel_size, m.stride, m.padding) == (2, 2, 0)
    assert net.pooling == "avg"
    assert models.describe(net) == [
        dict(r, type="AvgPool2d") if r["type"] == "MaxPool2d" else r for r in models.describe(name)
    ]
    frozen = models.load_model(name, pooling="avg") if name == "vgg16" else None
    if frozen is not None:
        assert not any(p.requires_grad for p in frozen.parameters())
        assert isinstance(frozen.features[4], nn.AvgPool2d)


def test_avg_pooling_computes_averages(vgg19):
    net, avg = vgg19
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a = outputs(net, ["relu1_2", "pool1", "pool2"], x)
    b = outputs(avg, ["relu1_2", "pool1", "pool2"], x)
    assert torch.equal(a["relu1_2"], b["relu1_2"])  # same weights up to the first pooling
    torch.testing.assert_close(b["pool1"], F.avg_pool2d(b["relu1_2"], 2))
    torch.testing.assert_close(a["pool1"], F.max_pool2d(a["relu1_2"], 2))
    assert (a["pool1"] > b["pool1"]).any() and (a["pool1"] >= b["pool1"] - 1e-6).all()
    assert not torch.allclose(a["pool2"], b["pool2"])


def test_pooling_errors():
    with pytest.raises(
        ValueError,
        match="build_model: pooling='avg' is for vgg16, vgg19 only, got model 'resnet18'",
    ):
        models.build_model("resnet18", pooling="avg")
    with pytest.raises(
        ValueError, match="load_model: unknown pooling 'min'; expected 'max' or 'avg'"
    ):
        models.load_model("vgg19", pooling="min")
    with pytest.raises(ValueError, match="VGG19: unknown pooling 'mean'; expected 'max' or 'avg'"):
        models.VGG19(pooling="mean")
    assert isinstance(meta("alexnet", pooling="max"), models.AlexNet)


# ---------------------------------------------------------------------------------------------
# Layer aliases


@pytest.mark.parametrize("name, table", [("vgg19", VGG19_ALIASES), ("vgg16", VGG16_ALIASES)])
def test_alias_tables(name, table):
    assert models.layer_aliases(name) == table
    net = meta(name, pooling="avg")
    assert models.layer_aliases(net) == table
    modules = dict(net.named_modules())
    for alias, module_name in table.items():
        assert models.resolve_layer(net, alias) == module_name
        kind = KIND[alias.rstrip("0123456789_")]
        expected = nn.AvgPool2d if kind is nn.MaxPool2d else kind
        assert isinstance(modules[module_name], expected), alias
    assert set(table.values()) <= set(models.layer_names(name))


def test_alias_layer_shapes(vgg19):
    net, avg = vgg19
    x = torch.zeros(1, 3, 64, 64)
    shapes = {
        k: tuple(v.shape[1:])
        for k, v in outputs(
            avg, ["conv1_1", "pool1", "conv3_4", "pool4", "relu5_4", "pool5", "fc7"], x
        ).items()
    }
    assert shapes == {
        "conv1_1": (64, 64, 64),
        "pool1": (64, 32, 32),
        "conv3_4": (256, 16, 16),
        "pool4": (512, 4, 4),
        "relu5_4": (512, 4, 4),
        "pool5": (512, 2, 2),
        "fc7": (4096,),
    }
    by_name = outputs(net, ["features.27", "pool4"], x)
    assert torch.equal(by_name["features.27"], by_name["pool4"])


def test_resolve_layer_rules(imagenet_mobilenet):
    net = meta("vgg19")
    assert models.resolve_layer(net, "features.21") == "features.21"
    assert models.resolve_layer(net, "conv9_9") == "conv9_9"  # unknown: the caller reports it
    assert models.layer_aliases(imagenet_mobilenet) == {}
    assert models.layer_aliases("mobilenet_v2") == {}
    assert models.resolve_layer(imagenet_mobilenet, "features.3") == "features.3"
    assert models.resolve_layer(imagenet_mobilenet, "conv1_1") == "conv1_1"
    with pytest.raises(TypeError, match="resolve_layer: expected a layer name \\(str\\), got int"):
        models.resolve_layer(net, 3)
    with pytest.raises(TypeError, match="resolve_layer: expected an nn.Module, got str"):
        models.resolve_layer("vgg19", "conv1_1")
    with pytest.raises(ValueError, match="layer_aliases: unknown model 'vgg11'"):
        models.layer_aliases("vgg11")
    with pytest.raises(
        TypeError, match="layer_aliases: expected a model name or an nn.Module, got int"
    ):
        models.layer_aliases(3)


# ---------------------------------------------------------------------------------------------
# Gram parameter count


def test_gram_parameter_count_of_gatys_texture_layers():
    # Gatys et al. 2015, Sec. 4: 64 * 65 / 2 (conv1_1, pool1) + 128 * 129 / 2 + 256 * 257 / 2
    # + 512 * 513 / 2 = 176,640.
    assert models.TEXTURE_LAYERS == ("conv1_1", "pool1", "pool2", "pool3", "pool4")
    assert models.gram_parameter_count("vgg19", models.TEXTURE_LAYERS) == 176_640
    assert (
        models.gram_parameter_count(
            "vgg19", ["features.0", "features.4", "features.9", "features.18", "features.27"]
        )
        == 176_640
    )
    assert (
        models.gram_parameter_count(meta("vgg19", pooling="avg"), models.TEXTURE_LAYERS) == 176_640
    )
    assert (
        models.gram_parameter_count("vgg19", models.STYLE_LAYERS)
        == 2080 + 8256 + 32896 + 131328 + 131328
    )
    assert models.gram_parameter_count("vgg16", "pool5") == 131_328
    assert models.CONTENT_LAYERS == ("conv4_2",)


def test_gram_parameter_count_on_a_real_network(imagenet_mobilenet, vgg19):
    # MobileNetV2: features.3 has 24 channels, features.18 1280 (a real CPU forward).
    assert (
        models.gram_parameter_count(imagenet_mobilenet, ["features.3", "features.18"])
        == 24 * 25 // 2 + 1280 * 1281 // 2
    )
    assert models.gram_parameter_count(vgg19[0], ["conv1_1", "pool4"]) == 2080 + 131328


def test_gram_parameter_count_errors():
    with pytest.raises(
        ValueError,
        match="gram_parameter_count: layer 'fc6' \\(classifier.0\\) "
        "outputs \\[4096\\], not a feature map",
    ):
        models.gram_parameter_count("vgg19", ["conv1_1", "fc6"])
    with pytest.raises(
        ValueError,
        match="gram_parameter_count: unknown layer 'conv6_1'; "
        "expected a module name or one of the aliases "
        "conv1_1, relu1_1",
    ):
        models.gram_parameter_count("vgg19", ["conv6_1"])
    with pytest.raises(
        ValueError, match="gram_parameter_count: unknown layer 'pool1'; .*\\(none\\)"
    ):
        models.gram_parameter_count("mobilenet_v2", ["pool1"])
    with pytest.raises(ValueError, match="gram_parameter_count: expected distinct layers"):
        models.gram_parameter_count("vgg19", ["conv1_1", "features.0"])
    with pytest.raises(ValueError, match="gram_parameter_count: expected at least one layer"):
        models.gram_parameter_count("vgg19", [])
    with pytest.raises(ValueError, match="gram_parameter_count: unknown model 'vgg11'"):
        models.gram_parameter_count("vgg11", ["conv1_1"])


# ---------------------------------------------------------------------------------------------
# The CLI and the docs


def test_pyinvert_models_vgg19_lists_its_layers(tmp_path):
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "pyinvert", "models", "vgg19"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PYTHONPATH": str(root),
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "TORCH_HOME": str(tmp_path),
        },
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == ("vgg19: VGG19, 143.7M parameters, input 3x224x224 (ImageNet-normalized)")
    assert "vgg19-dcbb9e9d.pth" in lines[1]
    assert lines[4].split() == ["features.0", "Conv2d", "64x224x224", "1", "3"]
    assert ["features.36", "MaxPool2d", "512x7x7", "32", "268"] in [line.split() for line in lines]
    assert lines[-1].split() == ["classifier.6", "Linear", "1000", "-", "-"]
    assert len(lines) == 4 + 43
    listing = models.models_command()
    assert any(line.startswith("vgg19 ") and "143.7M" in line for line in listing.splitlines())


@pytest.mark.parametrize("module", ["pyinvert.models.vgg", "pyinvert.models.gatys"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
