"""Backward rules and gradient methods: an independent hand-written reference rule, captum as
an oracle where captum is right, batch = single, several targets = one call per target."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyinvert.attribution import attribute, backward_rule
from pyinvert.data import sample_path
from pyinvert.models import normalize

torch.set_num_threads(1)


def imagenet_mobilenet_or_skip():
    """The real MobileNetV2; skips (fails under PYINVERT_REQUIRE_WEIGHTS=1) without weights."""
    from pyinvert import models
    from tests.conftest import REQUIRE_WEIGHTS

    try:
        return models.load_model("mobilenet_v2", "imagenet", download=False)
    except models.WeightsNotFoundError:
        if REQUIRE_WEIGHTS:
            pytest.fail("PYINVERT_REQUIRE_WEIGHTS=1 but the MobileNetV2 weights are missing")
        pytest.skip("MobileNetV2 ImageNet weights are not installed")


class Tiny(nn.Module):
    """MobileNetV2-like: ReLU6 module in place, F.relu6, residual, in-place LeakyReLU,
    F.hardtanh, Tensor.relu."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a1 = nn.ReLU6(inplace=True)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.a3 = nn.LeakyReLU(0.1, inplace=True)
        self.c2 = nn.Conv2d(8, 6, 3, stride=2)
        self.fc = nn.Linear(6 * 5 * 5, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2)
            self.c1.weight.mul_(4)

    def forward(self, x):
        h1 = self.a1(self.bn(self.c1(x)))
        h2 = F.relu6(self.dw(h1))
        h3 = self.a3(h1 + self.pw(h2))
        h4 = F.hardtanh(self.c2(h3), -1.0, 2.0)
        return self.fc(h4.relu().flatten(1))


def _unit(g, local, rule):
    if rule == "gradient":
        return g * local
    if rule == "deconvnet":
        return g.clamp(min=0)
    return g.clamp(min=0) * local


def _vjp(fn, x, g):
    return torch.autograd.functional.vjp(fn, x, g)[1]


