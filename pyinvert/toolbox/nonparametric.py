"""Efros & Leung's non-parametric texture synthesis (ICCV 1999): the output grows pixel by
pixel from a seed patch; each new pixel copies the centre of a source window whose
Gaussian-weighted SSD to the pixel's known neighbourhood is within (1 + error_threshold) of the
best. The distances of a batch of pixels to every source window are matrix products over the
unfolded source, and the choice among the candidates is drawn from a seeded generator."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert import io as _io
from pyinvert.tasks.inputs import as_image_batch
from pyinvert.toolbox.common import check_int


@dataclass
class NonparametricResult:
    """Synthesized textures.

    Attributes:
        images: [B, C, H, W] in [0, 1].
        sources: [B, C, h, w] the examples.
        origins: [B, H, W, 2] (y, x) of the source pixel each output pixel copies.
        settings: window, threshold, seed, sizes.
    """

    images: Tensor
    sources: Tensor
    origins: Tensor
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return dict(self.settings)

    def save(self, directory, names=None) -> List[Path]:
        """``<name>.png`` per texture and ``result.json``."""
        directory = Path(directory)
        names = list(names or [f"texture{i:03d}" for i in range(self.images.shape[0])])
        written = _io.save_image_rows(directory, self.images, names)
        written.append(_io.write_json(directory / "result.json", self.summary()))
        return written


def gaussian_window(window: int, sigma: Optional[float] = None) -> Tensor:
    """[window, window] Gaussian weights, sigma = window / 6.4 as in Efros & Leung's code."""
    sigma = window / 6.4 if sigma is None else sigma
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return torch.outer(g, g)


