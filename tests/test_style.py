"""The style objectives (Gram, StyleLoss, ContentLoss) against a plain reference, gradcheck,
zero at the target, the algebra; style_transfer on the real MobileNetV2: the content is kept
while the Gram error falls, larger style weights move toward the style, a pair is the same
alone and in a batch; errors name the function."""

import doctest
import glob
import os

import pytest
import torch

import pyinvert
from pyinvert import Code, io
from pyinvert.cli.common import fit
from pyinvert.objectives import ContentLoss, Gram, ImagePrior, StyleLoss, gram_matrix
from pyinvert.objectives import style as style_module
from pyinvert.tasks import style as style_task
from pyinvert.tasks import texture as texture_task

PHOTOS = sorted(glob.glob(os.path.join(os.path.dirname(pyinvert.__file__), "data", "*.png")))


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def photo(path, size):
    t = io.load_image(path).float()
    return fit(t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3], size)


def maps(seed, B=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.rand(B, 4, 5, 6, generator=g, dtype=dtype),
        "b": torch.rand(B, 6, 3, 3, generator=g, dtype=dtype),
    }


def reference_gram_loss(code, target, weights):
    """Gatys 2015 eq. (4)-(5) literally: E_l = 1/(4 N^2 M^2) sum (F F^T - F0 F0^T)^2 per
    image, with unnormalized Gram matrices, looped."""
    B = next(iter(code.values())).shape[0]
    out = []
    for b in range(B):
        total = 0.0
        for k, w in weights.items():
            N = code[k].shape[1]
            F = code[k][b].reshape(N, -1)
            F0 = target[k][b].reshape(N, -1)
            M = F.shape[1]
            total = total + w * ((F @ F.T - F0 @ F0.T) ** 2).sum() / (4 * N**2 * M**2)
        out.append(total)
    return torch.stack(out)


def test_gram_matrix_against_a_loop():
    x = maps(0)["a"]
    G = gram_matrix(x)
    for b in range(3):
        F = x[b].reshape(4, -1)
        assert torch.allclose(G[b], F @ F.T / 30)
    assert torch.equal(gram_matrix(x.transpose(2, 3).contiguous().transpose(2, 3)), G)
    assert gram_matrix(torch.zeros(0, 4, 2, 2)).shape == (0, 4, 4)


@pytest.mark.parametrize(
    "cls, weights", [(Gram, {"a": 1.0, "b": 1.0}), (StyleLoss, {"a": 0.5, "b": 0.5})]
)
def test_gram_and_style_loss_against_the_reference(cls, weights):
    code, target = maps(1), maps(2)
    term = cls.from_maps(target)
    assert term.weights == weights
    loss, measure = term.evaluate(Code(code), None)
    assert torch.allclose(loss, reference_gram_loss(code, target, weights))
    rel = term.layer_errors(Code(code))
    for k in code:
        G, G0 = gram_matrix(code[k]), gram_matrix(target[k])
        assert torch.allclose(rel[k], ((G - G0) ** 2).sum((1, 2)) / (G0**2).sum((1, 2)))
    assert torch.allclose(measure, (rel["a"] + rel["b"]) / 2)
    custom = cls.from_maps(target, weights={"b": 3.0})
    assert torch.allclose(
        custom(Code(code), None), reference_gram_loss(code, target, {"a": 0.0, "b": 3.0})
    )


def test_content_loss_against_the_reference():
    code, target = maps(3), maps(4)
    loss, measure = ContentLoss(target, weights=[2.0, 1.0]).evaluate(Code(code), None)
    ref = sum(
        w * 0.5 * ((code[k] - target[k]) ** 2).sum((1, 2, 3)) / target[k][0].numel()
        for k, w in (("a", 2.0), ("b", 1.0))
    )
    assert torch.allclose(loss, ref)
    rel = sum(
        ((code[k] - target[k]) ** 2).sum((1, 2, 3)) / (target[k] ** 2).sum((1, 2, 3)) for k in code
    )
    assert torch.allclose(measure, rel)


