"""Learned priors: experts, energies, scores, score matching (closed-form Laplacian), ICA
recovery, resumable training, save / load."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from pyinvert.priors import FoE, ICA, SeparableFoE, amari_index, conv_energy, train
from pyinvert.priors import experts, score_matching_loss
from pyinvert.priors.store import load, save

train_module = importlib.import_module("pyinvert.priors.train")

EXPERTS = experts.EXPERTS


def models(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    out = [
        FoE(3, 5, 1, generator=g),
        ICA(3, 7, 2, generator=g),
        SeparableFoE(3, 2, 3, n_pointwise=2, generator=g),
    ]
    for m in out:
        with torch.no_grad():
            m.log_alpha.copy_(torch.randn(m.n, generator=g, dtype=m.log_alpha.dtype) * 0.3)
    return [m.to(dtype) for m in out]


@pytest.mark.parametrize("expert", EXPERTS)
def test_rho_derivatives_match_autograd(expert):
    s = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(experts.rho(s, expert).sum(), s, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), s)
    torch.testing.assert_close(d1, experts.rho_prime(s, expert))
    torch.testing.assert_close(d2, experts.rho_second(s, expert))


def test_logcosh_is_stable_and_exact():
    s = torch.tensor([0.0, 0.5, -3.0, 1e3, -1e4], dtype=torch.float64)
    v = experts.rho(s, "logcosh")
    assert torch.isfinite(v).all()
    torch.testing.assert_close(v[:3], torch.log(torch.cosh(s[:3])))
    torch.testing.assert_close(v[3:], s[3:].abs() - torch.log(torch.tensor(2.0)).double())


def _patch_energy(x, w, a, expert):
    """The definition: every valid patch, every filter (a loop over unfolded patches)."""
    k = w.shape[-1]
    patches = F.unfold(x, k)  # [B, C k k, P]
    r = torch.einsum("nd,bdp->bnp", w.flatten(1), patches)
    return (experts.rho(r, expert) * a.view(1, -1, 1)).sum(dim=(1, 2))


@pytest.mark.parametrize("expert", EXPERTS)
def test_conv_energy_equals_the_patch_sum_and_gradchecks(expert):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    a = torch.rand(4, generator=g, dtype=torch.float64) + 0.1
    torch.testing.assert_close(conv_energy(x, w, a, expert), _patch_energy(x, w, a, expert))
    args = (x[:1].requires_grad_(), w.requires_grad_(), a.requires_grad_())
    assert torch.autograd.gradcheck(lambda *t: conv_energy(*t, expert), args)
    assert torch.autograd.gradgradcheck(lambda *t: conv_energy(*t, expert), args)
    # non-contiguous input, and an empty batch
    xt = x.transpose(2, 3)
    torch.testing.assert_close(conv_energy(xt, w, a, expert), _patch_energy(xt, w, a, expert))
    assert conv_energy(x[:0], w, a, expert).shape == (0,)


@pytest.mark.parametrize("model", models(), ids=lambda m: m.kind)
def test_score_is_minus_the_finite_difference_gradient(model):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, model.channels, 5, 6, generator=g, dtype=torch.float64)
    s = model.score(x)
    h, e = 1e-6, torch.zeros_like(x)
    for idx in [(0, 0, 0, 0), (1, model.channels - 1, 4, 5), (0, 0, 2, 3)]:
        e.zero_()
        e[idx] = h
        fd = (model.energy(x + e) - model.energy(x - e))[idx[0]] / (2 * h)
        torch.testing.assert_close(-s[idx], fd.detach(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", models(), ids=lambda m: m.kind)
def test_closed_form_laplacian_equals_the_autograd_hessian_trace(model):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, model.channels, 5, 4, generator=g, dtype=torch.float64)
    W = model.filter_bank()
    _, lap = experts.energy_and_laplacian(x, W, model.alphas, model.expert)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(xr).sum(), xr, create_graph=True)
    flat = grad.flatten(1)
    trace = torch.zeros(2, dtype=torch.float64)
    for j in range(flat.shape[1]):
        (h,) = torch.autograd.grad(flat[:, j].sum(), xr, retain_graph=True)
        trace += h.flatten(1)[:, j]
    torch.testing.assert_close(lap.detach(), trace)
    # and J is Hyvarinen's: -trace + 0.5 |grad|^2 per sample
    j = score_matching_loss(model, x, reduction="none")
    torch.testing.assert_close(j.detach(), -trace + 0.5 * flat.detach().pow(2).sum(1))


def test_patch_vectors_and_images_agree():
    model = models()[1]  # ICA 3x3, 2 channels: D = 18
    g = torch.Generator().manual_seed(4)
    v = torch.randn(5, 18, generator=g, dtype=torch.float64)
    torch.testing.assert_close(model.energy(v), model.energy(v.view(5, 2, 3, 3)))
    assert model.filters.shape == (7, 18) and model.alphas.shape == (7,)
    assert bool((model.alphas > 0).all())
    assert model.score(v).shape == v.shape


def test_shape_and_argument_errors():
    model = FoE(3, 4)
    with pytest.raises(ValueError, match=r"energy: expected patches of shape \(N, 9\)"):
        model.energy(torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 1, H, W\)"):
        model.energy(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 3x3 pixels"):
        model.energy(torch.zeros(1, 1, 2, 8))
    with pytest.raises(ValueError, match="expected expert in"):
        conv_energy(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3), torch.ones(1), "gauss")
    with pytest.raises(ValueError, match=r"alphas of shape \(2,\)"):
        conv_energy(torch.zeros(1, 1, 4, 4), torch.zeros(2, 1, 3, 3), torch.ones(3))
    with pytest.raises(TypeError, match="FoE: expected the filter size to be an int"):
        FoE(2.5)
    with pytest.raises(ValueError, match="ICA: expected the number of filters >= 1"):
        ICA(3, 0)
    with pytest.raises(ValueError, match="reduction in"):
        score_matching_loss(model, torch.zeros(2, 9), reduction="sum")
    with pytest.raises(ValueError, match="at least one sample"):
        score_matching_loss(model, torch.zeros(0, 9))
    with pytest.raises(TypeError, match="train: expected an ICA, FoE or SeparableFoE"):
        train(torch.nn.Linear(2, 2), torch.zeros(4, 9))
    with pytest.raises(ValueError, match="train: expected steps >= 0"):
        train(model, torch.zeros(4, 9), steps=-1)
    with pytest.raises(ValueError, match="train: expected a folder of images"):
        train(model, "/nonexistent/folder", steps=1)
    with pytest.raises(ValueError, match="train: expected images of at least 10x10"):
        train(model, torch.rand(2, 1, 8, 8), steps=1)


def test_score_matching_recovers_a_square_ica_model():
    g = torch.Generator().manual_seed(0)
    D, N = 4, 20000
    u = torch.rand(N, D, generator=g, dtype=torch.float64) - 0.5
    sources = -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplacian
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    X = (sources @ A.T).float()
    model = ICA(patch_size=1, n_filters=D, channels=D)
    res = train(model, X, steps=250, batch_size=None, lr=0.05, schedule="constant", progress=False)
    assert res.losses[-1] < res.losses[0]
    index = amari_index(model.filters.detach(), A.float())
    assert index < 0.1, index
    # a random unmixing is far from it
    assert amari_index(torch.randn(D, D, generator=g), A.float()) > 0.2


def _images():
    g = torch.Generator().manual_seed(5)
    base = torch.rand(3, 1, 24, 24, generator=g)
    return F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def test_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    data = _images()
    kw = dict(patch_size=9, batch_size=8, lr=0.02, seed=3, progress=False)
    whole = FoE(3, 4)
    train(whole, data, steps=6, **kw)
    path = tmp_path / "run.ckpt"
    real = train_module.score_matching_loss
    calls = []

    def killed_at_step_4(model, x):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the kill, in the middle of step 4
        return real(model, x)

    monkeypatch.setattr(train_module, "score_matching_loss", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(FoE(3, 4), data, steps=6, checkpoint=path, checkpoint_every=2, **kw)
    monkeypatch.setattr(train_module, "score_matching_loss", real)
    resumed = FoE(3, 4)  # a fresh process: new model, same arguments
    res = train(resumed, data, steps=6, checkpoint=path, checkpoint_every=2, **kw)
    assert len(res.losses) == 4 and res.steps == 6  # resumed from the step-2 checkpoint
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="made with lr=0.02, expected lr=0.03"):
        train(FoE(3, 4), data, steps=7, checkpoint=path, **{**kw, "lr": 0.03})


def test_whitened_image_filters_ignore_the_dc():
    model = FoE(3, 4)
    train(model, _images(), steps=2, batch_size=4, progress=False)
    per_channel_sums = model.filter_bank().sum(dim=(2, 3))
    torch.testing.assert_close(
        per_channel_sums, torch.zeros_like(per_channel_sums), atol=1e-5, rtol=0
    )
    x = _images()
    torch.testing.assert_close(model.energy(x + 0.3), model.energy(x), rtol=1e-4, atol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    model = SeparableFoE(3, 2, 3)
    train(model, torch.rand(2, 3, 16, 16), steps=2, batch_size=4, progress=False)
    path = save(tmp_path / "p.pt", model, {"note": "x"})
    back = load(path)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(back.energy(x), model.energy(x).detach())
    assert back.metadata["note"] == "x" and back.kind == "separable"
    with pytest.raises(ValueError, match="was made with kind='separable', expected kind='foe'"):
        load(path, expect={"kind": "foe"})
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="load: no checkpoint"):
        load(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="load: expected a shipped prior name"):
        load(3)


@pytest.mark.parametrize("name,kind,size", [("foe", "foe", 5), ("ica", "ica", 8)])
def test_shipped_priors_load(name, kind, size):
    model = load(name)
    assert (model.kind, model.size, model.channels) == (kind, size, 1)
    assert "seconds" in model.metadata and "command" in model.metadata
    assert torch.isfinite(model.energy(torch.rand(1, 1, 16, 16))).all()
