"""What :func:`equivariance` and :func:`equivalence` return: rows of numbers, the fitted maps,
a text table, JSON, and the mapped codes M_g Phi(x) / E Phi_A(x) (to invert)."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from pyinvert import io
from pyinvert.analysis.features import layer_outputs, layers_of
from pyinvert.analysis.grids import warp_grid
from pyinvert.analysis.transforms import IDENTITY, parse_transform

_COLUMNS = (
    ("error_map", "M"),
    ("error_permutation", "perm"),
    ("error_identity", "M=I"),
    ("error_none", "none"),
    ("top1_map", "top1 M"),
    ("top1_permutation", "top1 perm"),
    ("top1_identity", "top1 M=I"),
    ("top1_none", "top1 none"),
)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) >= 1e-4 or v == 0 else f"{v:.1e}"


def format_rows(rows: List[dict], keys=("layer", "transform"), columns=_COLUMNS) -> str:
    """A fixed-width text table of ``rows`` (the columns any row has)."""
    cols = [(k, t) for k, t in columns if any(k in r for r in rows)]
    head = [k for k in keys] + [t for _, t in cols]
    body = [[str(r.get(k, "")) for k in keys] + [_fmt(r.get(c)) for c, _ in cols] for r in rows]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i < len(keys) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


@dataclass
class _Result:
    rows: List[dict]
    maps: Dict[tuple, torch.nn.Module]
    settings: dict

    def table(self) -> str:
        return format_rows(self.rows, self._keys)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows}

    def save(self, directory, name: str) -> List[Path]:
        """``<name>.json`` (settings and rows), ``<name>.txt`` (the table) and ``<name>_maps.pt``
        (the maps' state dicts) in ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = [io.write_json(d / f"{name}.json", io.nan_to_none(_jsonable(self.to_dict())))]
        out.append(io.atomic_write_bytes(d / f"{name}.txt", (self.table() + "\n").encode()))
        maps = {"/".join(k): m.state_dict() for k, m in self.maps.items()}
        path = d / f"{name}_maps.pt"
        torch.save(maps, path)
        out.append(path)
        return out


def _jsonable(v):
    return json.loads(
        json.dumps(v, default=lambda o: o.tolist() if isinstance(o, Tensor) else str(o))
    )


@dataclass
class EquivarianceResult(_Result):
    """Per layer x transform: ``error_map`` (|M_g Phi(x) - Phi(gx)|^2 / |Phi(gx)|^2 over the
    held-out valid cells), the baselines ``error_permutation`` (g moved onto the grid, channels
    untouched), ``error_identity`` (M_g = I: Phi(x) itself, the invariance baseline) and
    ``error_none`` (the training mean of Phi(gx): no equivariance), and for classifiers the
    matching ``top1_*`` (agreement of the network completed from each with the network on gx).

    Attributes:
        rows: one dict per (layer, transform), in layer-major order.
        maps: {(layer, transform): ChannelMap}.
        settings: the run's options, the photo split and the grid geometry.
        representation: the representation module.
        geometry: {layer: Geometry}.
        transforms: {name: Transform}.
    """

    representation: object = None
    geometry: dict = field(default_factory=dict)
    transforms: dict = field(default_factory=dict)
    _keys = ("layer", "transform")

    def row(self, layer: str, transform: str) -> dict:
        for r in self.rows:
            if r["layer"] == layer and r["transform"] == transform:
                return r
        raise KeyError(
            f"EquivarianceResult: no row for layer {layer!r} and transform "
            f"{transform!r}; the rows are {[(r['layer'], r['transform']) for r in self.rows]}"
        )

    def error(self, layer: str, transform: str, which: str = "map") -> float:
        return self.row(layer, transform)[f"error_{which}"]

    def layers(self) -> List[str]:
        return list(dict.fromkeys(r["layer"] for r in self.rows))

    def transform_names(self) -> List[str]:
        return list(dict.fromkeys(r["transform"] for r in self.rows))

    def matrix(self, which: str = "error_map") -> Tensor:
        """[layers, transforms] of one column (NaN where missing)."""
        L, T = self.layers(), self.transform_names()
        m = torch.full((len(L), len(T)), float("nan"))
        for r in self.rows:
            if which in r and r[which] is not None:
                m[L.index(r["layer"]), T.index(r["transform"])] = r[which]
        return m

    def mapped_code(
        self,
        images: Tensor,
        transform: str,
        layer: Optional[str] = None,
        transformed: Optional[Tensor] = None,
    ):
        """(M_g Phi(x) [B, D, h, w], Phi(gx), valid [h, w]) for images [B, C, H, W] in [0, 1]
        (H, W multiples of the stride for an exact cell permutation); gx is ``transformed``
        (e.g. from :func:`~pyinvert.analysis.features.crop_pairs`, with context instead of
        black corners) or ``g.apply(images)``."""
        rep = self.representation
        layer = layer or self.layers()[0]
        g = self.transforms.get(transform) or parse_transform(transform)
        m = self.maps[(layer, g.name)]
        p = next(rep.parameters(), None)
        images = images.to(p.device) if p is not None else images
        with torch.no_grad():
            fx = layer_outputs(rep, rep.preprocess(images))[layer]
            gx = g.apply(images) if transformed is None else transformed.to(images.device)
            fg = layer_outputs(rep, rep.preprocess(gx))[layer]
            warped, valid = warp_grid(fx, g, self.geometry[layer], images.shape[-2:], fg.shape[-2:])
            code = m(warped.to(m.weight.dtype)).to(fx.dtype) * valid.to(fx.dtype)
        return code, fg, valid


@dataclass
class EquivalenceResult(_Result):
    """Per stitch (rows "trained" and "untrained"): ``error_map`` (|E Phi_A(x) - Phi_B(x)|^2 /
    |Phi_B(x)|^2 on held-out crops), ``error_identity`` / ``top1_identity`` (the naive stitch:
    Phi_A(x) itself where the shapes agree), ``error_permutation`` (Phi_A resampled onto B's
    grid, channels untouched, where the channels agree), ``error_none`` (B's training mean) and,
    when B is a classifier, ``top1_map`` (the stitched network's agreement with network B).
    The "untrained" row stitches a randomly initialized copy of A's network (of B's when A is
    not a CNN) into B: the baseline of what the stitch alone can do.

    Attributes:
        rows, maps, settings: as :class:`EquivarianceResult`.
        rep_a, rep_b: the representations; geometry: (A's, B's).
    """

    rep_a: object = None
    rep_b: object = None
    geometry: tuple = ()
    _keys = ("stitch", "layer_a", "layer_b")

    def row(self, stitch: str = "trained") -> dict:
        for r in self.rows:
            if r["stitch"] == stitch:
                return r
        raise KeyError(f"EquivalenceResult: no row {stitch!r}")

    def stitched_code(self, images: Tensor) -> Tensor:
        """E Phi_A(x) on B's grid, for images [B, C, H, W] in [0, 1]."""
        (la,), (lb,) = layers_of(self.rep_a), layers_of(self.rep_b)
        m = self.maps[("trained",)]
        with torch.no_grad():
            fa = layer_outputs(self.rep_a, self.rep_a.preprocess(images))[la]
            fb = layer_outputs(self.rep_b, self.rep_b.preprocess(images))[lb]
            warped, valid = warp_grid(
                fa,
                IDENTITY,
                self.geometry[0],
                images.shape[-2:],
                fb.shape[-2:],
                geo_out=self.geometry[1],
            )
            return m(warped.to(m.weight.dtype)).to(fa.dtype) * valid.to(fa.dtype)
