"""What the subcommands share: options and their bounds, the checks made before any work
(device, output folder, pixel limit), input loading with per-input errors, output names and
the one-line messages.
"""

import argparse
import hashlib
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from pyinvert import io

#: Upper bounds of the counts and sizes the command line accepts (option: (lowest, highest)).
#: They keep a typo from asking for days of work or terabytes of memory; the library
#: functions themselves take any value.
BOUNDS = {
    "steps": (1, 100_000),
    "restarts": (1, 64),
    "batch_size": (1, 4096),
    "size": (1, 4096),
    "octaves": (1, 12),
    "columns": (1, 64),
    "window": (1, 1024),
    "seed": (0, 2**64 - 1),
    "max_pixels": (1, io.PIXEL_LIMIT_CEILING),
}
#: The most indices in a --class / --channel / --channels list, and the highest index.
MAX_UNITS, MAX_INDEX = 1024, 65535
#: The most values of a --data-weight sweep.
MAX_SWEEP = 32
#: Error lines longer than this are cut (a message never floods the terminal).
MAX_LINE = 400


# ---- messages -------------------------------------------------------------------------------


def shown(text) -> str:
    """``text`` as one printable line: control characters, undecodable bytes of file names
    and the like escaped (\\n, \\udcff), so a name cannot break a line or the terminal."""
    s = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in s
    )


def one_line(text, limit: int = MAX_LINE) -> str:
    s = shown(text)
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s) - limit} more characters)"


def say(text) -> None:
    """One line on stdout (made printable by :func:`shown`: a file name cannot break it)."""
    print(shown(text), flush=True)


def say_lines(text: str) -> None:
    """A block of lines on stdout (a table, a listing), each made printable."""
    print("\n".join(shown(line) for line in text.split("\n")), flush=True)


def error(text) -> None:
    """``pyinvert: error: <text>`` on stderr, one line."""
    print(f"pyinvert: error: {one_line(text)}", file=sys.stderr, flush=True)


# ---- option types and bounds ----------------------------------------------------------------


def integer(value: str) -> int:
    try:
        return int(value.strip().replace("_", ""))
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError(
            f"expected an integer, got {one_line(value, 40)!r}"
        ) from None


def positive_float(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, got {one_line(value, 40)!r}"
        ) from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {v}")
    return v


def float_list(value: str) -> List[float]:
    parts = [p for p in value.split(",") if p.strip()]
    if not parts or len(parts) > MAX_SWEEP:
        raise argparse.ArgumentTypeError(
            f"expected 1 to {MAX_SWEEP} numbers separated by commas, got {len(parts)}"
        )
    out = [positive_float(p) for p in parts]
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"expected distinct values, got {one_line(value, 80)}")
    return out


def index_list(value: str) -> List[int]:
    """``0,5,9`` or ``0:32`` (from 0 to 31) or both mixed: distinct indices in
    [0, MAX_INDEX], at most MAX_UNITS of them."""
    out = []
    try:
        for part in value.split(","):
            part = part.strip()
            if ":" in part:
                a, b = (int(v) for v in part.split(":"))
                if b - a > MAX_UNITS or a < 0:
                    raise OverflowError
                out.extend(range(a, b))
            elif part:
                out.append(int(part))
            if len(out) > MAX_UNITS:
                raise OverflowError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected indices like 0,5,9 or 0:32, got {one_line(value, 40)!r}"
        ) from None
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_UNITS} indices >= 0, got {one_line(value, 40)!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one index, got {value!r}")
    bad = [v for v in out if not 0 <= v <= MAX_INDEX]
    if bad:
        raise argparse.ArgumentTypeError(f"expected indices in [0, {MAX_INDEX}], got {bad[0]}")
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"expected distinct indices, got {one_line(value, 40)!r}")
    return out


def check_bounds(parser: argparse.ArgumentParser, args) -> None:
    """``parser.error`` (exit 2) for the first option outside :data:`BOUNDS`."""
    for name, (lo, hi) in BOUNDS.items():
        v = getattr(args, name, None)
        if v is None:
            continue
        flag = "--" + name.replace("_", "-")
        if v < lo:
            parser.error(f"{flag} must be >= {lo}, got {v}")
        if v > hi:
            parser.error(f"{flag} must be <= {hi}, got {v}")


