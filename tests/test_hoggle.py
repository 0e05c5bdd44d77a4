"""HOGgle (Vondrick et al. 2013): paired dictionaries, inversion geometry, files, Table 1 row."""

import doctest
import importlib
import json

import pytest
import torch
import torch.nn.functional as F

from pyinvert import io, metrics
from pyinvert.decoders import hoggle as hg
from pyinvert.decoders import hoggle_train
from pyinvert.decoders.hoggle import PairedDictionary, pair_matrix
from pyinvert.representations.handcrafted import HOGRepresentation
from pyinvert.training import save_checkpoint

REP = HOGRepresentation()
# the module (pyinvert.experiments.table1 is also the name of its function)
t1 = importlib.import_module("pyinvert.experiments.table1")


def synthetic(n, size=64, seed=0):
    """Smooth random gray images (blurred noise with edges): [3, size, size] each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(1, 1, size // 8, size // 8, generator=g)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x > 0.5).float() * 0.6 + 0.2 * x  # edges, as in photos
        out.append(x[0].expand(3, -1, -1).contiguous())
    return out


@pytest.fixture(scope="module")
def images():
    return synthetic(6)


@pytest.fixture(scope="module")
def learned(images):
    g = torch.Generator().manual_seed(0)
    return PairedDictionary.fit(
        images, num_atoms=24, window=2, steps=30, batch_size=32, generator=g
    )


def random_dictionary(like: PairedDictionary, seed=1):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(like.num_atoms, like.gray.shape[1] + like.hog.shape[1], generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    P2 = like.gray.shape[1]
    return PairedDictionary(D[:, :P2], D[:, P2:], window=like.window, lam=like.lam)


@pytest.mark.parametrize("size", [(41, 37), (64, 64), (8, 8), (5, 13), (17, 90)])
def test_output_size_is_the_input_size(learned, size):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    out = learned.invert_images(x)
    assert out.shape == (2, 1, *size) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert learned.invert_images(x[:0]).shape == (0, 1, *size)


def test_constant_image_gives_mid_gray(learned):
    out = learned.invert_images(torch.full((1, 3, 24, 24), 0.3))
    assert torch.equal(out, torch.full_like(out, 0.5))


def test_learned_dictionary_reconstructs_its_pairs_better_than_random(learned, images):
    X = pair_matrix(images[:2], REP, learned.window)
    patches, windows = X[:, : learned.gray.shape[1]], X[:, learned.gray.shape[1] :]
    err = {}
    for name, pd in (("learned", learned), ("random", random_dictionary(learned))):
        Xn, R = pd.reconstruct(patches, windows)
        err[name] = float((Xn - R).square().sum() / Xn.square().sum())
    assert err["learned"] < 0.75 * err["random"], err


def test_inverting_a_training_image_beats_random_dictionary_and_noise(learned, images):
    x = torch.stack(images[:4])
    target = REP(REP.preprocess(x))

    def error(recon):
        return float(metrics.table1_error(REP(REP.preprocess(recon)), target).mean())

    ours = error(learned.invert_images(x))
    rand = error(random_dictionary(learned).invert_images(x))
    noise = error(torch.rand(x.shape, generator=torch.Generator().manual_seed(5)))
    assert ours < 0.7 * rand and ours < 0.7 * noise, (ours, rand, noise)


def test_fit_is_seeded(images):
    def fit():
        g = torch.Generator().manual_seed(7)
        return PairedDictionary.fit(images[:2], num_atoms=8, window=2, steps=3, generator=g)

    a, b = fit(), fit()
    assert torch.equal(a.gray, b.gray) and torch.equal(a.hog, b.hog)
    assert a.metadata["data_hash"] == b.metadata["data_hash"]


def test_save_load_round_trip(learned, tmp_path):
    x = torch.stack(synthetic(2, 48, seed=9))
    path = learned.save(tmp_path / "pd.pt", half=False)
    back = PairedDictionary.load(path, representation=REP, window=2)
    assert torch.equal(back.gray, learned.gray) and torch.equal(back.hog, learned.hog)
    assert torch.equal(back.invert_images(x), learned.invert_images(x))
    assert back.metadata["data_hash"] == learned.metadata["data_hash"]
    assert back.metadata["num_atoms"] == 24 and back.lam == learned.lam
    half = PairedDictionary.load(learned.save(tmp_path / "h.pt"))
    assert half.gray.dtype == torch.float32
    assert (half.invert_images(x) - learned.invert_images(x)).abs().max() < 2e-2
    assert (tmp_path / "h.pt").stat().st_size < (tmp_path / "pd.pt").stat().st_size


def test_load_metadata_mismatch(learned, tmp_path):
    path = learned.save(tmp_path / "pd.pt")
    with pytest.raises(ValueError, match=r"PairedDictionary.load: .* was made with hog=.*"):
        PairedDictionary.load(path, representation=HOGRepresentation(bilinear_orientations=True))
    with pytest.raises(ValueError, match=r"was made with window=2, expected window=5"):
        PairedDictionary.load(path, window=5)
    save_checkpoint(tmp_path / "other.pt", step=0, metadata={"kind": "decoder"}, state={})
    with pytest.raises(ValueError, match=r"was made with kind='decoder', expected kind='hoggle"):
        PairedDictionary.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="PairedDictionary.load: no checkpoint at"):
        PairedDictionary.load(tmp_path / "missing.pt")


def test_errors(learned, images):
    with pytest.raises(ValueError, match=r"fit: expected at least num_atoms=9999 pairs, got"):
        PairedDictionary.fit(images[:1], num_atoms=9999, window=2, steps=1)
    with pytest.raises(ValueError, match=r"fit: expected images with at least one 5x5-cell"):
        PairedDictionary.fit([torch.rand(3, 30, 30)], num_atoms=2)
    with pytest.raises(ValueError, match=r"fit: expected images of shape \(C, H, W\), got"):
        PairedDictionary.fit([torch.rand(30, 30)], num_atoms=2)
    with pytest.raises(ValueError, match=r"invert: expected codes of shape \(B, 31, 5, 5\)"):
        learned.invert(torch.zeros(1, 31, 4, 5), (40, 40))
    with pytest.raises(ValueError, match=r"invert_images: expected images of shape"):
        learned.invert_images(torch.rand(3, 40, 40))
    with pytest.raises(ValueError, match=r"expected gray \[K, 1024\] and hog \[K, 124\] for"):
        PairedDictionary(torch.zeros(4, 10), torch.zeros(4, 124), window=2)
    with pytest.raises(ValueError, match=r"PairedDictionary: expected window >= 1, got 0"):
        PairedDictionary(learned.gray, learned.hog, window=0)
    with pytest.raises(ValueError, match=r"PairedDictionary: expected lam > 0, got -1"):
        PairedDictionary(learned.gray, learned.hog, window=2, lam=-1)
    with pytest.raises(TypeError, match=r"expected a HOG representation, got str"):
        PairedDictionary(learned.gray, learned.hog, window=2, representation="hog")
    with pytest.raises(ValueError, match=r"PairedDictionary: expected blend > 0 or None, got 0"):
        PairedDictionary(learned.gray, learned.hog, window=2, blend=0)
    with pytest.raises(ValueError, match=r"train_hoggle: expected settings among"):
        hoggle_train.train_hoggle("unused.pt", epochs=3)


@pytest.fixture
def photo_paths(tmp_path):
    return [str(io.save_image(tmp_path / f"s{i}.png", x)) for i, x in enumerate(synthetic(3, 48))]


def test_table1_hoggle_row(learned, photo_paths, tmp_path):
    def blur(images, rep, settings):  # a stand-in for another method's row (a decoder)
        return F.avg_pool2d(images, 5, 1, 2, count_include_pad=False)

    rows = {
        "hoggle": t1.Row("hog", t1.hoggle(learned), "HOGgle (HOG)"),
        "blur": t1.Row("hog", blur, "blurred"),
    }
    out = tmp_path / "t1"
    res = t1.table1(photo_paths, reps=("hoggle", "blur"), rows=rows, out=out, progress=False)
    assert list(res) == ["hoggle", "blur"]
    # the row's error is measured exactly as the other rows': Table-1 error of the HOG codes
    x = torch.stack([io.load_image(p).expand(3, -1, -1) for p in photo_paths])
    want = metrics.table1_error(
        REP(REP.preprocess(learned.invert_images(x))), REP(REP.preprocess(x))
    )
    assert res["hoggle"]["errors"] == pytest.approx((want * 100).tolist(), rel=1e-6)
    text = t1.format_table1(res, rows)
    line = next(s for s in text.splitlines() if s.startswith("HOGgle (HOG)"))
    assert "66.20 +-" in line and f"{res['hoggle']['mean']:6.2f} +-" in line
    blurred = next(s for s in text.splitlines() if s.startswith("blurred"))
    assert blurred.split()[1] == "-"
    payload = json.loads((out / "table1.json").read_text())
    assert payload["reported"]["hoggle"] == {"mean": 66.2, "std": 13.7}
    assert set(payload["ours"]) == {"hoggle", "blur"}
    assert (out / "table1-montage.png").is_file() and (out / "s0-hoggle.png").is_file()


def test_table1_row_errors(learned, photo_paths, tmp_path, monkeypatch):
    bad = {"bad": t1.Row("hog", lambda images, rep, s: images[:, :, :4], "bad")}
    with pytest.raises(ValueError, match=r"table1: expected row 'bad' to return reconstructions"):
        t1.table1(photo_paths, reps=("bad",), rows=bad, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"table1: expected rows among hoggle, hog, hogb, dsift"):
        t1.table1(photo_paths, reps=("sift",), out=tmp_path, progress=False)
    monkeypatch.setattr(hg, "SHIPPED", tmp_path / "none.pt")
    assert "hoggle" not in t1.default_rows()
    with pytest.raises(ValueError, match=r"table1: the HOGgle row needs its dictionary at"):
        t1.table1(photo_paths, reps=("hoggle",), out=tmp_path, progress=False)
    other = PairedDictionary(
        learned.gray,
        learned.hog,
        window=2,
        representation=HOGRepresentation(bilinear_orientations=True),
    )
    rows = {"hoggle": t1.Row("hog", t1.hoggle(other), "HOGgle")}
    with pytest.raises(ValueError, match=r"table1: the HOGgle dictionary was learned for HOG"):
        t1.table1(photo_paths, reps=("hoggle",), rows=rows, out=tmp_path, progress=False)


def test_shipped_dictionary():
    pd = PairedDictionary.load(representation=REP)
    assert (
        pd.window == 5
        and pd.lam == 0.02
        and pd.num_atoms == hoggle_train.TRAIN_SETTINGS["num_atoms"]
    )
    assert pd.metadata["data"].startswith("scikit-image photographs")
    assert hg.SHIPPED.stat().st_size < 6 * 2**20
    assert "hoggle" in t1.default_rows()


def test_docstring_examples_run():
    assert doctest.testmod(hg, optionflags=doctest.ELLIPSIS).failed == 0
