"""A decoder inside :func:`pyinvert.invert`: ``method="decoder"`` (its reconstruction is the
result) and ``init="decoder"`` (the optimization starts from it).

Example:
    >>> import pyinvert, torch
    >>> x = torch.rand(2, 3, 48, 48)
    >>> res = pyinvert.invert(x, method="decoder", decoder="hog", progress=False)
    >>> res.images.shape, res.settings["method"]
    (torch.Size([2, 1, 48, 48]), 'decoder')
"""

import time
from typing import Tuple

import torch
from torch import Tensor

from pyinvert.decoders.architecture import Decoder
from pyinvert.decoders.store import check_representation, decode, load

METHODS = ("optimization", "decoder")


def check_method(method, fn: str) -> str:
    if method not in METHODS:
        raise ValueError(f"{fn}: expected method in {METHODS}, got {method!r}")
    return method


def resolve_decoder(decoder, rep, fn: str) -> Decoder:
    """A :class:`Decoder` from a name, a path or a Decoder (None: the shipped decoder named
    after the representation), checked against ``rep``."""
    if decoder is None:
        decoder = rep.name
    if not isinstance(decoder, Decoder):
        try:
            decoder = load(decoder)
        except FileNotFoundError as error:
            raise ValueError(f"{fn}: {error}") from error
    check_representation(decoder, rep, fn)
    return decoder


def decoder_images(
    decoder, rep, targets: Tensor, image_size, device, dtype, fn: str
) -> Tuple[Tensor, float, str]:
    """(images [B, C, H, W] in [0, 1] on ``device`` in ``dtype``, seconds, the decoder's
    source) decoded from the target codes."""
    dec = resolve_decoder(decoder, rep, fn)
    dec = dec.to(device)
    t0 = time.perf_counter()
    images = decode(dec, rep, targets.float(), tuple(image_size))
    seconds = time.perf_counter() - t0
    return images.to(device=device, dtype=dtype), seconds, getattr(dec, "source", "<module>")


def start_images(decoder, rep, targets: Tensor, image_size, device, dtype, fn: str) -> Tensor:
    """The decoder's reconstructions in the optimized scale (``rep.preprocess``): the
    optimization's starting point for ``init="decoder"``."""
    images, _, _ = decoder_images(decoder, rep, targets, image_size, device, dtype, fn)
    with torch.no_grad():
        return rep.preprocess(images)