def add_common(p: argparse.ArgumentParser, out: str, recipes: bool = True) -> None:
    if recipes:
        p.add_argument(
            "--recipe",
            choices=("cvpr2015", "ijcv2016"),
            default="cvpr2015",
            help="hyper-parameters of the CVPR 2015 or IJCV 2016 paper (default: %(default)s)",
        )
    p.add_argument(
        "--steps",
        type=integer,
        default=None,
        help=f"iterations in all, at most {BOUNDS['steps'][1]} (default: the recipe's schedule)",
    )
    p.add_argument(
        "--batch-size",
        type=integer,
        default=None,
        help=f"rows optimized together, at most {BOUNDS['batch_size'][1]}",
    )
    p.add_argument("--seed", type=integer, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    p.add_argument("--backend", choices=("fused", "reference"), default="fused")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_images(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=integer,
        default=None,
        help=f"refuse input images of more pixels (width x height), read from the "
        f"file header before decoding (default: ${io.MAX_PIXELS_ENV}, else "
        f"{io.DEFAULT_MAX_PIXELS})",
    )


def add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default="imagenet",
        help="CNN weights: imagenet, random or a file path (default: %(default)s)",
    )


def weights(args):
    w = getattr(args, "weights", "imagenet")
    return None if w in (None, "random", "none") else w


def cnn_spec(spec: str) -> Tuple[str, List[str]]:
    """``cnn:MODEL:LAYER[,LAYER...]`` -> (model, distinct layers in order)."""
    parts = spec.split(":")
    layers = list(dict.fromkeys(s.strip() for s in parts[-1].split(",") if s.strip()))
    if len(parts) != 3 or parts[0].lower() != "cnn" or not parts[1] or not layers:
        raise ValueError(
            f"expected a CNN representation as 'cnn:MODEL:LAYER[,LAYER...]', got {spec!r}"
        )
    return parts[1], layers


def rep_spec(value: str) -> str:
    v = value.strip()
    if v.lower() in ("hog", "hogb", "dsift"):
        return v.lower()
    if v.lower().startswith("cnn:"):
        try:
            cnn_spec(v)
        except ValueError as e:
            raise argparse.ArgumentTypeError(one_line(e, 200)) from None
        return v
    raise argparse.ArgumentTypeError(
        f"invalid choice: {one_line(value, 60)!r} (choose from hog, "
        f"hogb, dsift or cnn:MODEL:LAYER[,LAYER...])"
    )


# ---- checks before any work -----------------------------------------------------------------


def device_problem(spec: Optional[str]) -> Optional[str]:
    """Why ``--device spec`` cannot be used here (None: it can)."""
    if spec is None:
        return None
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        return f"--device {spec!r}: expected cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"--device {spec}: CUDA is not available here (torch {torch.__version__}"
                f"{'' if torch.version.cuda else ', built without CUDA'}); use --device cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            return (
                f"--device {spec}: no such GPU; {n} CUDA device(s) visible (cuda:0 to cuda:{n - 1})"
            )
    return None


#: Bytes written (and synced) into the output folder to check it before any work.
PROBE_BYTES = 1 << 16


def out_problem(out: Path) -> Optional[str]:
    """Why the output folder ``out`` cannot be written (None: it can): created if needed, then
    a probe file of :data:`PROBE_BYTES` written, synced and removed."""
    where = shown(out)
    if out.exists() and not out.is_dir():
        return f"--out {where} is a file, expected a folder"
    if out.is_symlink() and not out.exists():
        return f"--out {where} is a broken symbolic link, expected a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return f"cannot create the output folder {where}: a part of that path is a file"
    except OSError as e:
        return f"cannot create the output folder {where}: {e.strerror or e}"
    try:
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".pyinvert-probe-")
    except OSError as e:
        return f"cannot write into the output folder {where}: {e.strerror or e}"
    try:
        view = memoryview(bytes(PROBE_BYTES))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        return f"cannot write into the output folder {where}: {e.strerror or e}"
    finally:
        os.close(fd)
        os.unlink(tmp)
    return None


