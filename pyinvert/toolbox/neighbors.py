"""Nearest neighbours of query images in a gallery, in a representation's feature space or in
pixel space: exact search by matrix products, streamed over the gallery's encoding batches
(faiss, when installed, for large galleries)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

from pyinvert import io as _io
from pyinvert.toolbox.codes import Encoder
from pyinvert.toolbox.common import (
    Source,
    check_choice,
    check_int,
    space_representation,
    titled_grid,
)

try:  # optional: the large-gallery index
    import faiss
except ImportError:  # pragma: no cover (faiss is not a dependency)
    faiss = None

#: Galleries of at least this many images use faiss when it is installed.
FAISS_MIN_GALLERY = 50_000


class TopK:
    """The running exact k nearest neighbours of fixed queries [Q, D] over gallery blocks
    added in order (memory: one block's distances and Q x k), by Euclidean distance
    ``|q|^2 + |g|^2 - 2 q.g`` in float64; ties keep the lower gallery index."""

    def __init__(self, queries: Tensor, k: int):
        self.q = queries.double()
        self.qq = (self.q * self.q).sum(1, keepdim=True)
        self.k, self.seen = k, 0
        Q = queries.shape[0]
        self.d2 = torch.full((Q, 0), float("inf"), dtype=torch.float64)
        self.i = torch.zeros((Q, 0), dtype=torch.long)

    def add(self, block: Tensor) -> None:
        g = block.double()
        d2 = (self.qq + (g * g).sum(1)[None] - 2 * self.q @ g.T).clamp_min(0)
        idx = torch.arange(self.seen, self.seen + g.shape[0]).expand(self.q.shape[0], -1)
        self.seen += g.shape[0]
        cat_d, cat_i = torch.cat([self.d2, d2], 1), torch.cat([self.i, idx], 1)
        # Stable on (distance, index): the kept ones (lower indices) come first.
        top = torch.sort(cat_d, dim=1, stable=True).indices[:, : self.k]
        self.d2, self.i = cat_d.gather(1, top), cat_i.gather(1, top)

    def result(self):
        """(distances [Q, k] float32, indices [Q, k]), nearest first."""
        return self.d2.sqrt().float(), self.i


def knn(queries: Tensor, gallery: Tensor, k: int, chunk: int = 4096):
    """Exact k nearest neighbours by Euclidean distance over gallery chunks of ``chunk`` rows
    (:class:`TopK`).

    Returns:
        (distances [Q, k], indices [Q, k]), nearest first (ties: the lower index first).
    """
    top = TopK(queries, min(k, gallery.shape[0]))
    for start in range(0, gallery.shape[0], chunk):
        top.add(gallery[start : start + chunk])
    return top.result()


class FaissTopK:
    """The same over a faiss ``IndexFlatL2`` (exact L2, float32) that the blocks are added
    to."""

    def __init__(self, queries: Tensor, k: int):
        self.q = np.ascontiguousarray(queries.numpy(), dtype=np.float32)
        self.k, self.index = k, faiss.IndexFlatL2(queries.shape[1])

    def add(self, block: Tensor) -> None:
        self.index.add(np.ascontiguousarray(block.numpy(), dtype=np.float32))

    def result(self):
        d2, idx = self.index.search(self.q, self.k)
        return torch.from_numpy(d2).clamp_min(0).sqrt(), torch.from_numpy(idx).long()


@dataclass
class NeighborsResult:
    """The neighbours of each query.

    Attributes:
        indices: [Q, k] gallery indices, nearest first.
        distances: [Q, k] Euclidean distances between the (normalized) codes.
        queries: [Q, 3, S, S] the queries as compared (fitted).
        neighbors: [Q, k, 3, S, S] the neighbours' images.
        gallery_names: the gallery's file names (image000, ... for a tensor).
        settings: space, representation, k, the backend ("exact" or "faiss") and the cache's
            hits and misses.
    """

    indices: Tensor
    distances: Tensor
    queries: Tensor
    neighbors: Tensor
    gallery_names: List[str]
    settings: dict = field(default_factory=dict)
    query_names: Optional[List[str]] = None

    def figure(self, height: int = 96) -> np.ndarray:
        """One row per query: the query, then its k neighbours titled with their distance."""
        tiles, titles = [], []
        qnames = self.query_names or [f"query {i}" for i in range(self.queries.shape[0])]
        for q in range(self.queries.shape[0]):
            tiles.append(self.queries[q])
            titles.append(qnames[q])
            for j in range(self.indices.shape[1]):
                tiles.append(self.neighbors[q, j])
                titles.append(f"{j + 1}: d={self.distances[q, j].item():.3g}")
        return titled_grid(tiles, titles, self.indices.shape[1] + 1, height)

    def summary(self) -> dict:
        return {
            **self.settings,
            "neighbors": [
                [
                    {"index": int(i), "name": self.gallery_names[int(i)], "distance": float(d)}
                    for i, d in zip(row_i, row_d)
                ]
                for row_i, row_d in zip(self.indices, self.distances)
            ],
        }

    def save(self, directory, name: str = "neighbors") -> List[Path]:
        """``<name>.png`` (the figure) and ``<name>.json`` (settings and neighbours)."""
        directory = Path(directory)
        return [
            _io.save_image(directory / f"{name}.png", self.figure()),
            _io.write_json(directory / f"{name}.json", self.summary()),
        ]


def neighbors(
    queries,
    gallery,
    representation=None,
    k: int = 5,
    space: str = "feature",
    *,
    size: Optional[int] = 224,
    normalize: bool = True,
    batch_size: int = 32,
    cache_dir: Optional[str] = None,
    device=None,
    chunk: int = 4096,
    backend: str = "auto",
) -> NeighborsResult:
    """The k nearest gallery images of each query, in feature or pixel space.

    Args:
        queries: the query images: a Tensor (Q, C, H, W) in [0, 1], a path, a list of paths or
            a folder.
        gallery: the gallery: a folder (its image files, sorted by name), a list of paths or a
            Tensor (N, C, H, W).
        representation: what :func:`pyinvert.as_representation` takes ("cnn:mobilenet_v2:
            features.18", a :class:`pyinvert.CNN`, "hog", a module); unused in pixel space.
            Default: None.
        k: neighbours per query (at most the gallery's size). Default: 5.
        space: "feature" (the representation's code) or "pixel" (the fitted pixels).
            Default: "feature".
        size: every image is fitted to size x size RGB (the ImageNet evaluation crop); None
            keeps the sizes (which must then agree). Default: 224.
        normalize: compare L2-normalized codes (cosine distance). Default: True.
        batch_size: gallery images encoded at once (the memory bound). Default: 32.
        cache_dir: a folder caching the gallery's codes (one file per image, keyed by the
            representation's config and the image's hash); None: no cache. Default: None.
        device: where the representation runs; None for the CPU. Default: None.
        chunk: at most this many gallery rows per distance block (the blocks are the
            encoding batches). Default: 4096.
        backend: "exact", "faiss" or "auto" (faiss for galleries of at least
            FAISS_MIN_GALLERY images when it is installed). Default: "auto".

    Returns:
        :class:`NeighborsResult` (indices and distances [Q, k], the images, a figure).

    Example:
        >>> g = torch.rand(6, 3, 8, 8)
        >>> r = neighbors(g[[4, 1]], g, k=2, space="pixel", size=None)
        >>> r.indices[:, 0].tolist()
        [4, 1]
    """
    fn = "neighbors"
    check_int(k, "k", fn)
    check_choice(backend, "backend", ("auto", "exact", "faiss"), fn)
    if size is not None:
        check_int(size, "size", fn)
    if backend == "faiss" and faiss is None:
        raise ValueError(f"{fn}: backend='faiss' needs the faiss package, which is not installed")
    rep = space_representation(space, representation, device, fn)
    check_int(batch_size, "batch_size", fn)
    check_int(chunk, "chunk", fn)
    qsrc, gsrc = Source(queries, size, fn), Source(gallery, size, fn)
    encoder = Encoder(rep, space, normalize, device, cache_dir)
    qimages = qsrc.load(range(len(qsrc)))
    qcodes = Encoder(rep, space, normalize, device).encode(qimages)
    use_faiss = faiss is not None and (
        backend == "faiss" or (backend == "auto" and len(gsrc) >= FAISS_MIN_GALLERY)
    )
    k_eff = min(k, len(gsrc))
    # Streamed: each batch of gallery codes is searched and dropped (memory: one batch).
    top = (FaissTopK if use_faiss else TopK)(qcodes, k_eff)
    step = min(batch_size, chunk)
    for start in range(0, len(gsrc), step):
        codes = encoder.encode(gsrc.load(range(start, min(start + step, len(gsrc)))))
        if codes.shape[1] != qcodes.shape[1]:
            raise ValueError(
                f"{fn}: the queries' codes have {qcodes.shape[1]} values and the "
                f"gallery's {codes.shape[1]}; give size= so that the images "
                f"agree"
            )
        top.add(codes)
    distances, indices = top.result()
    flat = gsrc.load(indices.flatten().tolist())
    shown = flat.reshape(indices.shape[0], k_eff, *flat.shape[1:])
    settings = {
        "space": space,
        "k": k_eff,
        "normalize": normalize,
        "size": size,
        "representation": rep.config() if rep is not None else None,
        "backend": "faiss" if use_faiss else "exact",
        "gallery_size": len(gsrc),
        "cache_hits": encoder.hits,
        "cache_misses": encoder.misses,
    }
    return NeighborsResult(
        indices=indices,
        distances=distances,
        queries=qimages,
        neighbors=shown,
        gallery_names=gsrc.names,
        settings=settings,
        query_names=qsrc.names,
    )
