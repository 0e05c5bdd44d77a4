"""Image loading (gray, RGB, RGBA, 16-bit, errors) and atomic writes."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from pyinvert import io


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_gray_rgb_rgba_and_16bit(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    bgr = np.stack([gray, gray // 2, gray // 3], -1)
    bgra = np.concatenate([bgr, np.full((6, 8, 1), 7, np.uint8)], -1)
    deep = (gray.astype(np.uint16) * 1000)
    g = io.load_image(_write(tmp_path / "g.png", gray))
    c = io.load_image(_write(tmp_path / "c.png", bgr))
    a = io.load_image(_write(tmp_path / "a.png", bgra))
    d = io.load_image(_write(tmp_path / "d.png", deep))
    assert g.shape == (1, 6, 8) and c.shape == (3, 6, 8) and a.shape == (3, 6, 8)
    assert g.dtype == torch.float32
    np.testing.assert_allclose(g[0].numpy(), gray / 255.0, atol=1e-7)
    # BGR on disk -> RGB in memory
    np.testing.assert_allclose(c[0].numpy(), (gray // 3) / 255.0, atol=1e-7)
    np.testing.assert_allclose(c[2].numpy(), gray / 255.0, atol=1e-7)
    torch.testing.assert_close(a, c)  # alpha dropped
    np.testing.assert_allclose(d[0].numpy(), deep / 65535.0, atol=1e-7)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_image: no such file: .*nope.png"):
        io.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="load_image: cannot read .*bad.png as an image"):
        io.load_image(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="load_image: cannot read"):
        io.load_image(empty)


def test_array_to_tensor_errors():
    with pytest.raises(ValueError, match=r"load_image: expected image of shape .* got \[2, 2, 2\]"):
        io.array_to_tensor(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(TypeError, match="load_image: expected image of dtype uint8, uint16 or "
                                        "float, got int32"):
        io.array_to_tensor(np.zeros((2, 2), np.int32))
    with pytest.raises(TypeError, match="load_image: expected image to be a numpy array"):
        io.array_to_tensor([[0]])


def test_save_roundtrip_and_atomic(tmp_path):
    x = torch.rand(3, 5, 7)
    path = io.save_image(tmp_path / "sub" / "x.png", x)
    back = io.load_image(path)
    assert (back - x).abs().max() <= 0.5 / 255 + 1e-6
    g = io.save_image(tmp_path / "g.png", torch.rand(1, 4, 4))
    assert io.load_image(g).shape == (1, 4, 4)
    io.write_json(tmp_path / "r.json", {"a": torch.tensor([1.0, 2.0]), "p": tmp_path})
    assert json.loads((tmp_path / "r.json").read_text())["a"] == [1.0, 2.0]
    # no temporary files left behind
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert not [p for p in os.listdir(tmp_path / "sub") if p.endswith(".tmp")]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "r.json"
    io.write_json(target, {"ok": 1})
    with pytest.raises(TypeError, match="write_json: cannot serialize object"):
        io.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_to_uint8_nan():
    a = io.to_uint8(torch.tensor([[[float("nan"), 1.0, 2.0, -1.0]]]))
    assert a.tolist() == [[0, 255, 255, 0]]
