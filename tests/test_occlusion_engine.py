"""The inference form behind incremental occlusion (pyinvert.attribution.fold) against the
modules it replaces, the engine against the plain re-run on MobileNetV2 geometry corners, and
Grad-CAM's layer-only gradients against the full graph's."""

import pytest
import torch
from torch import nn

from pyinvert.attribution import attribute
from pyinvert.attribution.core import gradient_pass
from pyinvert.attribution import fold
from pyinvert.attribution.fold import Inverted, Local, convert, fold_bn
from pyinvert.attribution.incremental import IncrementalOcclusion
from pyinvert.models import load_model, normalize
from pyinvert.models.mobilenetv2 import InvertedResidual

torch.set_num_threads(1)


def _randomize_bn(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return module.eval()


def _close(a, b, tol=1e-5):
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("bias", [False, True])
def test_fold_bn_equals_conv_then_bn(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=bias)
    bn = _randomize_bn(nn.BatchNorm2d(7))
    x = torch.randn(2, 5, 9, 8)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        _close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)))


@pytest.mark.parametrize("groups,k,stride", [(1, 1, 1), (6, 3, 1), (6, 3, 2), (1, 3, 2)])
def test_local_equals_modules_at_any_shape(groups, k, stride):
    """oneDNN's packed weight is reordered for the first input; later shapes and padding 0
    (the patches) must give the modules' result too."""
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 12, k, stride, (k - 1) // 2, groups=groups, bias=False)
    seq = _randomize_bn(nn.Sequential(conv, nn.BatchNorm2d(12), nn.ReLU6()))
    step = convert(seq)
    assert len(step) == 1 and isinstance(step[0], Local)
    with torch.inference_mode():
        for shape in [(4, 6, 14, 14), (1, 6, 9, 11), (3, 6, 5, 5)]:
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
            _close(step[0].full(x), seq(x))
            crop = x[:, :, 1:, 1:]  # no padding: the engine's patch path
            ref = seq[2](
                seq[1](nn.functional.conv2d(crop, conv.weight, None, stride, 0, 1, groups))
            )
            _close(step[0].apply(crop, padding=0), ref)


@pytest.mark.parametrize("cin,cout,stride,t", [(16, 16, 1, 6), (16, 24, 2, 6), (32, 16, 1, 1)])
def test_inverted_step_equals_block(cin, cout, stride, t):
    torch.manual_seed(2)
    block = _randomize_bn(InvertedResidual(cin, cout, stride, t))
    (step,) = convert(block)
    assert isinstance(step, Inverted) and step.residual is block.use_res_connect
    x = torch.randn(2, cin, 12, 10)
    with torch.inference_mode():
        _close(step.full(x.contiguous(memory_format=torch.channels_last)), block(x))


@pytest.mark.parametrize("chunk", [None, 3, 1, 9])
@pytest.mark.parametrize("cin,cout,stride,t", [(16, 16, 1, 6), (16, 24, 2, 6)])
def test_tail_form_equals_block_and_keeps_no_large_weight(cin, cout, stride, t, chunk, monkeypatch):
    """The tail's form (keep=False: 1x1 convolutions as matrix products with the model's
    weight, the expanded maps ``chunk`` images at a time) equals the block, non-contiguous
    input included, and keeps no copy of a 1x1 weight above ``SMALL``."""
    monkeypatch.setattr(fold, "SMALL", 0)
    torch.manual_seed(4)
    block = _randomize_bn(InvertedResidual(cin, cout, stride, t))
    (step,) = convert(block)
    x = torch.randn(7, cin, 11, 12)
    with torch.inference_mode():
        _close(step.full(x.contiguous(memory_format=torch.channels_last), False, chunk), block(x))
        _close(step.full(x.transpose(2, 3), False, chunk), block(x.transpose(2, 3)))
    assert step.expand.weight is None and not step.expand.packed
    assert step.project.weight is None and not step.project.packed


