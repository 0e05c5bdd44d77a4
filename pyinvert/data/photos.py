"""Natural photos for training and evaluating learned models (priors, decoders), found in
packages that ship them offline: scikit-image's ``skimage/data`` and scikit-learn's sample
images. Nothing is downloaded.

Two disjoint sets, so that a model is never tuned on what it is evaluated on:

- :func:`training_photos`: scikit-image's photographs (CC0 or public domain). The bundled
  224-px samples of :mod:`pyinvert.data` are crops of five of them.
- :func:`heldout_photos`: scikit-learn's ``china.jpg`` and ``flower.jpg`` (CC BY 2.0, by
  danielbuechele and vultilion on Flickr, as scikit-learn's ``datasets/images/README.txt``
  states). For evaluation only: never train or tune defaults on them.

Each is returned as float32 [3, H, W] in [0, 1] (gray photos repeated over the channels).
"""

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from pyinvert import io

#: scikit-image photographs (function names in ``skimage.data``) and their licences, as the
#: functions' docstrings state them.
TRAINING_PHOTOS = {
    "astronaut": "public domain (NASA)",
    "brick": "CC0 (CC0Textures)",
    "camera": "CC0 (Lav Varshney)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "coins": "no known copyright restrictions (Brooklyn Museum)",
    "grass": "CC0 (linolafett)",
    "gravel": "CC0 (CC0Textures)",
    "rocket": "public domain (SpaceX)",
}

#: scikit-learn sample images and their licences (``sklearn/datasets/images/README.txt``).
HELDOUT_PHOTOS = {
    "china": "CC BY 2.0 (danielbuechele)",
    "flower": "CC BY 2.0 (vultilion)",
}


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return io.array_to_tensor(np.array(array[:, :, :3]), "photo")


def training_photos() -> Dict[str, torch.Tensor]:
    """scikit-image's photographs by name, float32 [3, H, W] in [0, 1], in a fixed order.

    Raises:
        ImportError: scikit-image is not installed (it is in requirements.txt).
    """
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "training_photos: needs scikit-image (pip install -r requirements.txt)"
        ) from error
    return {name: _as_tensor(getattr(skimage.data, name)()) for name in TRAINING_PHOTOS}


def heldout_photos() -> Dict[str, torch.Tensor]:
    """scikit-learn's two sample photos by name, float32 [3, H, W] in [0, 1]: for evaluation
    only (see the module docstring)."""
    from sklearn.datasets import load_sample_image  # imported when used: slow to import

    return {name: _as_tensor(load_sample_image(f"{name}.jpg")) for name in HELDOUT_PHOTOS}


def export_photos(directory, which: str = "training") -> List[Path]:
    """Write one of the sets as PNG files into ``directory`` (atomically) and return their
    paths: a folder for the commands that train on a folder (``pyinvert train-prior DIR``).

    Args:
        directory: the output folder (created).
        which: "training" or "heldout".
    """
    sets = {"training": training_photos, "heldout": heldout_photos}
    if which not in sets:
        raise ValueError(f"export_photos: expected which in {tuple(sets)}, got {which!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        io.save_image(directory / f"{name}.png", image) for name, image in sets[which]().items()
    ]
