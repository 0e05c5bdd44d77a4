"""2-D embeddings of images' codes with scikit-learn's t-SNE or PCA, drawn as a scatter of
thumbnails."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.io import to_uint8
from pyinvert.toolbox.codes import Encoder
from pyinvert.toolbox.common import Source, check_choice, check_int, space_representation


def thumbnail_scatter(
    points: Tensor, images: Tensor, canvas: int = 1024, thumb: int = 64
) -> np.ndarray:
    """Thumbnails [N, 3, h, w] placed at their 2-D ``points`` [N, 2] (scaled to fill a white
    ``canvas`` x ``canvas`` square, later images on top): an HWC uint8 RGB array."""
    out = np.full((canvas, canvas, 3), 255, np.uint8)
    if points.shape[0] == 0:
        return out
    p = points.double()
    lo, span = p.amin(0), (p.amax(0) - p.amin(0)).clamp_min(1e-12)
    xy = ((p - lo) / span * (canvas - thumb)).round().long()
    small = torch.nn.functional.interpolate(images.float(), size=(thumb, thumb), mode="area")
    for (x, y), im in zip(xy.tolist(), small):
        out[canvas - thumb - y : canvas - y, x : x + thumb] = to_uint8(im)  # y up
    return out


@dataclass
class EmbedResult:
    """A 2-D embedding.

    Attributes:
        points: [N, 2] (float32) in the method's units.
        names: the images' names.
        figure: the thumbnail scatter, an HWC uint8 RGB array.
        settings: method, seed, representation, space.
    """

    points: Tensor
    names: List[str]
    figure: np.ndarray
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {**self.settings, "points": {n: p for n, p in zip(self.names, self.points.tolist())}}

    def save(self, directory, name: str = "embedding") -> List[Path]:
        """``<name>.png`` (the scatter) and ``<name>.json`` (the points)."""
        directory = Path(directory)
        return [
            _io.save_image(directory / f"{name}.png", self.figure),
            _io.write_json(directory / f"{name}.json", self.summary()),
        ]


def embed(
    images,
    representation=None,
    method: str = "tsne",
    *,
    space: str = "feature",
    seed: int = 0,
    perplexity: Optional[float] = None,
    size: Optional[int] = 224,
    normalize: bool = True,
    batch_size: int = 32,
    cache_dir: Optional[str] = None,
    device=None,
    canvas: int = 1024,
    thumb: int = 64,
) -> EmbedResult:
    """Images' codes embedded in 2-D by scikit-learn's t-SNE or PCA.

    Args:
        images: a folder, a list of paths or a Tensor (N, C, H, W) in [0, 1].
        representation: what :func:`pyinvert.as_representation` takes; unused in pixel space.
            Default: None.
        method: "tsne" (``sklearn.manifold.TSNE``, PCA initialization) or "pca"
            (``sklearn.decomposition.PCA``). Default: "tsne".
        space: "feature" or "pixel". Default: "feature".
        seed: the random state of t-SNE (and of PCA's randomized solver). Default: 0.
        perplexity: t-SNE's perplexity; None for min(30, (N - 1) / 3). Default: None.
        size: images fitted to size x size RGB; None keeps them. Default: 224.
        normalize: embed L2-normalized codes. Default: True.
        batch_size: images encoded at once. Default: 32.
        cache_dir: the codes' cache folder (as :func:`pyinvert.neighbors`). Default: None.
        device: where the representation runs. Default: None.
        canvas: the scatter's side in pixels. Default: 1024.
        thumb: a thumbnail's side in pixels. Default: 64.

    Returns:
        :class:`EmbedResult` (points [N, 2] and the thumbnail scatter).

    Example:
        >>> r = embed(torch.rand(5, 3, 8, 8), method="pca", space="pixel", size=None)
        >>> r.points.shape
        torch.Size([5, 2])
    """
    fn = "embed"
    check_choice(method, "method", ("tsne", "pca"), fn)
    check_int(seed, "seed", fn, low=0)
    rep = space_representation(space, representation, device, fn)
    src = Source(images, size, fn)
    if len(src) < 3:
        raise ValueError(f"{fn}: expected at least 3 images to embed, got {len(src)}")
    codes = Encoder(rep, space, normalize, device, cache_dir).encode_source(src, batch_size)
    data = codes.double().numpy()
    if method == "pca":
        # scikit-learn is imported where it is used: it takes over a second to import, and
        # `import pyinvert` (every CLI call) should not pay for it
        from sklearn.decomposition import PCA

        points = PCA(n_components=2, random_state=seed).fit_transform(data)
        used = None
    else:
        used = perplexity if perplexity is not None else min(30.0, (len(src) - 1) / 3)
        if not 0 < used < len(src):
            raise ValueError(
                f"{fn}: expected 0 < perplexity < {len(src)} (the number of images), got {used}"
            )
        from sklearn.manifold import TSNE

        points = TSNE(
            n_components=2, perplexity=used, init="pca", random_state=seed, max_iter=1000
        ).fit_transform(data)
    points = torch.from_numpy(np.ascontiguousarray(points)).float()
    thumbs = torch.cat(
        [
            torch.nn.functional.interpolate(
                src.load(range(s, min(s + batch_size, len(src)))), size=(thumb, thumb), mode="area"
            )
            for s in range(0, len(src), batch_size)
        ]
    )  # small copies only: bounded memory
    figure = thumbnail_scatter(points, thumbs, canvas, thumb)
    settings = {
        "method": method,
        "space": space,
        "seed": seed,
        "perplexity": used,
        "normalize": normalize,
        "size": size,
        "representation": rep.config() if rep is not None else None,
    }
    return EmbedResult(points=points, names=src.names, figure=figure, settings=settings)
