"""neighbors() against brute force, the code cache, folders; feature space finds the other
view of a photo more often than pixel space; embed() is reproducible with a seed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyinvert
from pyinvert import io
from pyinvert.data import sample_path
from pyinvert.toolbox.codes import config_hash, image_hash
from pyinvert.toolbox.neighbors import knn

SAMPLES = ["camera", "chelsea", "coffee", "rocket", "astronaut"]


def brute_force(q, g, k, normalize=True):
    if normalize:
        q, g = F.normalize(q.double(), dim=1), F.normalize(g.double(), dim=1)
    d = torch.cdist(q.double(), g.double())
    order = torch.sort(d, dim=1, stable=True)
    return order.values[:, :k], order.indices[:, :k]


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_knn_equals_brute_force(chunk):
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(7, 20, generator=gen), torch.randn(23, 20, generator=gen)
    d, i = knn(q, g, 5, chunk=chunk)
    bd, bi = brute_force(q, g, 5, normalize=False)
    assert torch.equal(i, bi)
    assert torch.allclose(d.double(), bd, atol=1e-5)


def test_knn_ties_keep_the_lower_index():
    g = torch.zeros(6, 3)
    _, i = knn(torch.zeros(1, 3), g, 4, chunk=2)
    assert i.tolist() == [[0, 1, 2, 3]]


def feature_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 3))


def test_feature_space_equals_brute_force_on_codes():
    net = feature_net()
    rep = pyinvert.CNN(net, "2")
    gen = torch.Generator().manual_seed(1)
    gallery, queries = (
        torch.rand(17, 3, 24, 24, generator=gen),
        torch.rand(4, 3, 24, 24, generator=gen),
    )
    r = pyinvert.neighbors(queries, gallery, rep, k=6, size=None, batch_size=5, chunk=4)
    with torch.no_grad():
        codes = lambda x: rep(rep.preprocess(x)).flatten(1)  # noqa: E731
        bd, bi = brute_force(codes(queries), codes(gallery), 6)
    assert torch.equal(r.indices, bi)
    assert torch.allclose(r.distances.double(), bd, atol=1e-5)
    assert r.neighbors.shape == (4, 6, 3, 24, 24)
    assert torch.equal(r.neighbors[2, 0], gallery[bi[2, 0]])


def test_pixel_space_equals_brute_force_and_k_is_clamped():
    gen = torch.Generator().manual_seed(2)
    g, q = torch.rand(5, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
    r = pyinvert.neighbors(q, g, k=9, space="pixel", size=None, normalize=False)
    bd, bi = brute_force(q.flatten(1), g.flatten(1), 5, normalize=False)
    assert r.indices.shape == (2, 5) and torch.equal(r.indices, bi)


def test_cache_is_hit_and_keyed_by_config(tmp_path):
    for i, name in enumerate(SAMPLES):
        io.save_image(
            tmp_path / "g" / f"{i}-{name}.png", pyinvert.models.prepare_image(sample_path(name), 48)
        )
    net = feature_net()
    kw = dict(k=2, size=48, cache_dir=tmp_path / "cache", batch_size=2)
    a = pyinvert.neighbors(sample_path("camera"), tmp_path / "g", pyinvert.CNN(net, "2"), **kw)
    b = pyinvert.neighbors(sample_path("camera"), tmp_path / "g", pyinvert.CNN(net, "2"), **kw)
    c = pyinvert.neighbors(sample_path("camera"), tmp_path / "g", pyinvert.CNN(net, "1"), **kw)
    assert (a.settings["cache_misses"], a.settings["cache_hits"]) == (5, 0)
    assert (b.settings["cache_misses"], b.settings["cache_hits"]) == (0, 5)
    assert c.settings["cache_misses"] == 5  # another layer: another key
    assert torch.equal(a.indices, b.indices) and torch.equal(a.distances, b.distances)
    assert a.gallery_names[a.indices[0, 0]] == "0-camera.png"
    assert len(list((tmp_path / "cache").iterdir())) == 2
    fig = a.figure(height=48)
    assert fig.shape[2] == 3 and fig.shape[1] > 3 * 48
    a.save(tmp_path / "out")
    assert (tmp_path / "out" / "neighbors.png").is_file()


def test_hashes():
    x = torch.rand(3, 4, 4)
    assert image_hash(x) == image_hash(x.clone()) != image_hash(x + 1e-3)
    hog = pyinvert.as_representation("hog")
    assert config_hash(hog, "feature", True) != config_hash(hog, "feature", False)
    assert config_hash(hog, "feature", True) != config_hash(
        pyinvert.as_representation("hogb"), "feature", True
    )


def views():
    def view(im, y, x, s, flip, gain):
        H, W = im.shape[-2:]
        c = int(min(H, W) * s)
        y0, x0 = int((H - c) * y), int((W - c) * x)
        v = F.interpolate(im[None, :, y0 : y0 + c, x0 : x0 + c], size=(96, 96), mode="area")[0]
        return (v.flip(-1) if flip else v).mul(gain).clamp(0, 1)

    ims = [io.load_image(sample_path(n))[:3].expand(3, -1, -1) for n in SAMPLES]
    # gallery: a centred view; queries: another view (corner crop, mirrored, darker)
    return (
        torch.stack([view(im, 0.5, 0.5, 0.9, False, 1.0) for im in ims]),
        torch.stack([view(im, 0.1, 0.9, 0.6, True, 0.7) for im in ims]),
    )


def test_feature_space_finds_the_other_view_more_often_than_pixel_space():
    gallery, queries = views()
    model = pyinvert.models.load_model("mobilenet_v2", weights="imagenet")
    feat = pyinvert.neighbors(queries, gallery, pyinvert.CNN(model, "features.18"), k=1, size=None)
    pix = pyinvert.neighbors(queries, gallery, k=1, space="pixel", size=None)
    truth = torch.arange(5)
    hits_f = int((feat.indices[:, 0] == truth).sum())
    hits_p = int((pix.indices[:, 0] == truth).sum())
    assert hits_f == 5 and hits_p <= 3, (hits_f, hits_p)


def test_embed_is_reproducible_with_a_seed_and_draws_thumbnails():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(12, 3, 16, 16, generator=gen)
    rep = pyinvert.CNN(feature_net(), "2")
    a = pyinvert.embed(x, rep, size=None, seed=4)
    b = pyinvert.embed(x, rep, size=None, seed=4)
    assert torch.equal(a.points, b.points) and a.points.shape == (12, 2)
    assert a.settings["perplexity"] == pytest.approx(11 / 3)
    p = pyinvert.embed(x, rep, method="pca", size=None)
    centred = (p.points - p.points.mean(0)).double()
    codes = F.normalize(rep(rep.preprocess(x)).flatten(1).double().detach(), dim=1)
    codes = codes - codes.mean(0)
    # PCA: the points carry the two top singular values of the centred codes
    s = torch.linalg.svdvals(codes)[:2]
    assert torch.allclose(centred.norm(dim=0), s, rtol=1e-4)
    assert a.figure.shape == (1024, 1024, 3) and (a.figure < 255).any()


def test_errors(tmp_path):
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match=r"neighbors: expected space in \('feature', 'pixel'\)"):
        pyinvert.neighbors(x, x, k=1, space="code")
    with pytest.raises(ValueError, match="neighbors: expected a representation"):
        pyinvert.neighbors(x, x, None, k=1)
    with pytest.raises(ValueError, match="neighbors: expected k to be an int >= 1"):
        pyinvert.neighbors(x, x, k=0, space="pixel")
    with pytest.raises(ValueError, match="neighbors: expected image files"):
        pyinvert.neighbors(x, tmp_path, k=1, space="pixel")
    with pytest.raises(TypeError, match="neighbors: expected images as a folder"):
        pyinvert.neighbors(x, 5, k=1, space="pixel")
    with pytest.raises(ValueError, match="embed: expected at least 3 images"):
        pyinvert.embed(x[:2], space="pixel", size=None)
    with pytest.raises(ValueError, match=r"embed: expected method in \('tsne', 'pca'\)"):
        pyinvert.embed(x, space="pixel", method="umap")


def test_faiss_backend_equals_the_exact_search():
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(5)
    g, q = torch.rand(40, 3, 6, 6, generator=gen), torch.rand(3, 3, 6, 6, generator=gen)
    exact = pyinvert.neighbors(q, g, k=4, space="pixel", size=None, backend="exact")
    fast = pyinvert.neighbors(q, g, k=4, space="pixel", size=None, backend="faiss")
    assert fast.settings["backend"] == "faiss" and exact.settings["backend"] == "exact"
    assert torch.equal(fast.indices, exact.indices)
    assert torch.allclose(fast.distances, exact.distances, atol=1e-4)
