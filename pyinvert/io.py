"""Image loading and saving, atomic file writes, JSON and output names.

Images are float tensors [C, H, W] in [0, 1] (C = 1 gray, 3 RGB; an alpha channel is dropped).
Every write goes to a temporary file in the target directory and is then renamed over the
target (``os.replace``), so a reader never sees a half-written file and a failed write (a full
disk) leaves the previous file as it was. New files get the usual mode (0666 less the umask).

:func:`load_image` refuses an image over a pixel limit (:data:`DEFAULT_MAX_PIXELS`, or
``$PYINVERT_MAX_PIXELS``, or its ``max_pixels`` argument) from the file header, before decoding
it, and an image with non-finite pixels (a float TIFF with NaN or Inf).
"""

import contextlib
import json
import math
import os
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch import Tensor

from pyinvert.imagesize import header_size

PathLike = Union[str, os.PathLike]

#: The default pixel limit (width x height) of :func:`load_image`: 50 megapixels.
DEFAULT_MAX_PIXELS = 50_000_000
#: The environment variable that sets the pixel limit.
MAX_PIXELS_ENV = "PYINVERT_MAX_PIXELS"
#: The largest pixel limit: OpenCV's own (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30).
PIXEL_LIMIT_CEILING = 1 << 30
#: The longest output name stem, in bytes (file names are at most 255 bytes).
MAX_NAME_BYTES = 160


# ---- atomic writes and JSON -----------------------------------------------------------------


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, racy with threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + os.replace), with mode
    0666 less the umask. On any error (e.g. a full disk) the temporary file is removed, the old
    ``path`` is kept and the OSError is raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def to_json(v):
    """A JSON-safe copy: non-finite floats become None (JSON has none), tensors and numpy
    arrays lists, tuples lists, numpy scalars numbers, paths strings, dict keys strings.

    Example:
        >>> to_json({"a": float("nan"), "b": (1, torch.tensor([2.0, float("inf")]))})
        {'a': None, 'b': [1, [2.0, None]]}
    """
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k) if not isinstance(k, str) else k: to_json(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json(u) for u in v]
    if isinstance(v, (Tensor, np.ndarray)):
        return to_json(v.tolist())
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return to_json(v.item())
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


#: The old name of :func:`to_json` (kept working).
nan_to_none = to_json


def _jsonable(v):
    if isinstance(v, (Tensor, np.ndarray, np.floating, np.integer, np.bool_, os.PathLike)):
        return to_json(v)
    raise TypeError(f"write_json: cannot serialize {type(v).__name__}")


def write_json(path: PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON (non-finite floats as null), atomically."""
    text = json.dumps(to_json(payload), indent=2, default=_jsonable) + "\n"
    return atomic_write_bytes(path, text.encode())


# ---- loading --------------------------------------------------------------------------------


def max_pixels_setting(value=None) -> int:
    """The pixel limit in force: ``value``, else ``$PYINVERT_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ValueError: the value (or the variable) is not an integer in [1, 2**30].
    """
    source = "max_pixels"
    if value is None:
        value = os.environ.get(MAX_PIXELS_ENV)
        source = f"${MAX_PIXELS_ENV}"
        if value is None or value.strip() == "":
            return DEFAULT_MAX_PIXELS
    try:
        if isinstance(value, bool):
            raise ValueError
        n = int(value.strip()) if isinstance(value, str) else int(value)
        if n != value and not isinstance(value, str):
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        raise ValueError(
            f"load_image: expected {source} to be a whole number of pixels in "
            f"[1, {PIXEL_LIMIT_CEILING}], got {str(value)[:40]!r}"
        ) from None
    if not 1 <= n <= PIXEL_LIMIT_CEILING:
        raise ValueError(
            f"load_image: expected {source} in [1, {PIXEL_LIMIT_CEILING}] "
            f"(OpenCV's own limit), got {n}"
        )
    return n


def array_to_tensor(array: np.ndarray, name: str = "image", *, bgr: bool = False) -> Tensor:
    """HWC (or HW) numpy image to a float32 tensor [C, H, W] in [0, 1] (RGB order in, RGB out;
    ``bgr=True``: BGR(A) in, as OpenCV decodes).

    uint8 is divided by 255, uint16 by 65535; float arrays are taken as already in [0, 1].
    4 channels: the alpha channel is dropped. One float32 copy is made (no other).

    Raises:
        ValueError: a bad shape, or non-finite (NaN, Inf) pixel values.
        TypeError: not a numpy array, or an unsupported dtype.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"load_image: expected {name} to be a numpy array, got {type(array).__name__}"
        )
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"load_image: expected {name} of shape (H, W), (H, W, 1), (H, W, 3) or "
            f"(H, W, 4), got {list(array.shape)}"
        )
    scale = {np.dtype(np.uint8): 1 / 255.0, np.dtype(np.uint16): 1 / 65535.0}.get(array.dtype)
    if scale is None and not (np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_):
        raise TypeError(
            f"load_image: expected {name} of dtype uint8, uint16 or float, got {array.dtype}"
        )
    if np.issubdtype(array.dtype, np.floating):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(
                f"load_image: {name} has {bad} non-finite pixel value(s) (NaN or "
                f"Inf); expected finite values in [0, 1]"
            )
    C = 1 if array.shape[2] == 1 else 3
    order = [2, 1, 0] if bgr and C == 3 else list(range(C))
    H, W = array.shape[:2]
    out = torch.empty(C, H, W, dtype=torch.float32)
    for c, k in enumerate(order):
        plane = array[:, :, k]
        out[c].copy_(torch.from_numpy(plane.astype(np.uint8) if plane.dtype == np.bool_ else plane))
    if scale is not None:
        out.mul_(scale)
    return out


