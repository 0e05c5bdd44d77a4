"""Composable objectives (pyinvert.objectives): the algebra equals the hand-computed losses,
per-row weights, masks (gradients only reach the window's receptive field), the data terms'
values, and the priors' fused path."""

import pytest
import torch
from torch import nn

from pyinvert import reference
from pyinvert.representations.cnn import CNN
from pyinvert.objectives import (
    Activation,
    AlphaNorm,
    Caricature,
    ClassLogProbability,
    DeepDream,
    Direction,
    ImagePrior,
    Inversion,
    Scaled,
    Sum,
    TotalVariation,
    inversion_objective,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def codes(N=3, shape=(4, 5, 5), seed=0):
    g = gen(seed)
    return torch.randn(N, *shape, generator=g), torch.randn(N, *shape, generator=g)


def test_inversion_value():
    code, target = codes()
    loss, measure = Inversion(target).evaluate(code, None)
    expected = ((code - target) ** 2).flatten(1).sum(1) / (target**2).flatten(1).sum(1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(measure, expected)
    # a zero target: the denominator becomes 1
    loss, _ = Inversion(torch.zeros_like(target)).evaluate(code, None)
    torch.testing.assert_close(loss, (code**2).flatten(1).sum(1))


def test_inversion_segments_sum_the_per_layer_normalized_terms():
    g = gen(1)
    code, target = torch.randn(2, 10, generator=g), torch.randn(2, 10, generator=g)
    loss, _ = Inversion(target, segments=[(0, 4), (4, 10)]).evaluate(code, None)
    e = (code - target) ** 2
    t = target**2
    expected = e[:, :4].sum(1) / t[:, :4].sum(1) + e[:, 4:].sum(1) / t[:, 4:].sum(1)
    torch.testing.assert_close(loss, expected)


def test_inversion_mask_shared_and_per_row():
    code, target = codes()
    mask = (torch.rand(4, 5, 5, generator=gen(2)) > 0.5).float()
    loss, _ = Inversion(target, mask=mask).evaluate(code, None)
    expected = ((mask * (code - target)) ** 2).flatten(1).sum(1) / ((mask * target) ** 2).flatten(
        1
    ).sum(1)
    torch.testing.assert_close(loss, expected)
    per_row = mask.expand(3, -1, -1, -1).clone()
    per_row[1] = 1.0
    loss2, _ = Inversion(target, mask=per_row).evaluate(code, None)
    torch.testing.assert_close(loss2[[0, 2]], expected[[0, 2]])
    torch.testing.assert_close(loss2[1], Inversion(target).evaluate(code, None)[0][1])
    with pytest.raises(
        ValueError,
        match=r"Inversion: expected mask of shape \[4, 5, 5\] "
        r"\(one code\) or \[3, 4, 5, 5\], got \[5, 5\]",
    ):
        Inversion(target, mask=torch.ones(5, 5))
    with pytest.raises(TypeError, match="Inversion: expected targets to be a Tensor, got list"):
        Inversion([1.0])
    with pytest.raises(TypeError, match="Inversion: expected mask to be a Tensor, got float"):
        Inversion(target, mask=1.0)


def test_algebra_equals_hand_computed_losses():
    code, target = codes()
    x = torch.randn(3, 3, 8, 8, generator=gen(3)) * 50
    inv = Inversion(target)
    dream = DeepDream()
    l_inv = inv(code, x)
    l_dream = dream(code, x)
    torch.testing.assert_close((inv + 0.1 * dream)(code, x), l_inv + 0.1 * l_dream)
    torch.testing.assert_close((inv * 3 + dream * 2)(code, x), 3 * l_inv + 2 * l_dream)
    torch.testing.assert_close((inv - dream)(code, x), l_inv - l_dream)
    torch.testing.assert_close((-inv)(code, x), -l_inv)
    w = torch.tensor([1.0, 20.0, 300.0])
    torch.testing.assert_close((w * inv + dream)(code, x), w * l_inv + l_dream)
    # nested sums flatten; the measure is the first term's
    s = inv + (dream + 2.0 * inv)
    assert isinstance(s, Sum) and len(s.terms) == 3
    loss, measure = s.evaluate(code, x)
    torch.testing.assert_close(loss, 3 * l_inv + l_dream)
    torch.testing.assert_close(measure, l_inv)
    assert "Inversion" in s.describe() and "DeepDream" in s.describe()
    # priors join the sum: TV + norm are fused into one call with the same value
    tv = TotalVariation(1e-3)
    nrm = AlphaNorm(1e-12, alpha=6.0, isotropic=True)
    both = inv + 0.5 * tv + nrm
    assert sum(isinstance(t, ImagePrior) for t in both.terms) == 1
    expected = (
        l_inv
        + 0.5 * reference.image_prior(x, tv_weight=1e-3, beta=2.0)
        + reference.image_prior(x, tv_weight=0.0, norm_weight=1e-12, alpha=6.0, isotropic=True)
    )
    torch.testing.assert_close(both(code, x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        inv + 1.0
    with pytest.raises(TypeError):
        inv * "2"
    with pytest.raises(
        ValueError,
        match=r"Scaled: expected a float or a per-row weight of "
        r"shape \(N,\), got \[3, 1\]",
    ):
        inv * torch.ones(3, 1)


def test_map_rows_select_and_repeat():
    code, target = codes()
    w = torch.tensor([1.0, 2.0, 3.0])
    obj = w * Inversion(target) + ImagePrior(tv_weight=w, beta=2.0)
    x = torch.randn(3, 3, 8, 8, generator=gen(4))
    full = obj(code, x)
    torch.testing.assert_close(obj.select([2, 0])(code[[2, 0]], x[[2, 0]]), full[[2, 0]])
    rep = obj.repeat_rows(2)
    torch.testing.assert_close(
        rep(code.repeat_interleave(2, 0), x.repeat_interleave(2, 0)), full.repeat_interleave(2)
    )
    o64 = obj.to(dtype=torch.float64)
    torch.testing.assert_close(o64(code.double(), x.double()), full.double(), rtol=1e-5, atol=1e-6)


def test_priors_match_the_reference_and_scale_their_weights():
    x = torch.randn(2, 3, 9, 7, generator=gen(5), dtype=torch.float64) * 40
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    p = ImagePrior(tv_weight=1e-2, beta=2.0, norm_weight=1e-10, alpha=6.0, isotropic=True)
    expected = reference.image_prior(
        x, tv_weight=1e-2, beta=2.0, norm_weight=1e-10, alpha=6.0, isotropic=True
    )
    torch.testing.assert_close(p(None, x), expected)
    scaled = w * p
    assert isinstance(scaled, ImagePrior)  # scaling keeps the fused op's fast path
    torch.testing.assert_close(scaled(None, x), w * expected)
    torch.testing.assert_close((-p)(None, x), -expected)
    ref = ImagePrior(
        tv_weight=1e-2, beta=2.0, norm_weight=1e-10, alpha=6.0, isotropic=True, backend="reference"
    )
    torch.testing.assert_close(ref(None, x), expected)
    with pytest.raises(
        ValueError,
        match=r"ImagePrior: expected backend in \('fused', "
        r"'reference'\), got 'cuda'",
    ):
        ImagePrior(backend="cuda")
    with pytest.raises(TypeError, match="ImagePrior: expected a float or a Tensor weight, got str"):
        ImagePrior(tv_weight="1")


def test_inversion_objective_is_the_sum_of_its_parts():
    code, target = codes()
    x = torch.randn(3, 3, 8, 8, generator=gen(6)) * 30
    C = torch.tensor([1.0, 20.0, 100.0])
    obj = inversion_objective(
        target,
        data_weight=C,
        tv_weight=1e-3,
        norm_weight=1e-12,
        beta=2.0,
        alpha=6.0,
        isotropic=True,
    )
    expected = C * Inversion(target)(code, x) + reference.image_prior(
        x, tv_weight=1e-3, beta=2.0, norm_weight=1e-12, alpha=6.0, isotropic=True
    )
    torch.testing.assert_close(obj(code, x), expected, rtol=1e-5, atol=1e-5)


def test_activation_channel_neuron_and_logit():
    g = gen(7)
    fmap = torch.randn(3, 4, 5, 6, generator=g)
    loss, a = Activation(2).evaluate(fmap, None)
    torch.testing.assert_close(a, fmap[:, 2].mean((1, 2)))
    torch.testing.assert_close(loss, -a)
    _, a = Activation(torch.tensor([0, 1, 3]), y=torch.tensor([0, 4, 2]), x=1).evaluate(fmap, None)
    torch.testing.assert_close(
        a, torch.stack([fmap[0, 0, 0, 1], fmap[1, 1, 4, 1], fmap[2, 3, 2, 1]])
    )
    logits = torch.randn(3, 10, generator=g)
    _, a = Activation(torch.tensor([9, 0, 4])).evaluate(logits, None)
    torch.testing.assert_close(a, logits[[0, 1, 2], [9, 0, 4]])
    loss, p = ClassLogProbability(4).evaluate(logits, None)
    torch.testing.assert_close(p, logits.softmax(1)[:, 4])
    torch.testing.assert_close(loss, -logits.log_softmax(1)[:, 4])
    # a one-hot Direction is the same as Activation on logits
    onehot = torch.zeros(10)
    onehot[4] = 1
    torch.testing.assert_close(Direction(onehot)(logits, None), Activation(4)(logits, None))
    with pytest.raises(
        ValueError,
        match=r"Activation: expected channel in \[0, 10\), "
        r"got \[10, 10, 10\]",
    ):
        Activation(10).evaluate(logits, None)
    with pytest.raises(
        ValueError,
        match=r"Activation: expected the neuron inside the 5x6 "
        r"grid, got y=\[5, 5, 5\]",
    ):
        Activation(0, y=5, x=0).evaluate(fmap, None)
    with pytest.raises(ValueError, match="Activation: expected both y and x for a neuron"):
        Activation(0, y=1)
    with pytest.raises(TypeError, match="Activation: expected channel to be an int, got float"):
        Activation(1.5)
    with pytest.raises(
        ValueError,
        match=r"ClassLogProbability: expected logits of shape "
        r"\(N, K\), got \[3, 4, 5, 6\]",
    ):
        ClassLogProbability(0).evaluate(fmap, None)
    with pytest.raises(
        ValueError,
        match=r"Direction: expected a code of shape \[10\] per row, "
        r"got \[4, 5, 6\]",
    ):
        Direction(onehot).evaluate(fmap, None)


def test_caricature_and_deepdream():
    g = gen(8)
    ref = torch.randn(2, 4, 3, 3, generator=g)
    pos = ref.clamp_min(0)
    loss, m = Caricature(ref).evaluate(pos, None)
    torch.testing.assert_close(m, torch.ones(2))  # 1 at the start for a non-negative code
    code = torch.randn(2, 4, 3, 3, generator=g)
    _, m = Caricature(ref).evaluate(code, None)
    expected = (pos * code).flatten(1).sum(1) / (pos**2).flatten(1).sum(1)
    torch.testing.assert_close(m, expected)
    loss, m = DeepDream().evaluate(code, None)
    torch.testing.assert_close(m, code.square().flatten(1).mean(1))
    torch.testing.assert_close(loss, -0.5 * m)


def window_net():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1)
    )


def test_window_mask_gradient_only_reaches_the_receptive_field():
    rep = CNN(window_net(), "2").double()
    g = gen(9)
    x0 = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) * 50
    target = rep(torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) * 50).detach()
    mask = rep.code_mask((16, 16), window=1).double()  # the neuron (1, 1) of a 4x4 grid
    assert torch.nonzero(mask[0]).tolist() == [[1, 1]]
    x = x0.clone().requires_grad_()
    Inversion(target, mask=mask)(rep(x), x).sum().backward()
    # neuron (1, 1) of conv2 (3x3, stride 2, pad 1) sees conv1 rows/cols 1..3, which see
    # input rows/cols 2*1-1 .. 2*3+1 = 1..7
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[1:8, 1:8] = True
    grad = x.grad.abs().sum((0, 1))
    assert float(grad[~inside].max()) == 0.0
    assert bool((grad[inside] > 0).float().mean() > 0.5)


