"""pyinvert.decoders: geometry for every representation and odd sizes, training, resumes,
metadata checks, the modular (stacked / joint) CNN inverters."""

import math

import pytest
import torch

from pyinvert.decoders import (
    Decoder,
    code_geometry,
    code_map,
    fit_to_size,
    load,
    save_decoder,
    train,
)
from pyinvert.decoders.data import CropDataset, StepSampler
from pyinvert.decoders.modular import ModularDecoder, compare_modes
from pyinvert.representations import as_representation


def _photos(n=3, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 6, 6, generator=g)
    # smooth photos (upsampled noise) with some edges: HOG has something to see
    return list(torch.nn.functional.interpolate(base, size=(size, size + 5), mode="bilinear"))


@pytest.fixture(scope="module")
def mobilenet():
    return as_representation("cnn:mobilenet_v2:features.3", weights=None)


@pytest.mark.parametrize(
    "name, channels, stride, image_channels",
    [("hog", 31, 8, 1), ("dsift", 128, 4, 1), ("cnn", 24, 4, 3)],
)
def test_code_geometry(name, channels, stride, image_channels, mobilenet):
    rep = mobilenet if name == "cnn" else as_representation(name)
    assert code_geometry(rep) == {
        "channels": channels,
        "stride": stride,
        "image_channels": image_channels,
    }
    dec = Decoder.for_representation(rep, width=4)
    assert dec.stages == {8: 3, 4: 2}[stride]


@pytest.mark.parametrize("name", ["hog", "dsift", "cnn"])
@pytest.mark.parametrize("size", [(64, 64), (65, 77), (41, 33), (49, 50)])
def test_output_size_equals_input_size(name, size, mobilenet):
    rep = mobilenet if name == "cnn" else as_representation(name)
    dec = Decoder.for_representation(rep, width=4)
    x = torch.rand(2, 3, *size)
    code = code_map(rep, rep(rep.preprocess(x)), size)
    y = dec(code, size)
    assert y.shape == (2, rep.channels, *size)
    assert torch.isfinite(y).all()


def test_fit_to_size_crops_and_pads_exactly():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(fit_to_size(x, (4, 4)), x)
    assert torch.equal(fit_to_size(x, (2, 3)), x[..., 1:3, 0:3])
    y = fit_to_size(x, (7, 6))
    assert y.shape == (1, 1, 7, 6)
    assert torch.equal(y[..., 1:5, 1:5], x)  # centred, the extra row below
    assert torch.equal(y[0, 0, 0, 1:5], x[0, 0, 0])  # replicated border
    assert fit_to_size(torch.ones(1, 2, 1, 1), (5, 3)).shape == (1, 2, 5, 3)


def test_decoder_errors():
    with pytest.raises(ValueError, match="Decoder: expected stride to be an int >= 1"):
        Decoder(31, 1, stride=0)
    with pytest.raises(ValueError, match=r"Decoder: expected channels as 4 ints >= 1"):
        Decoder(31, 1, stride=8, channels=[8, 4])
    assert Decoder(31, 1, stride=8, channels=[9, 7, 5, 3]).config["channels"] == [9, 7, 5, 3]
    dec = Decoder(31, 1, stride=8, width=4)
    assert dec.config["channels"] == [64, 32, 16, 4]
    with pytest.raises(ValueError, match=r"expected a code of shape \[B, 31, h, w\]"):
        dec(torch.rand(1, 30, 4, 4), (32, 32))
    rep = as_representation("cnn:mobilenet_v2:features.2,features.3", weights=None)
    with pytest.raises(ValueError, match="expected a representation with one code map"):
        Decoder.for_representation(rep)


def test_batches_are_functions_of_seed_and_step():
    photos = _photos()
    a = CropDataset(photos, 32, global_batch=4, seed=3)
    b = CropDataset(photos, 32, global_batch=4, seed=3)
    assert torch.equal(a[9], b[9])
    assert not torch.equal(a[9], a[10])
    assert a[0].shape == (3, 32, 32)
    one = list(StepSampler(2, 4, batch_size=4))
    two = [list(StepSampler(2, 4, batch_size=2, rank=r, world=2)) for r in range(2)]
    assert one == [two[0][i] + two[1][i] for i in range(2)]


def test_training_lowers_the_loss_on_a_tiny_folder(tmp_path):
    from pyinvert import io

    for i, p in enumerate(_photos(3)):
        io.save_image(tmp_path / f"p{i}.png", p)
    res = train(
        "hog",
        tmp_path,
        steps=30,
        batch_size=2,
        crop=32,
        width=8,
        lr=3e-3,
        loss="pixel",
        progress=False,
    )
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert res.metadata["data_hash"] and res.metadata["data"] == str(tmp_path)


