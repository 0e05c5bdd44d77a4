"""Pictures of what a layer responds to by construction: a CNN layer's weights as a grid of
filters, HOG's orientation templates and dense SIFT's orientation glyphs."""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from pyinvert import features as _features
from pyinvert import io as _io
from pyinvert.representations import CNN, DSIFTRepresentation, HOGRepresentation
from pyinvert.toolbox.common import check_int, titled_grid


@dataclass
class FiltersResult:
    """What :func:`filters` draws.

    Attributes:
        tiles: [N, C, h, w] in [0, 1]: each filter contrast-stretched (C = 3 for an RGB first
            layer, else 1), or each template's glyph.
        titles: one caption per tile.
        figure: the grid, an HWC uint8 RGB array.
        weights: the raw weights [N, C_in, k, k] (None for HOG / DSIFT templates).
        settings: what was drawn (layer, shapes).
    """

    tiles: Tensor
    titles: List[str]
    figure: np.ndarray
    weights: Optional[Tensor] = None
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"filters": int(self.tiles.shape[0]), **self.settings}

    def save(self, directory, name: str = "filters") -> List[Path]:
        """``<name>.png`` (the grid) and ``<name>.json`` (the settings)."""
        directory = Path(directory)
        return [
            _io.save_image(directory / f"{name}.png", self.figure),
            _io.write_json(directory / f"{name}.json", self.summary()),
        ]


def stretch_filters(weights: Tensor) -> Tensor:
    """Each filter [C, k, k] of ``weights`` [N, C, k, k] mapped to [0, 1] by its own minimum and
    maximum (over all its channels, so an RGB filter keeps its colours); a constant filter is
    0.5."""
    w = weights.detach().float()
    flat = w.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1, 1)
    span = flat.amax(1).view(-1, 1, 1, 1) - lo
    out = (w - lo) / span.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(span > 0, out, torch.full_like(w, 0.5))


def _conv_of(model, layer, fn):
    if isinstance(model, CNN):
        model, layer = model.model, layer if layer is not None else model.layers[0]
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{fn}: expected model to be an nn.Module, a pyinvert.CNN, HOG or "
            f"DenseSIFT, got {type(model).__name__}"
        )
    modules = dict(model.named_modules())
    if layer is None:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"{fn}: {type(model).__name__} has no Conv2d layer")
        layer = convs[0]
    if layer not in modules:
        raise ValueError(
            f"{fn}: unknown layer {layer!r}; the Conv2d layers are: "
            f"{', '.join(n for n, m in modules.items() if isinstance(m, nn.Conv2d))}"
        )
    module = modules[layer]
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(
            f"{fn}: expected layer {layer!r} to have 4-D (convolution) weights, "
            f"got {type(module).__name__}"
        )
    return layer, weight.detach().cpu()


