"""Training the shipped HOGgle dictionary (:class:`pyinvert.decoders.hoggle.PairedDictionary`)
on the offline training photos, with the settings it was made with."""

import torch

from pyinvert.data.photos import TRAINING_PHOTOS, training_photos
from pyinvert.decoders.hoggle import SHIPPED, PairedDictionary

#: The shipped dictionary's training settings (:func:`train_hoggle`): K is half the authors'
#: 1024 so that the file stays small (float16 atoms, about 4 MB) and training fits in
#: minutes on 2 CPU cores; the data are scikit-image's 9 photographs at three scales,
#: mirrored too (about 90 000 pairs, of which a seeded 60 000 are kept).
TRAIN_SETTINGS = {
    "num_atoms": 512,
    "window": 5,
    "lam": 0.02,
    "scales": (1.0, 0.75, 0.5),
    "flips": True,
    "max_pairs": 60000,
    "steps": 400,
    "batch_size": 400,
}


def train_hoggle(out=SHIPPED, *, seed: int = 0, progress: bool = True, **settings):
    """Train the shipped HOGgle dictionary on :func:`pyinvert.data.photos.training_photos`
    (never on the held-out photos) and save it to ``out``.

    Args:
        out: the file. Default: SHIPPED.
        seed: seeds the pair subset, the initial atoms and the batch order. Default: 0.
        progress: a progress bar. Default: True.
        **settings: overrides of :data:`TRAIN_SETTINGS` (the arguments of
            :meth:`PairedDictionary.fit`).

    Returns:
        The :class:`PairedDictionary` (its ``metadata["seconds"]`` is the training time).

    Example:
        ``python bench/train_hoggle.py`` (the shipped file: 354 s on one core of a shared
        2-core machine).
    """
    unknown = sorted(set(settings) - set(TRAIN_SETTINGS))
    if unknown:
        raise ValueError(
            f"train_hoggle: expected settings among {sorted(TRAIN_SETTINGS)}, got {unknown}"
        )
    args = {**TRAIN_SETTINGS, **settings}
    photos = training_photos()
    pd = PairedDictionary.fit(
        list(photos.values()),
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
        **args,
    )
    pd.metadata.update(
        data="scikit-image photographs: " + ", ".join(TRAINING_PHOTOS),
        seed=int(seed),
        max_pairs=args["max_pairs"],
    )
    pd.save(out)
    return pd
