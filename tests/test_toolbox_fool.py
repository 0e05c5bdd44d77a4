"""fool(): targeted PGD against torchattacks' PGD (the test-only oracle) on the same model,
epsilon and steps; every image reaches its target within the ball, in no more steps than
the oracle."""

import pytest
import torch
from torch import nn

import pyinvert
from pyinvert.data import sample_path
from pyinvert.models import load_model, prepare_image
from pyinvert.toolbox.fooling import Normalized, project

torchattacks = pytest.importorskip("torchattacks")

SAMPLES = ["camera", "chelsea", "coffee", "rocket", "astronaut"]
TARGETS = [1, 949, 281, 409, 530]  # goldfish, strawberry, tabby, analog clock, digital clock


def small_net(dtype=torch.float64):
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 10),
        )
        .to(dtype)
        .eval()
    )


def oracle_pgd(model, x, target, eps, alpha, steps):
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    attack.set_mode_targeted_by_label(quiet=True)
    return attack(x, target)


@pytest.mark.parametrize("norm", ["linf"])
def test_matches_oracle_pgd_float64(norm):
    net = small_net()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 7, 0, 9])
    eps, steps = 8 / 255, 10
    r = pyinvert.fool(x, net, t, eps=eps, steps=steps, normalize=False, early_stop=False)
    adv = oracle_pgd(net, x, t, eps, 2.5 * eps / steps, steps)
    assert (r.images - adv).abs().max() < 1e-9
    assert r.iterations.tolist() == [steps] * 4
    assert r.perturbations.abs().max() <= eps + 1e-12


def test_l2_stays_in_ball_and_raises_target_probability():
    net = small_net()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 2, 3])
    with torch.no_grad():
        before = net(x).softmax(1)[torch.arange(3), t]
    r = pyinvert.fool(x, net, t, eps=0.5, steps=20, norm="l2", normalize=False, early_stop=False)
    assert (r.perturbations.flatten(1).norm(dim=1) <= 0.5 + 1e-9).all()
    assert (r.images >= 0).all() and (r.images <= 1).all()
    assert (r.target_probabilities > before).all()


def test_project():
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(project(d, 1.0, "l2"), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert torch.equal(project(d, 0.35, "linf"), torch.tensor([[0.35, 0.35], [0.3, 0.35]]))


@pytest.fixture(scope="module")
def mobilenet():
    return load_model("mobilenet_v2", weights="imagenet")


def test_every_photo_reaches_its_target_like_the_oracle_in_no_more_steps(mobilenet):
    # "No slower" as work, not a timed test: at most the oracle's gradient steps per image
    # (bench/bench_toolbox.py measures steps/s against it).
    x = torch.stack([prepare_image(sample_path(n), 96) for n in SAMPLES])
    t = torch.tensor(TARGETS)
    eps, steps = 8 / 255, 10
    r = pyinvert.fool(x, mobilenet, t, eps=eps, steps=steps)
    adv = oracle_pgd(Normalized(mobilenet).eval(), x, t, eps, 2.5 * eps / steps, steps)
    with torch.no_grad():
        oracle_hits = Normalized(mobilenet)(adv).argmax(1) == t
    assert oracle_hits.all()
    assert r.success.all(), (r.classes, t)
    assert r.perturbations.abs().max() <= eps + 1e-6
    assert (r.iterations <= steps).all() and (r.iterations >= 1).all()
    fig = r.figure(height=96)
    assert fig.ndim == 3 and fig.shape[2] == 3 and fig.shape[1] > 3 * 96


def test_early_stop_freezes_images_that_reached_the_target():
    net = small_net()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = net(x).argmax(1)  # already the target: no step is taken
    r = pyinvert.fool(x, net, t, normalize=False)
    assert r.iterations.tolist() == [0, 0] and torch.equal(r.images, x)


def test_random_start_is_seeded():
    net = small_net()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    a = pyinvert.fool(
        x,
        net,
        1,
        normalize=False,
        random_start=True,
        early_stop=False,
        steps=2,
        generator=torch.Generator().manual_seed(5),
    )
    b = pyinvert.fool(
        x,
        net,
        1,
        normalize=False,
        random_start=True,
        early_stop=False,
        steps=2,
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.equal(a.images, b.images)


def test_errors():
    net = small_net(torch.float32)
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"fool: expected norm in \('linf', 'l2'\)"):
        pyinvert.fool(x, net, 1, norm="l1", normalize=False)
    with pytest.raises(ValueError, match="fool: expected eps > 0"):
        pyinvert.fool(x, net, 1, eps=0, normalize=False)
    with pytest.raises(ValueError, match=r"fool: expected targets in \[0, 9\]"):
        pyinvert.fool(x, net, 10, normalize=False)
    with pytest.raises(ValueError, match="fool: expected 2 targets"):
        pyinvert.fool(x, net, [1, 2, 3], normalize=False)
    with pytest.raises(TypeError, match="fool: expected model"):
        pyinvert.fool(x, 3, 1)
    with pytest.raises(ValueError, match="fool: expected RGB images"):
        pyinvert.fool(torch.rand(1, 1, 8, 8), net, 1)