def test_zero_at_the_target_and_flat_codes():
    m = maps(5)
    shapes = {k: tuple(v.shape[1:]) for k, v in m.items()}
    flat = Code(m).flat
    for term in (
        Gram.from_maps(m, shapes=shapes),
        StyleLoss.from_maps(m, shapes=shapes),
        ContentLoss(m, shapes=shapes),
    ):
        assert torch.equal(term(flat, None), torch.zeros(3, dtype=torch.float64))
        assert torch.equal(term(Code(m), None), term(flat, None))
    one = Gram.from_maps({"a": m["a"]}, shapes={"a": shapes["a"]})
    assert torch.equal(one(m["a"], None), torch.zeros(3, dtype=torch.float64))


def test_gradcheck():
    m, t = maps(6, B=2), maps(7, B=2)
    shapes = {k: tuple(v.shape[1:]) for k, v in m.items()}
    obj = ContentLoss(t, shapes=shapes) + 1e3 * StyleLoss.from_maps(t, shapes=shapes)
    flat = Code(m).flat.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: obj(c, None), (flat,))
    assert torch.autograd.gradcheck(gram_matrix, (m["b"].requires_grad_(True),))


def test_algebra_and_per_row_weights():
    m, t = maps(8), maps(9)
    w = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    obj = ContentLoss(t) + w * StyleLoss.from_maps(t) + ImagePrior(tv_weight=1e-3)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    loss, measure = obj.evaluate(Code(m), x)
    parts = (
        ContentLoss(t)(Code(m), x)
        + w * StyleLoss.from_maps(t)(Code(m), x)
        + ImagePrior(tv_weight=1e-3)(None, x)
    )
    assert torch.allclose(loss, parts)
    assert torch.allclose(measure, ContentLoss(t).evaluate(Code(m), x)[1])
    rep = obj.repeat_rows(2)
    assert rep.terms[1].weight.tolist() == [1.0, 1.0, 10.0, 10.0, 100.0, 100.0]
    assert rep.terms[1].term.targets["a"].shape[0] == 6
    assert "StyleLoss(a, b)" in obj.describe()


def test_objective_errors():
    m = maps(10)
    with pytest.raises(TypeError, match="Gram: expected targets as a non-empty dict"):
        Gram({})
    with pytest.raises(ValueError, match="Gram: expected the target of 'a' to be Gram"):
        Gram({"a": torch.rand(2, 3)})
    with pytest.raises(ValueError, match="Gram: expected square Gram matrices for 'a'"):
        Gram({"a": torch.rand(2, 3, 4)})
    with pytest.raises(ValueError, match=r"StyleLoss: expected 2 layer weights"):
        StyleLoss.from_maps(m, weights=[1.0])
    with pytest.raises(ValueError, match=r"Gram: weights for unknown layers \['c'\]"):
        Gram.from_maps(m, weights={"c": 1.0})
    with pytest.raises(ValueError, match=r"Gram: layers \['b'\] are not in shapes"):
        Gram.from_maps(m, shapes={"a": (4, 5, 6)})
    with pytest.raises(ValueError, match="Gram: got a code Tensor but no layer shapes"):
        Gram.from_maps(m)(torch.rand(3, 10), None)
    with pytest.raises(ValueError, match="ContentLoss: expected targets of one batch size"):
        ContentLoss({"a": torch.rand(2, 3, 4), "b": torch.rand(3, 3, 4)})
    with pytest.raises(ValueError, match="gram_matrix: expected features of shape"):
        gram_matrix(torch.rand(3, 4))
    with pytest.raises(ValueError, match="gram_matrix: expected at least one position"):
        gram_matrix(torch.rand(1, 3, 0, 4))


@pytest.mark.parametrize("module", [style_module, style_task, texture_task])
def test_doctests(module):
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---- style transfer on the real MobileNetV2 --------------------------------------------------