def preflight(args, out: Optional[Path] = None) -> Optional[int]:
    """The checks made before any work: the device, the pixel limit, the output folder. Prints
    the first problem and returns 2, or returns None when all is well."""
    problem = device_problem(getattr(args, "device", None))
    if problem is None and hasattr(args, "max_pixels"):
        try:
            args.max_pixels = io.max_pixels_setting(args.max_pixels)
        except ValueError as e:
            problem = str(e).replace("load_image: ", "").replace("max_pixels", "--max-pixels")
    if problem is None:
        problem = out_problem(Path(args.out) if out is None else out)
    if problem is not None:
        error(problem)
        return 2
    return None


# ---- inputs ---------------------------------------------------------------------------------


def load_inputs(
    paths: Sequence[str],
    min_size: int,
    max_pixels: Optional[int],
    prepare: Optional[Callable] = None,
    needs: str = "",
):
    """[(path, tensor)] of the readable images (``prepare(tensor)`` applied) and
    [(path, message)] of the others, in order."""
    ok, bad = [], []
    for path in paths:
        try:
            img = io.load_image(path, max_pixels=max_pixels)
            if prepare is not None:
                img = prepare(img)
        except (OSError, ValueError, TypeError) as e:
            bad.append((str(path), str(e)))
            continue
        except (MemoryError, RuntimeError) as e:  # torch's allocation failures
            bad.append((str(path), f"load_image: cannot load {path}: {type(e).__name__}: {e}"))
            continue
        H, W = img.shape[-2:]
        if H < min_size or W < min_size:
            bad.append(
                (
                    str(path),
                    f"image {path} is {H}x{W}, smaller than the "
                    f"{min_size}x{min_size} pixels the representation "
                    f"needs{needs}",
                )
            )
            continue
        ok.append((str(path), img))
    return ok, bad


def report(bad: Iterable[Tuple[str, str]]) -> None:
    for _, message in bad:
        error(message)


def fit(img, size: int):
    """[C, H, W] resized (shorter side = size, area / bilinear) and centre-cropped to size."""
    H, W = img.shape[-2:]
    if (H, W) == (size, size):
        return img
    s = size / min(H, W)
    h, w = max(size, round(H * s)), max(size, round(W * s))
    mode = "area" if s < 1 else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(img[None], size=(h, w), mode=mode, **kw)[0]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return out[:, y0 : y0 + size, x0 : x0 + size].clamp(0, 1)


def fitted(size: Optional[int]) -> Callable:
    """The ``prepare`` of the CNN commands: 3 channels, fitted to ``size`` (None: as is)."""

    def prepare(img):
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
        return fit(img, size) if size is not None else img

    return prepare


def names_for(
    paths: Sequence[str],
    out: Path,
    outputs: Callable[[str], Iterable[str]],
    reserved: Iterable[str] = (),
    inputs: Optional[Sequence[str]] = None,
) -> List[str]:
    """The output names of ``paths`` (:func:`pyinvert.io.output_names`): no input's files are
    another input's, a run-level file (``reserved``) or an input file inside ``out``, among
    ``inputs`` (every input given, the unreadable ones too; default: ``paths``)."""
    inside = io.inputs_inside(paths if inputs is None else inputs, out)
    return io.output_names(paths, outputs, [*reserved, *inside])


def folder_name(label: str) -> str:
    """A sub-folder name for a layer label: "," -> "+", "/" -> "_"; a long one is cut and
    given a hash of the whole so that it stays unique and under the file-name limit."""
    name = label.replace(",", "+").replace("/", "_")
    if len(name.encode()) > 120:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name.encode()[:100].decode(errors='ignore')}+{digest}"
    return name


def cannot_write(what, e: OSError) -> str:
    return f"cannot write {what}: {e.strerror or e}"


def guard(fn: Callable) -> Callable:
    """``fn(args)``, with a user error (bad model or layer name, missing weights, an option
    the library refuses) printed as one line and exit status 2 instead of a traceback (an
    unexpected failed write: exit status 1)."""

    def run(args) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError, TypeError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            error(msg)
            return 2
        except OSError as e:  # a write the command did not expect to fail
            error(cannot_write(e.filename or "an output", e))
            return 1

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run