def _synthesize(
    src: Tensor,
    H: int,
    W: int,
    window: int,
    threshold: float,
    max_error: float,
    batch: int,
    gen: torch.Generator,
):
    C, h, w = src.shape
    half = window // 2
    dt = torch.float64
    s = src.to(dt)
    # Every source window as a row: [P, C * window^2] (valid positions only).
    patches = F.unfold(s[None], window).squeeze(0).T.contiguous()
    centres = torch.stack(
        torch.meshgrid(torch.arange(half, h - half), torch.arange(half, w - half), indexing="ij"),
        -1,
    ).reshape(-1, 2)
    sq = patches * patches
    gauss = gaussian_window(window).flatten().repeat(C)  # [C * window^2], channel-major
    out = torch.zeros(C, H + 2 * half, W + 2 * half, dtype=dt)
    filled = torch.zeros(H + 2 * half, W + 2 * half, dtype=dt)
    origin = torch.full((H, W, 2), -1, dtype=torch.long)
    # The seed: a random 3 x 3 source patch at the output's centre.
    k = min(3, h, w, H, W)
    sy = int(torch.randint(0, h - k + 1, (1,), generator=gen))
    sx = int(torch.randint(0, w - k + 1, (1,), generator=gen))
    oy, ox = (H - k) // 2, (W - k) // 2
    out[:, half + oy : half + oy + k, half + ox : half + ox + k] = s[:, sy : sy + k, sx : sx + k]
    filled[half + oy : half + oy + k, half + ox : half + ox + k] = 1
    grid = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"), -1)
    origin[oy : oy + k, ox : ox + k] = grid + torch.tensor([sy, sx])
    inner = (slice(half, half + H), slice(half, half + W))
    ones = torch.ones(1, 1, 3, 3, dtype=dt)
    tolerance = max_error
    while True:
        known = filled[inner]
        if bool(known.all()):
            break
        # The unfilled pixels with the most filled 8-neighbours come first.
        count = F.conv2d(known[None, None], ones, padding=1)[0, 0]
        todo = (known == 0) & (count > 0)
        ys, xs = torch.nonzero(todo, as_tuple=True)
        order = torch.argsort(-count[ys, xs], stable=True)[:batch]
        ys, xs = ys[order], xs[order]
        # Their neighbourhoods and masks as rows [N, C * window^2].
        nb = F.unfold(out[None], window).squeeze(0)  # [C w^2, H W]
        mk = F.unfold(filled[None, None], window).squeeze(0)  # [w^2, H W]
        cols = ys * W + xs
        T = nb[:, cols].T
        M = mk[:, cols].T.repeat(1, C) * gauss
        M = M / M.sum(1, keepdim=True)
        # SSD_masked(t, p) = sum m p^2 - 2 sum m t p + sum m t^2, for all p at once.
        d = M @ sq.T - 2 * (M * T) @ patches.T + (M * T * T).sum(1, keepdim=True)
        d = d.clamp_min(0)
        best = d.min(1, keepdim=True).values
        candidates = d <= best * (1 + threshold) + 1e-12
        # Efros & Leung accept only matches within MaxErrThreshold; when none of the batch's
        # best is, the tolerance grows (by 10%) rather than stopping.
        ok = best.squeeze(1) <= tolerance
        if not bool(ok.any()):
            tolerance *= 1.1
            continue
        ys, xs, candidates = ys[ok], xs[ok], candidates[ok]
        weights = candidates.to(dt)
        pick = torch.multinomial(weights, 1, generator=gen).squeeze(1)
        out[:, half + ys, half + xs] = (
            patches[pick].view(-1, C, window * window)[:, :, window * window // 2].T
        )
        filled[half + ys, half + xs] = 1
        origin[ys, xs] = centres[pick]
    return out[:, inner[0], inner[1]].to(src.dtype), origin


def texture_nonparametric(
    source,
    size=64,
    *,
    window: int = 11,
    error_threshold: float = 0.1,
    max_error: float = 0.3,
    batch: int = 64,
    generator: Optional[torch.Generator] = None,
    seed: Optional[int] = None,
) -> NonparametricResult:
    """Efros & Leung's non-parametric sampling: a texture of ``size`` that copies pixels of
    the example ``source``.

    Args:
        source: the example(s): Tensor (C, h, w) or (B, C, h, w) in [0, 1], a path or a list
            of paths.
        size: the output (H, W), or an int for a square. Default: 64.
        window: the neighbourhood's odd side (at most the source's). Default: 11.
        error_threshold: candidates are the windows within (1 + error_threshold) of the best
            distance (the paper's epsilon). Default: 0.1.
        max_error: the largest accepted (weighted mean squared, pixels in [0, 1]) distance
            before the tolerance grows, Efros & Leung's MaxErrThreshold. Default: 0.3.
        batch: pixels of the growing front filled at once (1: strictly sequential, as the
            paper). Default: 64.
        generator: the seed patch's and the candidates' random draws. Default: None.
        seed: a seed for a fresh generator when ``generator`` is None. Default: None.

    Returns:
        :class:`NonparametricResult` (images [B, C, H, W] and the source pixel each copies).

    Example:
        >>> src = torch.rand(3, 16, 16)
        >>> r = texture_nonparametric(src, 12, window=5, seed=0)
        >>> r.images.shape, bool(((r.images[0][:, None, None] - src[:, :, :, None, None])
        ...                       .abs().sum(0) == 0).flatten(0, 1).any(0).all())
        (torch.Size([1, 3, 12, 12]), True)

    References:
        A. A. Efros and T. K. Leung, "Texture Synthesis by Non-parametric Sampling", ICCV
        1999, Sec. 2 (the algorithm; sigma = window / 6.4 and the thresholds from the
        authors' code).
    """
    fn = "texture_nonparametric"
    check_int(window, "window", fn, low=1)
    check_int(batch, "batch", fn)
    if window % 2 == 0:
        raise ValueError(f"{fn}: expected an odd window, got {window}")
    if not error_threshold >= 0 or not max_error > 0:
        raise ValueError(
            f"{fn}: expected error_threshold >= 0 and max_error > 0, got "
            f"{error_threshold} and {max_error}"
        )
    H, W = (
        (size, size)
        if isinstance(size, int) and not isinstance(size, bool)
        else tuple(int(v) for v in size)
    )
    if H < 1 or W < 1:
        raise ValueError(f"{fn}: expected size >= 1, got {size!r}")
    src = as_image_batch(source, fn).detach().cpu().float()
    h, w = src.shape[-2:]
    if window > min(h, w):
        raise ValueError(f"{fn}: expected window <= the source's side {min(h, w)}, got {window}")
    gen = generator if generator is not None else torch.Generator()
    if generator is None and seed is not None:
        gen.manual_seed(seed)
    images, origins = [], []
    for b in range(src.shape[0]):
        image, origin = _synthesize(src[b], H, W, window, error_threshold, max_error, batch, gen)
        images.append(image)
        origins.append(origin)
    settings = {
        "window": window,
        "error_threshold": error_threshold,
        "max_error": max_error,
        "batch": batch,
        "size": [H, W],
        "source_size": [h, w],
        "seed": seed,
        "sigma": window / 6.4,
    }
    return NonparametricResult(
        images=torch.stack(images), sources=src, origins=torch.stack(origins), settings=settings
    )
