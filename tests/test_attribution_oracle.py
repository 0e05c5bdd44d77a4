"""captum (test-only dependency) as the oracle where captum is right: saliency, integrated
gradients, occlusion and Grad-CAM on zoo networks with nn.ReLU (random weights); and the
incremental occlusion against the full recomputation."""

import pytest
import torch
from torch import nn

from pyinvert.attribution import attribute
from pyinvert.models import load_model, normalize

captum = pytest.importorskip("captum.attr")
torch.set_num_threads(1)

TARGETS = [[3, 7], [11, 3]]


class _Norm(nn.Module):
    def forward(self, x):
        return normalize(x)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = load_model("resnet18")
    return net, nn.Sequential(_Norm(), net).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64)


def _per_target(fn):
    return torch.stack([fn(torch.tensor([t[k] for t in TARGETS])) for k in range(2)], 1)


def _close(ours, theirs, tol=1e-5):
    err = (ours - theirs).abs().max().item()
    assert err <= tol * max(1.0, theirs.abs().max().item()), err


def test_saliency_equals_captum(resnet, images):
    net, wrapped = resnet
    r = attribute(images, net, "saliency", targets=TARGETS)
    sal = captum.Saliency(wrapped)
    ref = _per_target(lambda t: sal.attribute(images.clone(), target=t, abs=True).amax(1))
    _close(r.maps["saliency"], ref)


def test_integrated_gradients_equals_captum(resnet, images):
    net, wrapped = resnet
    r = attribute(images, net, "integrated_gradients", targets=TARGETS, steps=8)
    ig = captum.IntegratedGradients(wrapped)
    ref = _per_target(
        lambda t: ig.attribute(
            images.clone(), baselines=0.0, target=t, n_steps=8, method="gausslegendre"
        )
    )
    _close(r.gradients["integrated_gradients"], ref)
    delta = r.info["integrated_gradients"]["score_difference"]
    res = r.info["integrated_gradients"]["completeness_residual"]
    torch.testing.assert_close(r.gradients["integrated_gradients"].flatten(2).sum(2) - delta, res)


def test_integrated_gradients_completeness_improves_with_steps(resnet, images):
    net, _ = resnet
    few = attribute(
        images[:1], net, "integrated_gradients", targets=3, steps=2, ig_method="riemann_right"
    )
    many = attribute(
        images[:1], net, "integrated_gradients", targets=3, steps=64, ig_method="riemann_right"
    )
    r_few = few.info["integrated_gradients"]["completeness_residual"].abs().item()
    r_many = many.info["integrated_gradients"]["completeness_residual"].abs().item()
    assert r_many < r_few


@pytest.mark.parametrize("window,stride,batch", [(16, 8, 64), (24, 18, 1)])
def test_occlusion_equals_captum(resnet, images, window, stride, batch):
    """(24, 18): the last window is cut at the border, and one copy per batch."""
    net, wrapped = resnet
    occ = captum.Occlusion(wrapped)
    ref = _per_target(
        lambda t: occ.attribute(
            images.clone(),
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,
            target=t,
            perturbations_per_eval=16,
        )[:, 0]
    )
    for incremental in (False, True):
        r = attribute(
            images,
            net,
            "occlusion",
            targets=TARGETS,
            window=window,
            stride=stride,
            incremental=incremental,
            batch_size=batch,
        )
        assert r.info["occlusion"]["incremental"] is incremental
        _close(r.maps["occlusion"], ref)


def test_gradcam_equals_captum(resnet, images):
    net, wrapped = resnet
    r = attribute(images, net, "gradcam", targets=TARGETS, layer="layer3")
    gc = captum.LayerGradCam(wrapped, net.layer3)
    ref = _per_target(
        lambda t: gc.attribute(images.clone(), target=t, relu_attributions=True)[:, 0]
    )
    _close(r.info["gradcam"]["layer_maps"], ref)
    up = torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear", align_corners=False)
    _close(r.maps["gradcam"], up)


@pytest.mark.parametrize("name,size", [("mobilenet_v2", 96), ("alexnet", 72), ("vgg16", 40)])
def test_incremental_occlusion_equals_full(name, size):
    torch.manual_seed(2)
    from tests.test_attribution import imagenet_mobilenet_or_skip

    net = imagenet_mobilenet_or_skip() if name == "mobilenet_v2" else load_model(name)
    x = torch.rand(1, 3, size, size)
    kw = dict(targets=[[1, 2]], window=16, stride=8, baseline=0.5)
    a = attribute(x, net, "occlusion", incremental=False, **kw).maps["occlusion"]
    b = attribute(x, net, "occlusion", incremental=True, **kw).maps["occlusion"]
    _close(b, a)
    assert a.abs().max() > 0


def test_occlusion_errors(resnet):
    net, _ = resnet
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="no larger than the image"):
        attribute(x, net, "occlusion", window=32)
    with pytest.raises(ValueError, match="incremental occlusion supports"):
        attribute(
            x,
            nn.Sequential(nn.Flatten(), nn.Linear(768, 4)).eval(),
            "occlusion",
            window=4,
            stride=4,
            incremental=True,
        )
    with pytest.raises(TypeError, match="window to be an int"):
        attribute(x, net, "occlusion", window=2.5)


def test_occlusion_probability_drop_equals_captum(resnet, images):
    net, wrapped = resnet
    soft = nn.Sequential(wrapped, nn.Softmax(1)).eval()
    occ = captum.Occlusion(soft)
    ref = _per_target(
        lambda t: occ.attribute(
            images.clone(),
            sliding_window_shapes=(3, 16, 16),
            strides=(3, 16, 16),
            baselines=0.5,
            target=t,
        )[:, 0]
    )
    r = attribute(
        images,
        net,
        "occlusion",
        targets=TARGETS,
        window=16,
        stride=16,
        baseline=0.5,
        output="probability",
    )
    _close(r.maps["occlusion"], ref)