_quiet_lock = threading.Lock()
_quiet_depth = [0, None]


@contextlib.contextmanager
def _quiet_codecs():
    """OpenCV's log and the codec libraries' own messages (libpng, libjpeg, libtiff print to
    the process's stderr) silenced for the duration: the caller reports a clear error
    instead. Nests and is safe across threads (the first to enter redirects, the last to
    leave restores)."""
    with _quiet_lock:
        if _quiet_depth[0] == 0:
            level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            try:
                saved = os.dup(2)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 2)
                os.close(null)
            except OSError:
                saved = None
            _quiet_depth[1] = (level, saved)
        _quiet_depth[0] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth[0] -= 1
            if _quiet_depth[0] == 0:
                level, saved = _quiet_depth[1]
                if saved is not None:
                    os.dup2(saved, 2)
                    os.close(saved)
                cv2.utils.logging.setLogLevel(level)


def _read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes, after its header has been checked against ``limit`` pixels."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(1 << 20)
            kind, wh = header_size(head)
            if wh is None and kind is not None and size > len(head):  # JPEG: big metadata
                head += f.read(min(size, 64 << 20) - len(head))
                kind, wh = header_size(head)
            if wh is not None and wh[0] * wh[1] > limit:
                raise ValueError(
                    f"load_image: {path} is a {wh[0]}x{wh[1]} {kind} image "
                    f"({wh[0] * wh[1]} pixels), over the limit of {limit} pixels "
                    f"(raise it with --max-pixels or ${MAX_PIXELS_ENV})"
                )
            if size > 16 * limit + (16 << 20):
                raise ValueError(
                    f"load_image: {path} is {size} bytes, more than any image of "
                    f"at most {limit} pixels takes (the pixel limit; raise it "
                    f"with --max-pixels or ${MAX_PIXELS_ENV})"
                )
            return head + f.read()
    except OSError as error:
        raise ValueError(f"load_image: cannot read {path}: {error.strerror or error}") from None


def load_image(path: PathLike, max_pixels: Optional[int] = None) -> Tensor:
    """Read an image file (PNG, JPEG, TIFF, ... 8 or 16 bit or float, gray, RGB or RGBA) as
    [C, H, W] in [0, 1].

    Args:
        path: the file.
        max_pixels: the largest width x height accepted, checked from the file header before
            decoding. Default: ``$PYINVERT_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`
            (50 megapixels).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a regular file (a folder, a device), unreadable, not an image, over the
            pixel limit, or with non-finite pixel values; or a bad ``max_pixels``.
    """
    limit = max_pixels_setting(max_pixels)
    path = Path(path)
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except (OSError, ValueError) as error:
        raise ValueError(f"load_image: cannot read {path}: {error}") from None
    if not exists:
        raise FileNotFoundError(f"load_image: no such file: {path}")
    if is_dir:
        raise ValueError(f"load_image: {path} is a folder, expected an image file")
    if not is_file:
        raise ValueError(f"load_image: {path} is not a regular file, expected an image file")
    data = _read_bytes(path, limit)
    try:
        with _quiet_codecs():
            image = (
                cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
            )
    except cv2.error as error:
        reason = str(error).strip().splitlines()[-1][:200]
        raise ValueError(f"load_image: cannot decode {path} ({reason})") from None
    del data
    if image is None:
        raise ValueError(f"load_image: cannot read {path} as an image (unknown or corrupt format)")
    if image.shape[0] * image.shape[1] > limit:  # a format whose header was not read
        raise ValueError(
            f"load_image: {path} is {image.shape[1]}x{image.shape[0]} "
            f"({image.shape[0] * image.shape[1]} pixels), over the limit of "
            f"{limit} pixels (raise it with --max-pixels or ${MAX_PIXELS_ENV})"
        )
    return array_to_tensor(image, name=str(path), bgr=image.ndim == 3)