class _Kill(Exception):
    pass


def test_resume_after_a_kill_equals_uninterrupted(tmp_path):
    kw = dict(steps=6, batch_size=2, crop=32, width=4, progress=False, seed=1)
    photos = _photos()
    full = train("hog", photos, **kw)
    ck = tmp_path / "ck.pt"

    def kill(step, loss):
        if step == 5:  # after the checkpoint of step 4, before the one of step 6
            raise _Kill

    with pytest.raises(_Kill):
        train("hog", photos, checkpoint=ck, checkpoint_every=2, callback=kill, **kw)
    resumed = train("hog", photos, checkpoint=ck, checkpoint_every=2, **kw)
    assert resumed.start_step == 4 and resumed.steps == 6
    assert resumed.losses == full.losses[4:]
    for (k, a), b in zip(full.decoder.state_dict().items(), resumed.decoder.state_dict().values()):
        assert torch.equal(a, b), k
    # workers do not change the batches
    with_workers = train("hog", photos, workers=1, **{**kw, "steps": 2})
    assert with_workers.losses == full.losses[:2]


def test_checkpoint_of_another_representation_is_refused(tmp_path):
    ck = tmp_path / "ck.pt"
    photos = _photos(size=64)
    kw = dict(steps=1, batch_size=2, crop=56, width=4, progress=False, checkpoint=ck)
    train("hog", photos, **kw)
    with pytest.raises(
        ValueError, match=r"decoders.train: checkpoint .* was made with representation="
    ):
        train("dsift", photos, **kw)
    with pytest.raises(ValueError, match=r"was made with recipe="):
        train("hog", photos, **{**kw, "steps": 2, "checkpoint": ck})


def test_saved_decoder_loads_and_decodes_the_same(tmp_path):
    res = train(
        "hog",
        _photos(),
        steps=2,
        batch_size=2,
        crop=32,
        width=4,
        progress=False,
        out=tmp_path / "d.pt",
    )
    dec = load(tmp_path / "d.pt")
    assert dec.metadata["representation"]["name"] == "hog"
    code = torch.rand(1, 31, 4, 5)
    assert torch.equal(dec(code, (33, 40)), res.decoder(code, (33, 40)))
    with pytest.raises(FileNotFoundError, match="decoders.load: no decoder file 'nope'"):
        load("nope")
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="decoders.load: expected a pyinvert checkpoint"):
        load(tmp_path / "foreign.pt")
    save_decoder(tmp_path / "d2.pt", dec, {"representation": {"name": "hog"}}, step=2)
    assert load(tmp_path / "d2.pt").step == 2


def test_train_errors():
    with pytest.raises(ValueError, match="decoders.train: expected loss in"):
        train("hog", _photos(), steps=1, loss="l1")
    with pytest.raises(ValueError, match="decoders.train: expected crop >= "):
        train("dsift", _photos(), steps=1, crop=8)
    with pytest.raises(ValueError, match="expected data to be a folder of images"):
        train("hog", "/nonexistent/folder", steps=1)


def test_modular_geometry_and_joint_beats_stacked(mobilenet):
    layers = ["features.1", "features.2", "features.3"]
    dec = ModularDecoder(mobilenet, layers, width=4)
    assert [b.stages for b in dec.blocks] == [1, 1, 0]
    x = torch.rand(1, 3, 37, 30)
    f = dec.features(x)
    assert dec(f["features.3"], (37, 30)).shape == (1, 3, 37, 30)
    assert dec(f["features.2"], (37, 30), start=1).shape == (1, 3, 37, 30)
    # The thesis's comparison, on a tiny problem: training the stack jointly gives a lower
    # pixel error than stacking modules trained alone (the same batches and initial weights).
    photos = _photos(4, size=64)
    ev = torch.stack(_photos(2, size=48, seed=7))[..., :48]
    out = compare_modes(mobilenet, layers, photos, ev, steps=25, width=8, crop=32)
    assert out["joint"] < out["stacked"], out


def test_cnn_layer_decoder_trains(mobilenet):
    res = train(
        mobilenet, _photos(2, size=40), steps=2, batch_size=2, crop=32, width=4, progress=False
    )
    assert res.decoder.config["out_channels"] == 3 and res.decoder.stages == 2
    assert res.metadata["representation"]["layers"] == ["features.3"]
    assert len(res.losses) == 2 and all(math.isfinite(v) for v in res.losses)