def reference_rule(net, x, target, rule):
    """The rule applied by hand, unit by unit, on explicit masks of the pre-activations."""
    with torch.no_grad():
        z1 = net.bn(net.c1(x))
        h1 = z1.clamp(0, 6)
        z2 = net.dw(h1)
        h2 = z2.clamp(0, 6)
        z3 = h1 + net.pw(h2)
        h3 = torch.where(z3 > 0, z3, 0.1 * z3)
        z4 = net.c2(h3)
        h4 = z4.clamp(-1, 2)
        h5 = h4.clamp(min=0)
    g = torch.zeros(x.shape[0], 5, dtype=x.dtype)
    g[:, target] = 1
    g = _vjp(lambda h: net.fc(h.flatten(1)), h5, g)
    g = _unit(g, (h4 > 0).to(g), rule)
    g = _unit(g, ((z4 > -1) & (z4 < 2)).to(g), rule)
    g = _vjp(net.c2, h3, g)
    g = _unit(g, torch.where(z3 > 0, torch.ones_like(z3), torch.full_like(z3, 0.1)), rule)
    g1 = g.clone()
    g = _vjp(net.pw, h2, g)
    g = _unit(g, ((z2 > 0) & (z2 < 6)).to(g), rule)
    g1 = g1 + _vjp(net.dw, h1, g)
    g1 = _unit(g1, ((z1 > 0) & (z1 < 6)).to(g1), rule)
    return _vjp(lambda v: net.bn(net.c1(v)), x, g1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Tiny().double().eval()


@pytest.mark.parametrize(
    "rule,method",
    [("gradient", "saliency"), ("deconvnet", "deconvnet"), ("guided", "guided_backprop")],
)
def test_rules_equal_hand_written_reference(tiny, rule, method):
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    r = attribute(x, tiny, method, targets=[[1, 3]] * 3, preprocess=None)
    for k, t in enumerate((1, 3)):
        ref = reference_rule(tiny, x, t, rule)
        torch.testing.assert_close(r.gradients[method][:, k], ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r.maps[method], r.gradients[method].abs().amax(2))


def test_rules_differ_from_gradient_and_count_units(tiny):
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    r = attribute(x, tiny, ["saliency", "deconvnet", "guided_backprop"], targets=2, preprocess=None)
    g = r.gradients
    assert (g["guided_backprop"] - g["saliency"]).abs().max() > 1e-3 * g["saliency"].abs().max()
    assert (g["deconvnet"] - g["saliency"]).abs().max() > 1e-3 * g["saliency"].abs().max()
    with backward_rule("guided") as info:
        tiny(x.requires_grad_())
    assert info["count"] == 5  # ReLU6, relu6, LeakyReLU, hardtanh, Tensor.relu


def test_rule_engine_restores_functions_and_checks():
    before = (F.relu, F.relu6, F.hardtanh, F.leaky_relu, torch.relu, torch.Tensor.relu)
    with backward_rule("deconvnet"):
        assert F.relu is not before[0]
        with backward_rule("deconvnet"):
            pass
        with pytest.raises(ValueError, match="already active"):
            with backward_rule("guided"):
                pass
    assert (F.relu, F.relu6, F.hardtanh, F.leaky_relu, torch.relu, torch.Tensor.relu) == before
    with pytest.raises(ValueError, match="expected rule in"):
        with backward_rule("lrp"):
            pass


def _module_hook_reference(model, rule):
    """An independent mechanism: backward hooks on every ReLU6 module of a copy."""
    net = copy.deepcopy(model)

    def hook(module, grad_in, grad_out):
        if rule == "deconvnet":
            return (grad_out[0].clamp(min=0),)
        return (grad_in[0].clamp(min=0),)  # grad_in = grad_out * 1[0 < x < 6]

    for m in net.modules():
        if isinstance(m, nn.ReLU6):
            m.register_full_backward_hook(hook)
    return net


@pytest.fixture(scope="module")
def mnv2():
    return imagenet_mobilenet_or_skip()


@pytest.mark.parametrize("rule,method", [("deconvnet", "deconvnet"), ("guided", "guided_backprop")])
def test_mobilenet_v2_rules_equal_module_hook_reference(mnv2, rule, method):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    r = attribute(x, mnv2, [method, "saliency"], targets=[[3, 281], [7, 500]])
    ref_net = _module_hook_reference(mnv2, rule)
    for k in range(2):
        xr = x.clone().requires_grad_(True)
        s = ref_net(normalize(xr)).gather(1, r.targets[:, k : k + 1]).sum()
        ref = torch.autograd.grad(s, xr)[0]
        scale = ref.abs().max()
        assert (r.gradients[method][:, k] - ref).abs().max() <= 1e-5 * scale
        plain = r.gradients["saliency"][:, k]
        assert (r.gradients[method][:, k] - plain).abs().max() > 0.1 * scale


def test_captum_guided_backprop_on_relu6_is_the_plain_gradient(mnv2):
    """The fault we must not copy: captum hooks nn.ReLU only."""
    captum = pytest.importorskip("captum.attr")
    pytest.importorskip("matplotlib")
    x = torch.rand(1, 3, 64, 64)
    net = nn.Sequential(_Norm(), mnv2).eval()
    theirs = captum.GuidedBackprop(net).attribute(x.clone(), target=3)
    plain = _grad(net, x, 3)
    ours = attribute(x, mnv2, "guided_backprop", targets=3).gradients["guided_backprop"][:, 0]
    torch.testing.assert_close(theirs, plain, rtol=1e-5, atol=1e-7)
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()


def _grad(net, x, t):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(net(x)[:, t].sum(), x)[0]


class _Norm(nn.Module):
    def forward(self, x):
        return normalize(x)


def test_inplace_relu_model_and_functional(tiny):
    """torchvision-style nn.ReLU(inplace=True) and F.relu(inplace=True) get the rule too."""
    torch.manual_seed(2)
    net = (
        nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 4, 3),
            _InplaceF(),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
        )
        .double()
        .eval()
    )
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    r = attribute(x, net, ["saliency", "guided_backprop"], targets=1, preprocess=None)
    # reference by hand
    with torch.no_grad():
        z1 = net[0](x)
        z2 = net[2](z1.clamp(min=0))
    g = torch.zeros(2, 3, dtype=x.dtype)
    g[:, 1] = 1
    g = _vjp(lambda h: net[5](h.flatten(1)), z2.clamp(min=0), g)
    g = g.clamp(min=0) * (z2 > 0)
    g = _vjp(net[2], z1.clamp(min=0), g)
    g = g.clamp(min=0) * (z1 > 0)
    ref = _vjp(net[0], x, g)
    torch.testing.assert_close(r.gradients["guided_backprop"][:, 0], ref)
    torch.testing.assert_close(r.gradients["saliency"][:, 0], _grad(net, x, 1))


