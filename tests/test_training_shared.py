"""The shared pieces of the training loops: checkpoints and the offline photo sets."""

import torch
import pytest

from pyinvert.data import photos
from pyinvert.training import data_hash, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_checkpoint_round_trip_restores_random_state(tmp_path):
    g = torch.Generator().manual_seed(3)
    path = tmp_path / "run.pt"
    save_checkpoint(
        path, step=5, metadata={"rep": "hog"}, state={"w": torch.ones(2)}, rng=rng_state(g)
    )
    expected = (torch.rand(2, generator=g), torch.rand(2))
    ckpt = load_checkpoint(path, expect={"rep": "hog"})
    set_rng_state(ckpt["rng"], g)
    assert ckpt["step"] == 5 and torch.equal(ckpt["state"]["w"], torch.ones(2))
    assert torch.equal(torch.rand(2, generator=g), expected[0])
    assert torch.equal(torch.rand(2), expected[1])


def test_checkpoint_metadata_mismatch_is_named(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, step=1, metadata={"rep": "hog"}, state={})
    with pytest.raises(ValueError, match=r"made with rep='hog', expected rep='dsift'"):
        load_checkpoint(path, expect={"rep": "dsift"})
    with pytest.raises(ValueError, match=r"has no 'size'"):
        load_checkpoint(path, expect={"size": 64})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_data_hash_depends_on_values_and_order(tmp_path):
    a, b = torch.zeros(3), torch.ones(3)
    assert data_hash([a, b]) == data_hash([a.clone(), b.clone()])
    assert data_hash([a, b]) != data_hash([b, a])
    f = tmp_path / "x.png"
    f.write_bytes(b"123")
    assert data_hash([f]) != data_hash([a])


def test_photo_sets_are_disjoint_rgb_and_in_range(tmp_path):
    train, held = photos.training_photos(), photos.heldout_photos()
    assert not set(train) & set(held)
    for image in [*train.values(), *held.values()]:
        assert image.dtype == torch.float32 and image.shape[0] == 3 and min(image.shape[1:]) >= 256
        assert 0 <= float(image.min()) and float(image.max()) <= 1
    written = photos.export_photos(tmp_path / "held", "heldout")
    assert sorted(p.name for p in written) == ["china.png", "flower.png"]
    with pytest.raises(ValueError, match="expected which in"):
        photos.export_photos(tmp_path, "test")