def test_channel_mask_gradient_equals_the_channel_subset_objective():
    rep = CNN(window_net(), "2").double()
    g = gen(10)
    x0 = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) * 50
    target = rep(torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) * 50).detach()
    keep = [0, 3]
    mask = rep.code_mask((16, 16), channels=keep).double()
    x = x0.clone().requires_grad_()
    Inversion(target, mask=mask)(rep(x), x).sum().backward()
    y = x0.clone().requires_grad_()
    Inversion(target[:, keep])(rep(y)[:, keep], y).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_gradcheck_of_the_data_terms():
    rep = CNN(window_net(), "2").double()
    g = gen(11)
    target = torch.randn(1, 5, 2, 2, generator=g, dtype=torch.float64)
    mask = rep.code_mask((8, 8), window=1, channels=[1, 2]).double()
    x = (torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64) * 50).requires_grad_()
    obj = (
        Inversion(target, mask=mask)
        + 0.1 * Caricature(target)
        + Scaled(Activation(1, y=0, x=1), 0.5)
        + DeepDream()
        + ImagePrior(tv_weight=1e-3, norm_weight=1e-12, alpha=6.0, isotropic=True)
    )
    assert torch.autograd.gradcheck(lambda t: obj(rep(t), t), (x,), eps=1e-4, atol=1e-5)