class _InplaceF(nn.Module):
    def forward(self, x):
        F.relu(x, inplace=True)
        return x


def test_batch_equals_single_and_targets_in_one_call(mnv2):
    torch.manual_seed(3)
    x = torch.rand(3, 3, 64, 64)
    tg = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    methods = ["saliency", "guided_backprop", "gradcam", "integrated_gradients"]
    r = attribute(x, mnv2, methods, targets=tg, steps=4)
    for b in range(3):
        for k in range(3):
            one = attribute(x[b : b + 1], mnv2, methods, targets=tg[b][k], steps=4)
            for m in methods:
                torch.testing.assert_close(r.maps[m][b, k], one.maps[m][0, 0], rtol=1e-4, atol=1e-6)
    assert r.targets.tolist() == tg and r.scores.shape == (3, 3)


@pytest.mark.parametrize("unit", ["relu", "relu6", "hardtanh", "leaky"])
def test_unit_gradient_rule_gradcheck(unit):
    """float64 gradcheck of the rule function's chain-rule branch (its local derivative read
    from the output), away from the kinks."""
    from pyinvert.attribution.rules import _Unit

    run, lo, hi, slope = {
        "relu": (torch.relu, 0.0, float("inf"), None),
        "relu6": (F.relu6, 0.0, 6.0, None),
        "hardtanh": (lambda t: F.hardtanh(t, -1.0, 2.0), -1.0, 2.0, None),
        "leaky": (lambda t: F.leaky_relu(t, 0.2), None, None, 0.2),
    }[unit]
    x = torch.linspace(-3, 8, 45, dtype=torch.float64)
    kinks = torch.tensor([-1.0, 0.0, 2.0, 6.0], dtype=torch.float64)
    x = x[(x[:, None] - kinks).abs().amin(1) > 0.1]
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: _Unit.apply(v, run, lo, hi, slope, "gradient"), (x,))


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(methods="nope"), "expected methods from"),
        (dict(methods="saliency", steps=3), "taken by none of"),
        (dict(methods="saliency", targets=[[1], [1, 2]]), "same number of targets"),
        (dict(methods="saliency", targets=[1, 2, 3]), "targets for 2 image"),
        (dict(methods="saliency", targets=5000), r"expected targets in \[0, 1000\)"),
        (dict(methods="saliency", output="prob"), "expected output in"),
        (dict(methods="gradcam", layer="features.99"), "has no layer"),
        (dict(methods="integrated_gradients", steps=0), "steps to be an int >= 1"),
        (dict(methods="smoothgrad", base="occlusion"), "smoothgrad's base"),
    ],
)
def test_errors(mnv2, bad, match):
    with pytest.raises(ValueError, match=match):
        attribute(torch.rand(2, 3, 32, 32), mnv2, **bad)


def test_errors_model():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    with pytest.raises(ValueError, match="eval mode"):
        attribute(torch.rand(1, 3, 8, 8), net)
    with pytest.raises(ValueError, match="found no ReLU-family unit"):
        attribute(torch.rand(1, 3, 8, 8), net.eval(), "guided_backprop", targets=0)
    with pytest.raises(TypeError, match="nn.Module or a zoo name"):
        attribute(torch.rand(1, 3, 8, 8), 3)


