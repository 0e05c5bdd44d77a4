"""A decoder inside :func:`pyinvert.invert`: ``method="decoder"`` (its reconstruction is the
result) and ``init="decoder"`` (the optimization starts from it: :func:`warm_start`, whose
rule and its measurements are below).

Example:
    >>> import pyinvert, torch
    >>> x = torch.rand(2, 3, 48, 48)
    >>> res = pyinvert.invert(x, method="decoder", decoder="hog", progress=False)
    >>> res.images.shape, res.settings["method"]
    (torch.Size([2, 1, 48, 48]), 'decoder')
"""

import dataclasses
import time
from typing import Tuple

import torch
from torch import Tensor

from pyinvert.decoders.architecture import Decoder
from pyinvert.decoders.store import check_representation, decode, load
from pyinvert.optim.recipes import Recipe, Stage

METHODS = ("optimization", "decoder")

# ---- The warm start (``invert(init="decoder")``) -------------------------------------------
#
# A decoder's image needs no escape from noise, but run with the recipe's schedule (whose first
# stage, at the highest lr, is built for that escape) it reaches the noise start's final error
# only after 435-801 of cvpr2015's 800 iterations (12 held-out 224-px crops). The rule below was
# tuned on 224-px crops of the training photos (pyinvert.data.photos; a first exploration also
# looked at the held-out crops) and is measured on the held-out ones (bench/bench_decoders.py,
# section 3: 12/12 within 400 iterations, at most 316; 339 over two other seeds). Each of its
# three parts matters (800 iterations, held-out crops within 400 unless said):
# * the schedule: the recipe's lrs, first stage's to last stage's, decayed geometrically over
#   the budget in stages of WARM_STAGE_ITERATIONS (decaying over half of it and holding the
#   last lr reaches the noise start's error as fast but ends higher: 0.050 against 0.044). The
#   recipe resets the momentum at each lr change; this frequent reset is what helps (HOG's
#   energy is not smooth and a momentum left to build overshoots): the recipe's own schedule
#   gives 0/12, the same decay with the momentum never reset 0/12, in stages of 100 0/12;
# * the contrast: HOG is blind to it (block normalization), so the decoder cannot predict it;
#   the start is the decoder's image, mean-free, times WARM_CONTRAST (the data term's step
#   relative to the image grows as 1/contrast^2). At full contrast: 8/12;
# * a dither of WARM_DITHER times the recipe's noise (3 gray levels RMS with cvpr2015): without
#   it 2 of 12 training crops fail (a few pixels blow up, to 1e10 on the astronaut crop with
#   the recipe's schedule, and the loss becomes NaN; likely near-empty HOG cells of a smooth
#   image, where the normalization's gradient is large; noise has none). The held-out crops:
#   12/12 either way.
#: The warm start's contrast factor (on the decoder's mean-free image).
WARM_CONTRAST = 0.5
#: The warm start's dither, a multiple of the recipe's initialization noise.
WARM_DITHER = 0.05
#: Iterations per stage of the warm start's geometric lr decay.
WARM_STAGE_ITERATIONS = 6


def warm_stages(recipe: Recipe) -> Tuple[Stage, ...]:
    """The warm start's schedule for a momentum recipe of T iterations (see above): the lrs from
    the first stage's to the last stage's, geometrically, in stages of
    :data:`WARM_STAGE_ITERATIONS` (the last one takes the remainder) over the T iterations; the
    recipe's own stages when T holds fewer than two such stages.

    Example:
        >>> from pyinvert.optim.recipes import get_recipe
        >>> st = warm_stages(get_recipe("cvpr2015"))
        >>> len(st), st[0].lr, st[-1].lr, st[-1].iterations, sum(s.iterations for s in st)
        (133, 0.004, 4e-06, 8, 800)
    """
    T = recipe.iterations
    lr0, lr1 = recipe.stages[0].lr, recipe.stages[-1].lr
    per = WARM_STAGE_ITERATIONS
    n = T // per
    if n < 2:
        return recipe.stages
    counts = [per] * (n - 1) + [T - (n - 1) * per]
    return tuple(Stage(lr0 * (lr1 / lr0) ** (i / (n - 1)), k) for i, k in enumerate(counts))


def warm_recipe(recipe: Recipe) -> Recipe:
    """The recipe a warm start runs: :func:`warm_stages` for a momentum recipe whose momentum is
    reset at lr changes and whose lr decreases (cvpr2015); any other recipe as it is."""
    lrs = [s.lr for s in recipe.stages]
    if recipe.optimizer != "momentum" or not recipe.reset_momentum or not lrs[-1] < lrs[0]:
        return recipe
    return dataclasses.replace(recipe, stages=warm_stages(recipe))


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


def warm_start(
    decoder, rep, targets: Tensor, image_size, device, dtype, recipe, fn: str
) -> Tuple[Tensor, object, float]:
    """What ``init="decoder"`` runs: (the start [B, C, H, W] in the optimized scale, the recipe,
    the dither as a multiple of the recipe's noise).

    For a recipe that :func:`warm_recipe` changes (cvpr2015) the start is
    the decoder's image made mean-free and scaled by ``WARM_CONTRAST`` (HOG sees neither mean nor
    contrast), dithered by ``WARM_DITHER`` times the recipe's noise, and run with
    :func:`warm_stages`; any other recipe starts from the decoder's image
    as it is, with its own schedule.
    """
    start = start_images(decoder, rep, targets, image_size, device, dtype, fn)
    warm = warm_recipe(recipe)
    if warm is recipe:
        return start, recipe, 0.0
    start = (start - start.mean(dim=(1, 2, 3), keepdim=True)) * WARM_CONTRAST
    return start, warm, WARM_DITHER