def _channel_mosaic(tile: Tensor, channels: int) -> Tensor:
    """[C, k, k] gray slices (the first ``channels``) as one square mosaic [1, h, w] (1-pixel
    white separators)."""
    C, k, _ = tile.shape
    n = min(C, channels)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = torch.ones(1, rows * (k + 1) - 1, cols * (k + 1) - 1)
    for i in range(n):
        r, c = divmod(i, cols)
        out[0, r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = tile[i]
    return out


def _hog_templates(rep: HOGRepresentation):
    no = rep.num_orientations
    D = 3 * no + 4 if rep.variant == "uoctti" else 4 * no
    offset = 2 * no if rep.variant == "uoctti" else 0
    codes = torch.zeros(no, D, 1, 1)
    codes[torch.arange(no), offset + torch.arange(no)] = 1.0
    glyphs = _features.render_hog(
        codes, variant=rep.variant, num_orientations=no, glyph_size=33
    ).clamp(0, 1)
    return glyphs, [f"{180 * k / no:.0f} deg" for k in range(no)]


def _sift_glyphs(rep: DSIFTRepresentation, size: int = 96):
    """One glyph per orientation bin: the 4 x 4 spatial bins, each with the bin's arrow (the
    gradient direction 2 pi o / 8, as vl_dsift orders them)."""
    tiles = []
    cell = size // 4
    for o in range(8):
        a = np.zeros((size, size), np.uint8)
        for i in range(5):
            cv2.line(a, (0, i * cell), (size - 1, i * cell), 80, 1)
            cv2.line(a, (i * cell, 0), (i * cell, size - 1), 80, 1)
        angle = 2 * math.pi * o / 8
        for by in range(4):
            for bx in range(4):
                cx, cy = bx * cell + cell / 2, by * cell + cell / 2
                dx, dy = 0.4 * cell * math.cos(angle), 0.4 * cell * math.sin(angle)
                cv2.arrowedLine(
                    a,
                    (round(cx - dx), round(cy - dy)),
                    (round(cx + dx), round(cy + dy)),
                    255,
                    1,
                    cv2.LINE_AA,
                    tipLength=0.35,
                )
        tiles.append(torch.from_numpy(a).float()[None] / 255)
    return torch.stack(tiles), [f"bin {o}: {45 * o} deg" for o in range(8)]


def filters(
    model: Union[nn.Module, CNN],
    layer: Optional[str] = None,
    *,
    max_filters: int = 64,
    max_channels: int = 16,
    columns: Optional[int] = None,
    tile_size: int = 48,
) -> FiltersResult:
    """A grid figure of a layer's filters (or of a hand-crafted descriptor's templates).

    Args:
        model: a network (``nn.Module``), a :class:`pyinvert.CNN`, or a HOG / DenseSIFT module
            or representation (``pyinvert.HOG()``, ``as_representation("dsift")``).
        layer: the Conv2d module's name; None for the first convolution (a CNN's first
            layer). Default: None.
        max_filters: draw at most this many output filters (the first ones). Default: 64.
        max_channels: a filter of more than 3 input channels is drawn as a mosaic of its first
            ``max_channels`` input slices, in gray. Default: 16.
        columns: tiles per row; None for a near-square grid. Default: None.
        tile_size: tile height in pixels (nearest-neighbour upscaling). Default: 48.

    Returns:
        :class:`FiltersResult`: the stretched tiles, titles, the figure and the weights. Each
        filter is contrast-stretched on its own (:func:`stretch_filters`); a first layer's
        3-channel filters are drawn in RGB. HOG: one glyph per orientation (VLFeat's
        ``vl_hog_render`` bars); DSIFT: one glyph per orientation bin over the 4 x 4 bins.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> r = filters(net)
        >>> r.tiles.shape, r.figure.dtype
        (torch.Size([8, 3, 5, 5]), dtype('uint8'))
    """
    fn = "filters"
    check_int(max_filters, "max_filters", fn)
    check_int(max_channels, "max_channels", fn)
    check_int(tile_size, "tile_size", fn)
    if columns is not None:
        check_int(columns, "columns", fn)
    weights = None
    if isinstance(model, _features.HOG):
        model = HOGRepresentation.from_module(model)
    if isinstance(model, _features.DenseSIFT):
        model = DSIFTRepresentation(bin_size=model.bin_size, step=model.step)
    if isinstance(model, HOGRepresentation):
        tiles, titles = _hog_templates(model)
        settings = {"representation": model.config()}
    elif isinstance(model, DSIFTRepresentation):
        tiles, titles = _sift_glyphs(model)
        settings = {"representation": model.config()}
    else:
        layer, weights = _conv_of(model, layer, fn)
        shown = weights[:max_filters]
        stretched = stretch_filters(shown)
        if shown.shape[1] == 3:
            tiles = stretched
        else:
            tiles = torch.stack([_channel_mosaic(t, max_channels) for t in stretched])
        titles = [str(i) for i in range(shown.shape[0])]
        settings = {"layer": layer, "weight_shape": list(weights.shape), "rgb": shown.shape[1] == 3}
    n = tiles.shape[0]
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    scale = max(1, tile_size // max(tiles.shape[-2:]))
    big = tiles.repeat_interleave(scale, -2).repeat_interleave(scale, -1) if scale > 1 else tiles
    figure = titled_grid(list(big), titles, cols, height=max(tile_size, big.shape[-2]))
    return FiltersResult(
        tiles=tiles, titles=titles, figure=figure, weights=weights, settings=settings
    )
