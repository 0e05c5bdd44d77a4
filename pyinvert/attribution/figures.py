"""Figures of attribution: heatmap overlays, the labelled per-image grid, patch grids and the
randomization-test plot. Images are HWC uint8 RGB numpy arrays (drawn with OpenCV)."""

from typing import Dict, List, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from pyinvert.io import to_uint8

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX

#: Column titles of the methods in figures.
TITLES = {
    "saliency": "saliency",
    "deconvnet": "deconvnet",
    "guided_backprop": "guided BP",
    "gradcam": "Grad-CAM",
    "guided_gradcam": "guided Grad-CAM",
    "integrated_gradients": "integrated grad.",
    "smoothgrad": "SmoothGrad",
    "occlusion": "occlusion",
}


def heat(m: Tensor, percentile: float = 99.0) -> np.ndarray:
    """(H, W) map -> HWC uint8 RGB colour image: |m| scaled by its ``percentile``-th
    percentile (signed maps shown by magnitude), OpenCV's JET colormap."""
    a = m.detach().float().abs().cpu().numpy()
    top = float(np.percentile(a, percentile)) if a.size else 0.0
    a = np.clip(a / top, 0, 1) if top > 0 else np.zeros_like(a)
    bgr = cv2.applyColorMap((a * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return bgr[:, :, ::-1].copy()


def to_rgb8(image: Tensor) -> np.ndarray:
    a = to_uint8(image)
    return np.repeat(a[:, :, None], 3, 2) if a.ndim == 2 else a


def overlay(image: Tensor, m: Tensor, alpha: float = 0.55) -> np.ndarray:
    """The map's heatmap blended over the (3, H, W) image: ``alpha`` heat, the rest image."""
    base = to_rgb8(image).astype(np.float32)
    return (alpha * heat(m) + (1 - alpha) * base).round().astype(np.uint8)


def _text(canvas, text, x, y, scale=0.42, color=(0, 0, 0)):
    cv2.putText(canvas, text, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)


def _fit(text, width, scale=0.42):
    """``text`` cut (ending in "~") to fit ``width`` pixels."""
    cut = text
    while (
        cut
        and cv2.getTextSize(cut + ("~" if cut != text else ""), _FONT, scale, 1)[0][0] > width - 4
    ):
        cut = cut[:-1]
    return cut if cut == text else cut + "~"


def attribution_grid(
    image: Tensor, maps: Dict[str, Tensor], row_labels: Sequence[str], pad: int = 4
) -> np.ndarray:
    """One image's grid: a header of method names; per target a row "original | overlay per
    method" with the target's label over the original.

    Args:
        image: (3, H, W) in [0, 1].
        maps: method -> (T, H, W).
        row_labels: T labels (class and score).

    Returns:
        HWC uint8 RGB.
    """
    H, W = image.shape[-2:]
    cell = max(W, 96)
    scale = cell / W
    head, lab = 22, 18
    cols = ["image"] + list(maps)
    T = len(row_labels)
    ch = int(round(H * scale))
    canvas = np.full(
        (head + T * (lab + ch + pad), len(cols) * (cell + pad) + pad, 3), 255, np.uint8
    )

    for j, name in enumerate(cols):
        _text(canvas, _fit(TITLES.get(name, name), cell), pad + j * (cell + pad) + 2, 15, 0.45)
    orig = to_rgb8(image)
    for t in range(T):
        y = head + t * (lab + ch + pad)
        _text(canvas, _fit(row_labels[t], canvas.shape[1]), pad + 2, y + 13, 0.42, (20, 20, 140))
        # occlusion: only score drops are evidence for the class (a rise shows as cold)
        tiles = [orig] + [
            overlay(image, maps[m][t].clamp(min=0) if m == "occlusion" else maps[m][t])
            for m in maps
        ]
        for j, tile in enumerate(tiles):
            tile = (
                cv2.resize(tile, (cell, ch), interpolation=cv2.INTER_NEAREST)
                if tile.shape[1] != cell
                else tile
            )
            x0 = pad + j * (cell + pad)
            canvas[y + lab : y + lab + ch, x0 : x0 + cell] = tile
    return canvas


def tile_grid(
    tiles: List[List[np.ndarray]], row_labels: Sequence[str], cell: int = 64, pad: int = 3
) -> np.ndarray:
    """Rows of equal-size tiles (resized to ``cell``) with a label to the left of each row."""
    label_w = 90
    n = max((len(r) for r in tiles), default=0)
    canvas = np.full(
        (pad + len(tiles) * (cell + pad), label_w + n * (cell + pad) + pad, 3), 255, np.uint8
    )
    for i, row in enumerate(tiles):
        y = pad + i * (cell + pad)
        _text(canvas, _fit(row_labels[i], label_w), 2, y + cell // 2 + 4, 0.4)
        for j, tile in enumerate(row):
            x0 = label_w + j * (cell + pad)
            canvas[y : y + cell, x0 : x0 + cell] = cv2.resize(
                tile, (cell, cell), interpolation=cv2.INTER_AREA
            )
    return canvas


def line_plot(
    series: Dict[str, Sequence[float]],
    xlabels: Sequence[str],
    title: str,
    ylim=(-1.0, 1.0),
    size=(640, 360),
) -> np.ndarray:
    """A small line chart (one coloured line per series, a legend, x tick labels)."""
    Wd, Hd = size
    canvas = np.full((Hd, Wd, 3), 255, np.uint8)
    left, right, top, bottom = 50, 150, 30, 90
    pw, ph = Wd - left - right, Hd - top - bottom
    lo, hi = ylim
    cv2.rectangle(canvas, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    _text(canvas, title, left, 18, 0.5)
    for v in np.linspace(lo, hi, 5):
        y = int(top + ph * (hi - v) / (hi - lo))
        cv2.line(canvas, (left - 4, y), (left, y), (0, 0, 0), 1)
        _text(canvas, f"{v:.1f}", 8, y + 4, 0.38)
    n = len(xlabels)
    xs = [int(left + pw * (i / max(1, n - 1))) for i in range(n)]
    for i, lab in enumerate(xlabels):
        org = (xs[i] - 4, top + ph + 8)
        img = np.full((14, 80, 3), 255, np.uint8)
        _text(img, lab[:13], 1, 11, 0.35)
        rot = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
        h, w = rot.shape[:2]
        y0, x0 = org[1], max(0, org[0] - w // 2)
        canvas[y0 : y0 + min(h, Hd - y0), x0 : x0 + w] = rot[: Hd - y0]
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for k, (name, vals) in enumerate(series.items()):
        c = colors[k % len(colors)]
        pts = [
            (xs[i], int(top + ph * (hi - float(np.clip(v, lo, hi))) / (hi - lo)))
            for i, v in enumerate(vals)
        ]
        for a, b in zip(pts, pts[1:]):
            cv2.line(canvas, a, b, c, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(canvas, p, 3, c, -1)
        ly = top + 14 + 18 * k
        cv2.line(canvas, (left + pw + 10, ly - 4), (left + pw + 30, ly - 4), c, 2)
        _text(canvas, name, left + pw + 34, ly, 0.4)
    return canvas


def as_tensor_image(a: np.ndarray) -> Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255
