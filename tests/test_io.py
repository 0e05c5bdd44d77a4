"""Image loading (gray, RGB, RGBA, 16-bit, errors) and atomic writes."""

import json
import os
import struct
import sys

import cv2
import numpy as np
import pytest
import torch

from pyinvert import io
from pyinvert.imagesize import header_size


def _write(path, array):
    assert cv2.imwrite(str(path), array)
    return path


def test_gray_rgb_rgba_and_16bit(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    bgr = np.stack([gray, gray // 2, gray // 3], -1)
    bgra = np.concatenate([bgr, np.full((6, 8, 1), 7, np.uint8)], -1)
    deep = gray.astype(np.uint16) * 1000
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
    with pytest.raises(
        TypeError, match="load_image: expected image of dtype uint8, uint16 or float, got int32"
    ):
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


# ---- issue 11: non-finite pixels, pixel limit, folders, codecs' messages, umask, full disk ----


FORMATS = [
    "png",
    "jpg",
    "bmp",
    "webp",
    "tiff",
    "ppm",
    "pgm",
    "pbm",
    "pam",
    "pfm",
    "ras",
    "hdr",
    "jp2",
    "avif",
    "gif",
]


@pytest.mark.parametrize("ext", FORMATS)
def test_header_size_of_every_format(ext):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if ext in ("pfm", "hdr"):
        image = image.astype(np.float32) / 255
    elif ext in ("pgm", "pbm"):
        image = image[:, :, 0]
    ok, buf = cv2.imencode("." + ext, image)
    assert ok
    kind, size = header_size(buf.tobytes())
    assert kind is not None and size == (53, 37)


def test_header_size_unknown_and_cut():
    assert header_size(b"hello world, not an image") == (None, None)
    assert header_size(b"\x89PNG\r\n\x1a\n\x00\x00") == ("PNG", None)


def _bomb(ext, width, height):
    """A small valid file of format ``ext`` whose header claims width x height pixels."""
    ok, buf = cv2.imencode("." + ext, np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    if ext == "png":
        data[16:24] = struct.pack(">II", width, height)
    elif ext == "jpg":
        i = data.index(b"\xff\xc0")
        data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    elif ext == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    elif ext == "gif":
        data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


@pytest.mark.parametrize(
    "ext,side", [("png", 60000), ("png", 32000), ("jpg", 65000), ("bmp", 40000), ("gif", 65535)]
)
def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch, ext, side):
    """Issue 11.10: a 60000^2 PNG gave a cv2.error, a 32000^2 one tried to allocate 4 GB. The
    header is read first; nothing is decoded."""
    path = tmp_path / f"bomb.{ext}"
    path.write_bytes(_bomb(ext, side, side))

    def no_decoding(*args):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(
        ValueError,
        match=rf"load_image: .*bomb.{ext} is a {side}x{side} \w+ "
        rf"image \({side * side} pixels\), over the limit of "
        rf"50000000 pixels \(raise it with --max-pixels",
    ):
        io.load_image(path)


def test_pixel_limit_settings(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.png", np.zeros((10, 20), np.uint8))
    assert io.load_image(path, max_pixels=200).shape == (1, 10, 20)
    with pytest.raises(
        ValueError, match="is a 20x10 PNG image .200 pixels., over the limit of 199 pixels"
    ):
        io.load_image(path, max_pixels=199)
    monkeypatch.setenv("PYINVERT_MAX_PIXELS", "150")
    with pytest.raises(ValueError, match="over the limit of 150 pixels"):
        io.load_image(path)
    for bad in ("abc", "0", "-5", "1.5", str(2**31)):
        monkeypatch.setenv("PYINVERT_MAX_PIXELS", bad)
        with pytest.raises(ValueError, match=r"load_image: expected \$PYINVERT_MAX_PIXELS"):
            io.load_image(path)
    monkeypatch.delenv("PYINVERT_MAX_PIXELS")
    with pytest.raises(ValueError, match=r"expected max_pixels in \[1, 1073741824\]"):
        io.load_image(path, max_pixels=0)
    assert io.max_pixels_setting() == io.DEFAULT_MAX_PIXELS == 50_000_000


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_an_error(tmp_path, bad):
    """Issue 11.3: a float TIFF with NaN or Inf pixels is one clear error."""
    a = np.full((6, 7, 3), 0.5, np.float32)
    a[2, 3, 1] = bad
    a[4, 0, 0] = bad
    path = _write(tmp_path / "f.tiff", a)
    with pytest.raises(
        ValueError,
        match=r"load_image: .*f.tiff has 2 non-finite pixel "
        r"value\(s\) \(NaN or Inf\)",
    ):
        io.load_image(path)
    with pytest.raises(ValueError, match="has 2 non-finite"):
        io.array_to_tensor(a)
    a[2, 3, 1] = a[4, 0, 0] = 0.25
    t = io.load_image(_write(tmp_path / "g.tiff", a))
    assert t.shape == (3, 6, 7) and float(t[1, 2, 3]) == 0.25  # BGR on disk: channel 1 stays


def test_folder_device_and_unreadable(tmp_path):
    """Issue 11.11: a folder given as an image said "no such file"."""
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match="load_image: .*d.png is a folder, expected an image"):
        io.load_image(tmp_path / "d.png")
    with pytest.raises(ValueError, match="load_image: /dev/null is not a regular file"):
        io.load_image("/dev/null")
    with pytest.raises(FileNotFoundError, match="load_image: no such file"):
        io.load_image(str(tmp_path / "nul\x00.png"))


def test_codec_messages_are_silenced(tmp_path, capfd):
    """Issue 11.11: OpenCV's [ WARN ] and libpng's own error lines leaked to stderr."""
    ok, buf = cv2.imencode(
        ".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    )
    data = buf.tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "crc.png").write_bytes(data[:40] + b"x" + data[41:])
    for name in ("cut.png", "crc.png"):
        with pytest.raises(ValueError, match=f"cannot read .*{name} as an image"):
            io.load_image(tmp_path / name)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    print("stderr still works", file=sys.stderr)
    os.write(2, b"fd 2 still works\n")
    assert capfd.readouterr().err == "stderr still works\nfd 2 still works\n"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, mask):
    """Issue 11.16: atomic writes made every file 0600 (mkstemp's mode)."""
    old = os.umask(mask)
    try:
        for path in (
            io.write_json(tmp_path / "r.json", {"a": 1}),
            io.save_image(tmp_path / "x.png", torch.rand(1, 4, 4)),
            io.atomic_write_bytes(tmp_path / "b.bin", b"xy"),
        ):
            assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask, path
    finally:
        os.umask(old)


def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    """Issue 11.7: a write that fails (a real ENOSPC, from /dev/full) raises OSError, keeps
    the old file and leaves no temporary file."""
    target = io.write_json(tmp_path / "summary.json", {"old": True})
    real = io.tempfile.mkstemp

    def full(**kwargs):
        fd, name = real(**kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    with pytest.raises(OSError, match="No space left on device"):
        io.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]


def test_one_json_cleaner():
    payload = {
        "a": float("nan"),
        "b": (1, torch.tensor([2.0, float("inf")])),
        3: np.float32(2),
        "p": io.Path("x/y"),
        "n": [np.int64(4), np.bool_(True), None, "s"],
    }
    want = {"a": None, "b": [1, [2.0, None]], "3": 2.0, "p": "x/y", "n": [4, True, None, "s"]}
    assert io.to_json(payload) == want and io.nan_to_none(payload) == want
    assert json.loads(json.dumps(io.to_json(payload))) == want


def test_output_names_rule():
    def outs(n):
        return [f"{n}.png", f"{n}-figure.png", f"{n}.json"]

    assert io.output_names(["a/cat.png", "b/cat.png", "cat-1.png"], outs) == [
        "cat",
        "cat-1",
        "cat-1-1",
    ]
    assert io.output_names(["foo.png", "foo-figure.png"], outs) == ["foo", "foo-figure-1"]
    assert io.output_names(["foo-figure.png", "foo.png"], outs) == ["foo-figure", "foo-1"]
    assert io.output_names(["summary.png"], outs, ["summary.json"]) == ["summary-1"]
    assert io.output_names(["Cat.png", "cat.png", "ca\u0301t.png", "c\u00e1t.png"], outs) == [
        "Cat",
        "cat-1",
        "ca\u0301t",
        "c\u00e1t-1",
    ]  # case and NFC-insensitive
    assert io.output_names(["..", ".", ".png"], outs) == ["__", "image", ".png"]
    long = io.output_names(["\u00e9" * 300 + ".png"], outs)[0]
    assert len(long.encode()) <= io.MAX_NAME_BYTES and long == "\u00e9" * 80
    claimed = set()
    for n in io.output_names([f"d{i % 3}/x-{i % 2}.png" for i in range(12)] + ["x.png"] * 5, outs):
        files = {f.casefold() for f in outs(n)}
        assert not files & claimed
        claimed |= files


def test_inputs_inside(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere.png").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "out" / "link.png")
    paths = [
        tmp_path / "out" / "a.png",
        tmp_path / "out" / "link.png",
        tmp_path / "b.png",
        tmp_path / "out" / "sub" / ".." / "c.png",
    ]
    assert sorted(io.inputs_inside(paths, tmp_path / "out")) == ["a.png", "c.png", "link.png"]
