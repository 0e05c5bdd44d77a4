"""Decoders: networks trained to invert a representation in one forward pass (Dosovitskiy &
Brox, "Inverting Visual Representations with Convolutional Networks", CVPR 2016), as fast
inverters and as warm starts of the optimization.

* :class:`Decoder` (:mod:`.architecture`): upsample + convolution stages derived from the
  representation's stride and channels (HOG: 3 stages of x2; DSIFT and MobileNetV2
  ``features.3``: 2), the output cropped or padded to the image's exact size;
* :func:`train` (:mod:`.training`): random crops of photos, seeded per step, resumable
  checkpoints, data-parallel under ``torchrun``; :mod:`.data` makes the batches;
* :func:`load` / :func:`decode` (:mod:`.store`): decoder files, found by name like the model
  weights, and the shipped ones in ``weights/``;
* :class:`ModularDecoder` (:mod:`.modular`): per-block inverters of a CNN, trained stacked
  (one block at a time) or jointly (end to end).

``pyinvert.invert(images, method="decoder", decoder="hog")`` returns a decoder's
reconstruction; ``init="decoder"`` starts the optimization from it.
"""

from pyinvert.decoders.architecture import Decoder, code_geometry, code_map, fit_to_size
from pyinvert.decoders.modular import ModularDecoder, compare_modes, train_modular
from pyinvert.decoders.store import SHIPPED, decode, find_decoder, load, save_decoder
from pyinvert.decoders.training import LOSSES, TrainResult, train

__all__ = [
    "Decoder",
    "code_geometry",
    "code_map",
    "fit_to_size",
    "train",
    "TrainResult",
    "LOSSES",
    "load",
    "decode",
    "find_decoder",
    "save_decoder",
    "SHIPPED",
    "ModularDecoder",
    "train_modular",
    "compare_modes",
]
