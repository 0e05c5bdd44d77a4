"""Image loading and saving, and atomic file writes.

Images are float tensors [C, H, W] in [0, 1] (C = 1 gray, 3 RGB; an alpha channel is dropped).
Every write goes to a temporary file in the target directory and is then renamed over the
target (``os.replace``), so a reader never sees a half-written file.
"""
import json
import math
import os
import tempfile
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import torch
from torch import Tensor

PathLike = Union[str, os.PathLike]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, default=_jsonable) + "\n")
                              .encode())


def _jsonable(v):
    if isinstance(v, (Tensor, np.ndarray)):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"write_json: cannot serialize {type(v).__name__}")


def array_to_tensor(array: np.ndarray, name: str = "image") -> Tensor:
    """HWC (or HW) numpy image to a float32 tensor [C, H, W] in [0, 1] (RGB order in, RGB out).

    uint8 is divided by 255, uint16 by 65535; float arrays are taken as already in [0, 1].
    4 channels: the alpha channel is dropped.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"load_image: expected {name} to be a numpy array, "
                        f"got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"load_image: expected {name} of shape (H, W), (H, W, 1), (H, W, 3) or "
                         f"(H, W, 4), got {list(array.shape)}")
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        data = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        data = array.astype(np.float32)
    elif array.dtype == np.bool_:
        data = array.astype(np.float32)
    else:
        raise TypeError(f"load_image: expected {name} of dtype uint8, uint16 or float, "
                        f"got {array.dtype}")
    if data.shape[2] == 4:
        data = data[:, :, :3]
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))


def load_image(path: PathLike) -> Tensor:
    """Read an image file (PNG, JPEG, ... 8 or 16 bit, gray, RGB or RGBA) as [C, H, W] in [0, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_image: no such file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"load_image: cannot read {path} as an image (unknown or corrupt format)")
    if image.ndim == 3:
        if image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return array_to_tensor(image, name=str(path))


def to_uint8(image: Tensor) -> np.ndarray:
    """[C, H, W] or [H, W] tensor in [0, 1] to an HWC (or HW) uint8 array (NaN -> 0)."""
    a = torch.nan_to_num(image.detach().float().cpu(), nan=0.0).clamp(0, 1)
    a = (a * 255 + 0.5).to(torch.uint8).numpy()
    if a.ndim == 3:
        a = a.transpose(1, 2, 0)
        if a.shape[2] == 1:
            a = a[:, :, 0]
    return a


def save_image(path: PathLike, image) -> Path:
    """Save a [C, H, W] tensor in [0, 1], or an HWC/HW uint8 RGB array, as a PNG, atomically."""
    import cv2

    a = to_uint8(image) if isinstance(image, Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ValueError(f"save_image: could not encode {path}")
    return atomic_write_bytes(path, buf.tobytes())


def nan_to_none(v):
    """A JSON-friendly copy of nested lists/dicts with NaN/Inf floats as None (JSON has none)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [nan_to_none(u) for u in v]
    if isinstance(v, dict):
        return {k: nan_to_none(u) for k, u in v.items()}
    return v


def last_finite(h: Tensor) -> Tensor:
    """Last finite value along the last dim of a history (NaN where there is none)."""
    finite = torch.isfinite(h)
    idx = torch.where(finite, torch.arange(h.shape[-1]).expand_as(h), -1).amax(-1)
    out = h.gather(-1, idx.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return torch.where(idx >= 0, out, torch.full_like(out, float("nan")))


def save_image_rows(directory, images: Tensor, names: Sequence[str]) -> List[Path]:
    """``<name>.png`` for each image of [B, C, H, W], or ``<name>-r<k>.png`` for each restart of
    [B, R, C, H, W], each written atomically. Returns the paths."""
    directory = Path(directory)
    written = []
    for i, name in enumerate(names):
        if images.dim() == 5:
            for r in range(images.shape[1]):
                written.append(save_image(directory / f"{name}-r{r}.png", images[i, r]))
        else:
            written.append(save_image(directory / f"{name}.png", images[i]))
    return written