def test_style_sweep_keeps_the_content_and_moves_toward_the_style(imagenet_mobilenet):
    content, style = photo(PHOTOS[2], 64)[None], photo(PHOTOS[3], 80)[None]
    weights = torch.tensor([1e1, 1e2, 1e3])
    res = pyinvert.style_transfer(
        content, style, imagenet_mobilenet, style_weight=weights, steps=60, progress=False
    )
    assert res.images.shape == (3, 3, 64, 64) and not res.failed.any()
    gram = res.gram_error.mean(1)
    # Gram error falls (>= 5x at every weight) while the content error stays small ...
    assert (gram * 5 < res.initial_gram_error.mean(1)).all(), gram
    assert (res.content_error < 0.35).all(), res.content_error
    # ... and larger style weights move monotonically toward the style
    assert (gram[1:] < gram[:-1]).all() and (res.content_error[1:] > res.content_error[:-1]).all()
    assert res.summary()["style_weight"] == [10.0, 100.0, 1000.0]


def test_large_style_weights_saturate_at_the_style_only_result(imagenet_mobilenet):
    # the documented saturation (tasks/style.py STYLE_WEIGHT): once the content term is a
    # negligible part of the loss, the result is the style-only run's (content_weight 0) at
    # the same iterations; a small weight is far from it
    content, style = photo(PHOTOS[2], 64)[None], photo(PHOTOS[3], 80)[None]
    res = pyinvert.style_transfer(
        content,
        style,
        imagenet_mobilenet,
        style_weight=torch.tensor([1e1, 1e4]),
        steps=60,
        progress=False,
    )
    limit = pyinvert.style_transfer(
        content,
        style,
        imagenet_mobilenet,
        style_weight=1.0,
        content_weight=0.0,
        steps=60,
        progress=False,
    )
    gram, limit_gram = res.gram_error.mean(1), limit.gram_error.mean(1)[0]
    assert (gram[1] - limit_gram).abs() < 0.05 * limit_gram, (gram, limit_gram)
    assert (res.content_error[1] - limit.content_error[0]).abs() < 0.05 * limit.content_error[0]
    assert gram[0] > 2 * limit_gram and res.content_error[0] < 0.5 * limit.content_error[0]


def test_pairs_batched_equal_alone_and_noise_init(imagenet_mobilenet):
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False  # oneDNN convolutions are not batch-invariant
    try:
        contents = torch.stack([photo(PHOTOS[0], 64), photo(PHOTOS[2], 64)])
        styles = torch.stack([photo(PHOTOS[3], 64), photo(PHOTOS[4], 64)])
        both = pyinvert.style_transfer(
            contents,
            styles,
            imagenet_mobilenet,
            steps=6,
            init="noise",
            seeds=[1, 2],
            progress=False,
        )
        alone = pyinvert.style_transfer(
            contents[1:],
            styles[1:],
            imagenet_mobilenet,
            steps=6,
            init="noise",
            seeds=[2],
            progress=False,
        )
    finally:
        torch.backends.mkldnn.enabled = was
    assert torch.equal(both.images[1:], alone.images)
    assert torch.equal(both.gram_error[1:], alone.gram_error)
    assert (both.initial_gram_error > both.gram_error).all()


def test_style_errors():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    c, s = torch.rand(2, 3, 16, 16), torch.rand(3, 3, 16, 16)
    kw = dict(content_layers=["1"], style_layers=["1"], progress=False, steps=2)
    with pytest.raises(
        ValueError,
        match=r"style_transfer: expected the numbers of content "
        r"images, style images.*\[2, 3, 1, 1\]",
    ):
        pyinvert.style_transfer(c, s, net, **kw)
    with pytest.raises(ValueError, match="style_transfer: expected init in"):
        pyinvert.style_transfer(c, s[:1], net, init="zeros", **kw)
    with pytest.raises(
        ValueError,
        match=r"style_transfer: expected style_weight to be a "
        r"float or of shape \(2,\)",
    ):
        pyinvert.style_transfer(c, s[:1], net, style_weight=torch.ones(2, 1), **kw)
    with pytest.raises(
        TypeError, match="style_transfer: expected content_weight to be a float or a Tensor"
    ):
        pyinvert.style_transfer(c, s[:1], net, content_weight="1", **kw)
    with pytest.raises(ValueError, match="style_transfer: no default content layers"):
        pyinvert.style_transfer(c, s[:1], net, progress=False)