def test_smoothgrad_equals_its_definition(tiny):
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    r = attribute(
        x,
        tiny,
        "smoothgrad",
        targets=[[0, 4], [1, 2]],
        preprocess=None,
        samples=3,
        noise=0.2,
        generator=torch.Generator().manual_seed(5),
    )
    eps = torch.randn(
        (3,) + tuple(x.shape), generator=torch.Generator().manual_seed(5), dtype=x.dtype
    )
    sigma = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    for k in range(2):
        grads = []
        for s in range(3):
            xs = (x + sigma.view(2, 1, 1, 1) * eps[s]).requires_grad_(True)
            idx = torch.tensor([[[0, 4], [1, 2]][b][k] for b in range(2)])[:, None]
            out = tiny(xs).gather(1, idx)
            grads.append(torch.autograd.grad(out.sum(), xs)[0])
        g = torch.stack(grads)
        torch.testing.assert_close(r.gradients["smoothgrad"][:, k], g.mean(0))
        torch.testing.assert_close(r.maps["smoothgrad"][:, k], g.abs().amax(2).mean(0))
    zero = attribute(
        x,
        tiny,
        ["smoothgrad", "guided_backprop"],
        targets=1,
        preprocess=None,
        samples=2,
        noise=0.0,
        base="guided_backprop",
    )
    torch.testing.assert_close(zero.maps["smoothgrad"], zero.maps["guided_backprop"])


def test_guided_gradcam_is_guided_times_upsampled_cam(mnv2):
    x = torch.rand(1, 3, 64, 64)
    r = attribute(x, mnv2, ["guided_gradcam", "guided_backprop", "gradcam"], targets=[[5, 9]])
    prod = r.gradients["guided_backprop"] * r.maps["gradcam"][:, :, None]
    torch.testing.assert_close(r.gradients["guided_gradcam"], prod)
    assert (r.maps["gradcam"] >= 0).all()
    raw = attribute(x, mnv2, "gradcam", targets=[[5, 9]], relu=False).info["gradcam"]
    torch.testing.assert_close(r.info["gradcam"]["layer_maps"], raw["layer_maps"].clamp(min=0))


def test_result_save_and_summary(mnv2, tmp_path):
    import numpy as np

    from pyinvert.io import load_image

    r = attribute(
        [sample_path("chelsea")],
        mnv2,
        ["saliency", "occlusion"],
        size=64,
        targets=[[281, 285]],
        window=16,
        stride=16,
    )
    assert r.names == ["chelsea"] and "tabby" in r.summary()
    paths = r.save(tmp_path)
    assert (tmp_path / "chelsea_saliency_281.png").is_file()
    np.testing.assert_array_equal(
        np.load(tmp_path / "chelsea_occlusion.npy"), r.maps["occlusion"][0].numpy()
    )
    assert load_image(tmp_path / "chelsea_grid.png").shape[1] > 2 * 64
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(paths) == 1 + 4 + 2 + 1


ALL_OPTS = {
    "integrated_gradients": dict(steps=3),
    "occlusion": dict(window=4, stride=4),
    "smoothgrad": dict(samples=2),
}
ALL = [
    "saliency",
    "deconvnet",
    "guided_backprop",
    "gradcam",
    "guided_gradcam",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
]


@pytest.mark.parametrize("method", ALL)
def test_empty_and_non_contiguous_inputs(tiny, method):
    kw = dict(preprocess=None, layer="c2", **ALL_OPTS.get(method, {}))
    empty = attribute(torch.zeros(0, 3, 12, 12, dtype=torch.float64), tiny, method, **kw)
    assert empty.maps[method].shape == (0, 1, 12, 12) and empty.targets.shape == (0, 1)
    x = torch.rand(2, 3, 12, 24, dtype=torch.float64)[:, :, :, ::2]
    assert not x.is_contiguous()
    a = attribute(
        x, tiny, method, targets=[[1, 2]] * 2, generator=torch.Generator().manual_seed(0), **kw
    )
    b = attribute(
        x.contiguous(),
        tiny,
        method,
        targets=[[1, 2]] * 2,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    torch.testing.assert_close(a.maps[method], b.maps[method])


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "gradcam"])
def test_batched_backward_equals_per_target_loop(tiny, method, monkeypatch):
    """The GPU path (one vmapped backward for all targets) against the CPU loop."""
    from pyinvert.attribution import core

    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    kw = dict(targets=[[0, 1, 4], [2, 3, 3]], preprocess=None, layer="c2")
    loop = attribute(x, tiny, method, **kw)
    monkeypatch.setattr(core, "BATCHED_BACKWARD_ON_CPU", True)
    batched = attribute(x, tiny, method, **kw)
    torch.testing.assert_close(batched.maps[method], loop.maps[method])