def test_convert_leaves_the_model_unchanged():
    torch.manual_seed(3)
    net = _randomize_bn(load_model("mobilenet_v2"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    attribute(torch.rand(1, 3, 48, 48), net, "occlusion", window=16, stride=16, targets=1)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("window,stride,batch", [(12, 7, 3), (20, 20, 8), (8, 4, 16)])
def test_incremental_occlusion_equals_plain_random_mobilenet(window, stride, batch):
    """Border-cut windows, several batch sizes, a non-constant baseline; random weights with
    random BatchNorm statistics (so the folding is exercised)."""
    torch.manual_seed(4)
    net = _randomize_bn(load_model("mobilenet_v2"))
    x = torch.rand(2, 3, 56, 56)
    base = torch.rand(1, 3, 56, 56)
    kw = dict(targets=[[1, 5], [7, 1]], window=window, stride=stride, baseline=base)
    a = attribute(x, net, "occlusion", incremental=False, batch_size=batch, **kw)
    b = attribute(x, net, "occlusion", incremental=True, batch_size=batch, **kw)
    assert b.info["occlusion"]["incremental"]
    _close(b.maps["occlusion"], a.maps["occlusion"])
    assert a.maps["occlusion"].abs().max() > 0


@pytest.mark.parametrize("small", [0, fold.SMALL])
def test_engine_logits_equal_the_model_on_occluded_copies(small, monkeypatch):
    """The engine's logits against the model on the occluded copies, with the incremental
    stages run 3 boxes at a time and the tail on all 7 at once, 2 expanded maps at a time;
    small=0: every 1x1 convolution of the tail as a matrix product."""
    monkeypatch.setattr(fold, "SMALL", small)
    torch.manual_seed(8)
    net = _randomize_bn(load_model("mobilenet_v2"))
    x, base = torch.rand(3, 64, 64), torch.rand(3, 64, 64)
    boxes = [(0, 0, 0, 0), (0, 16, 0, 16), (8, 24, 40, 56), (48, 64, 48, 64)]
    boxes += [(56, 64, 0, 16), (0, 16, 60, 64), (30, 46, 30, 46)]
    engine = IncrementalOcclusion.for_model(net, normalize, chunk=2, patches=3)
    with torch.inference_mode():
        got = engine.prepare(x, base, (16, 16))(boxes)
        xs = x.expand(len(boxes), -1, -1, -1).clone()
        for i, (y0, y1, x0, x1) in enumerate(boxes):
            xs[i, :, y0:y1, x0:x1] = base[:, y0:y1, x0:x1]
        want = net(normalize(xs))
    _close(got, want)


def test_gradcam_layer_only_equals_full_graph():
    torch.manual_seed(5)
    net = load_model("mobilenet_v2")
    x = torch.rand(2, 3, 64, 64)
    layer = net.features[18]
    full = gradient_pass(net, normalize, x, [[1, 2], [3, 4]], layer=layer)
    head = gradient_pass(net, normalize, x, [[1, 2], [3, 4]], layer=layer, input_grad=False)
    assert head["input_grad"] is None
    torch.testing.assert_close(head["layer_grad"], full["layer_grad"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(head["activation"], full["activation"])
    with pytest.raises(ValueError, match="input_grad=False needs a layer"):
        gradient_pass(net, normalize, x, 1, input_grad=False)


def test_gradcam_with_an_in_place_unit_after_its_layer():
    torch.manual_seed(6)

    def net(inplace):
        torch.manual_seed(7)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        ).eval()

    x = torch.rand(2, 3, 16, 16)
    a = attribute(x, net(True), "gradcam", targets=[[0, 3], [1, 2]], layer="2", preprocess=None)
    b = attribute(x, net(False), "gradcam", targets=[[0, 3], [1, 2]], layer="2", preprocess=None)
    torch.testing.assert_close(a.maps["gradcam"], b.maps["gradcam"])