# ---- saving ---------------------------------------------------------------------------------


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
    a = to_uint8(image) if isinstance(image, Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ValueError(f"save_image: could not encode {path}")
    return atomic_write_bytes(path, buf.tobytes())


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


# ---- output names ---------------------------------------------------------------------------


def _key(relative: str) -> str:
    """Two relative paths name the same file on a case-insensitive or normalizing file system
    (macOS, Windows) when their keys are equal."""
    return unicodedata.normalize("NFC", relative).casefold()


def _stem(path: PathLike) -> str:
    stem = Path(path).stem or Path(path).name or "image"
    if stem in (".", ".."):
        stem = stem.replace(".", "_")
    while len(os.fsencode(stem)) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem


def output_names(
    paths: Sequence[PathLike], outputs: Callable[[str], Iterable[str]], reserved: Iterable[str] = ()
) -> List[str]:
    """One output name per input, such that no two inputs' files are the same file.

    The rule: input i is named after its file's stem (cut to :data:`MAX_NAME_BYTES` bytes;
    "." and ".." become "_" and "__"); if any file ``outputs(name)`` would write is already
    claimed — by an earlier input, by a ``reserved`` run-level file (e.g. "summary.json"), or by
    an input file itself — the name becomes ``<stem>-1``, ``<stem>-2``, ... , the first whose
    files are all free. Files are compared case-insensitively after Unicode NFC normalization.

    Args:
        paths: the input files, in order.
        outputs: name -> the relative paths (with "/") of the files written for that input.
        reserved: relative paths that no input may claim.

    Returns:
        The names, in the order of ``paths``.

    Example:
        >>> output_names(["a/cat.png", "b/cat.png", "cat-1.png", "summary.png"],
        ...              lambda n: [f"{n}.png", f"{n}.json"], reserved=["summary.json"])
        ['cat', 'cat-1', 'cat-1-1', 'summary-1']
    """
    claimed: Dict[str, str] = {_key(r): "" for r in reserved}
    names = []
    for path in paths:
        stem = _stem(path)
        for k in range(16 * (len(claimed) + 1)):
            name = stem if k == 0 else f"{stem}-{k}"
            files = [_key(f) for f in outputs(name)]
            if len(set(files)) == len(files) and not any(f in claimed for f in files):
                break
        else:  # a claimed file blocks at most one candidate per output pattern
            raise ValueError(
                f"output_names: no free name for {path} (outputs(name) must give "
                f"distinct files for distinct names)"
            )
        claimed.update({f: name for f in files})
        names.append(name)
    return names


def inputs_inside(paths: Sequence[PathLike], directory: PathLike) -> List[str]:
    """The relative paths (with "/") of those ``paths`` that lie inside ``directory`` (as
    given, and with symbolic links resolved): input files an output must never overwrite."""
    inside = []
    for resolve in (os.path.abspath, os.path.realpath):
        try:
            root = Path(resolve(directory))
        except (OSError, ValueError):
            continue
        for p in paths:
            try:
                inside.append(Path(resolve(p)).relative_to(root).as_posix())
            except (ValueError, OSError):
                continue
    return list(dict.fromkeys(inside))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "atomic_write_bytes",
    "write_json",
    "to_json",
    "nan_to_none",
    "load_image",
    "array_to_tensor",
    "max_pixels_setting",
    "to_uint8",
    "save_image",
    "save_image_rows",
    "last_finite",
    "output_names",
    "inputs_inside",
]
