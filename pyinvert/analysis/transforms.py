"""Image transformations as a small group: flips, 90-degree rotations, rotations, scalings,
translations and their compositions, acting on images and on feature grids.

A :class:`Transform` g is an affine map of the image plane, ``q' = A q + t``, in centred pixel
coordinates (x right, y down, origin at the image centre, so that a flip or a rotation keeps
the frame); t is given as a fraction of the image side. ``g.apply(images)`` returns gx with
``gx(q') = x(g^-1 q')``. A transform whose A is a signed permutation matrix and whose t is 0
(flips, rot90 and their compositions) is *exact*: it permutes pixels (and, on aligned grids,
feature cells) and is applied with ``torch.flip`` / ``torch.rot90``; the others are resampled
bilinearly (zeros outside the image).

Angles are in degrees, counter-clockwise as the image is displayed (y down).

Example:
    >>> g = parse_transform("hflip*rot90")
    >>> g.exact, g.name
    (True, 'hflip*rot90')
    >>> x = torch.rand(1, 3, 8, 8)
    >>> torch.equal(g.apply(x), parse_transform("hflip").apply(parse_transform("rot90").apply(x)))
    True

References:
    K. Lenc and A. Vedaldi, "Understanding image representations by measuring their
    equivariance and equivalence", CVPR 2015, Sec. 2 (the transformations of Tab. 1).
"""

import math
import re
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: The transform names :func:`parse_transform` accepts (NUM is a float).
TRANSFORM_NAMES = (
    "id",
    "hflip",
    "vflip",
    "rot90",
    "rot180",
    "rot270",
    "rotNUM",
    "scaleNUM",
    "translateDX,DY",
)


@dataclass(frozen=True)
class Transform:
    """An affine transformation ``q' = A q + t`` of the image plane (centred pixel coordinates,
    t in fractions of the image side).

    Attributes:
        name: its name, as :func:`parse_transform` reads it.
        matrix: A as ((a, b), (c, d)) acting on (x, y).
        shift: t as (tx, ty), fractions of the width and height.
    """

    name: str
    matrix: Tuple[Tuple[float, float], Tuple[float, float]] = ((1.0, 0.0), (0.0, 1.0))
    shift: Tuple[float, float] = (0.0, 0.0)

    # ---- group structure -------------------------------------------------------------------

    def __mul__(self, other: "Transform") -> "Transform":
        """``g * h``: first h, then g."""
        if not isinstance(other, Transform):
            return NotImplemented
        A, B = self.A, other.A
        t = A @ other.t + self.t
        return Transform(f"{self.name}*{other.name}", _tuple2(A @ B), (float(t[0]), float(t[1])))

    def inverse(self) -> "Transform":
        Ai = torch.linalg.inv(self.A)
        t = -(Ai @ self.t)
        return Transform(f"inv({self.name})", _tuple2(Ai), (float(t[0]), float(t[1])))

    @property
    def A(self) -> Tensor:
        return torch.tensor(self.matrix, dtype=torch.float64)

    @property
    def t(self) -> Tensor:
        return torch.tensor(self.shift, dtype=torch.float64)

    @property
    def exact(self) -> bool:
        """A signed permutation matrix and no shift: a permutation of pixels."""
        A = self.A
        ok = torch.all((A.abs() - A.abs().round()).abs() < 1e-9) and torch.all(A.abs() <= 1)
        perm = (
            bool(ok)
            and int(A.abs().round().sum()) == 2
            and bool((A.abs().round().sum(0) == 1).all())
        )
        return perm and all(abs(s) < 1e-12 for s in self.shift)

    def footprint(self) -> float:
        """How much larger than the frame (per side) the part of x that gx shows can be: the
        max over the frame's corners of ``|g^-1 q|_inf`` divided by the half side."""
        Ai = torch.linalg.inv(self.A)
        corners = torch.tensor([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=torch.float64)
        src = (corners - 2 * self.t) @ Ai.T
        return float(max(1.0, src.abs().max()))

    # ---- action on images ----------------------------------------------------------------

    def apply(self, images: Tensor) -> Tensor:
        """gx for images [B, C, H, W] (exact transforms permute pixels; others are bilinear,
        zeros outside)."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError(
                f"Transform.apply: expected images of shape (B, C, H, W), got "
                f"{list(images.shape) if isinstance(images, Tensor) else type(images).__name__}"
            )
        if self.exact:
            return _apply_exact(self.A, images)
        H, W = images.shape[-2:]
        src = self.source_coordinates((H, W), (H, W), images.device)
        return sample(images, src, (H, W), mode="bilinear")

    def source_coordinates(self, in_size, out_size, device=None) -> Tensor:
        """For every pixel of the output frame (size ``out_size``), the pixel (x, y) of the
        input frame (size ``in_size``) it comes from; [Ho, Wo, 2], float64."""
        Hi, Wi = in_size
        Ho, Wo = out_size
        ys = torch.arange(Ho, dtype=torch.float64, device=device) - (Ho - 1) / 2
        xs = torch.arange(Wo, dtype=torch.float64, device=device) - (Wo - 1) / 2
        q = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # [Ho, Wo, (x, y)]
        t = self.t.to(device) * torch.tensor([Wo, Ho], dtype=torch.float64, device=device)
        Ai = torch.linalg.inv(self.A).to(device)
        src = (q - t) @ Ai.T
        return src + torch.tensor([(Wi - 1) / 2, (Hi - 1) / 2], dtype=torch.float64, device=device)


def _tuple2(M: Tensor):
    M = torch.where(M.abs() < 1e-12, torch.zeros_like(M), M)
    return ((float(M[0, 0]), float(M[0, 1])), (float(M[1, 0]), float(M[1, 1])))


def _apply_exact(A: Tensor, t: Tensor) -> Tensor:
    """Apply the signed permutation A to the last two dims of t (x = dim -1, y = dim -2)."""
    A = A.round().long()
    if A[0, 0] == 0:  # swaps x and y: q' = (a y, c x); transpose, then flip
        t = t.transpose(-1, -2)
        sx, sy = int(A[0, 1]), int(A[1, 0])
    else:
        sx, sy = int(A[0, 0]), int(A[1, 1])
    dims = [d for d, s in ((-1, sx), (-2, sy)) if s < 0]
    return torch.flip(t, dims) if dims else t.clone()


def sample(t: Tensor, coords: Tensor, out_size, mode: str = "bilinear") -> Tensor:
    """t [B, C, H, W] at the (x, y) pixel positions ``coords`` [Ho, Wo, 2] (or [B, Ho, Wo, 2]);
    zeros outside."""
    H, W = t.shape[-2:]
    if coords.dim() == 3:
        coords = coords.unsqueeze(0).expand(t.shape[0], *coords.shape)
    scale = torch.tensor([W, H], dtype=coords.dtype, device=coords.device)
    grid = ((2 * coords + 1) / scale - 1).to(t.dtype)  # align_corners=False convention
    return F.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)


def rotation(degrees: float) -> Transform:
    """Counter-clockwise as displayed (y down): q' = R(-theta) q in (x, y)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    # exact values for multiples of 90 degrees
    if abs(degrees / 90 - round(degrees / 90)) < 1e-12:
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(round(degrees / 90)) % 4]
    return Transform(_num_name("rot", degrees), ((c, s), (-s, c)))


def scaling(factor: float) -> Transform:
    if not factor > 0:
        raise ValueError(f"scaling: expected a factor > 0, got {factor}")
    return Transform(_num_name("scale", factor), ((factor, 0.0), (0.0, factor)))


def translation(dx: float, dy: float = 0.0) -> Transform:
    return Transform(f"translate{_fmt(dx)},{_fmt(dy)}", shift=(float(dx), float(dy)))


def _fmt(v: float) -> str:
    return f"{v:g}"


def _num_name(prefix, v):
    return f"{prefix}{_fmt(v)}"


IDENTITY = Transform("id")
HFLIP = Transform("hflip", ((-1.0, 0.0), (0.0, 1.0)))
VFLIP = Transform("vflip", ((1.0, 0.0), (0.0, -1.0)))

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def parse_transform(spec) -> Transform:
    """A transform from its name: ``id``, ``hflip``, ``vflip``, ``rot90`` / ``rot180`` /
    ``rot270``, ``rotNUM`` or ``rot(NUM)`` (degrees), ``scaleNUM``, ``translateDX,DY``
    (fractions of the side), and compositions ``g*h`` (first h, then g). A
    :class:`Transform` is returned as it is.

    Raises:
        ValueError: an unknown name (the message lists the accepted ones).
    """
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"parse_transform: expected a str or a Transform, got {type(spec).__name__}"
        )
    parts = [p.strip() for p in spec.split("*")]
    if len(parts) > 1:
        out = parse_transform(parts[-1])
        for p in reversed(parts[:-1]):
            out = parse_transform(p) * out
        return Transform(spec.replace(" ", ""), out.matrix, out.shift)
    s = spec.strip().lower().replace("(", "").replace(")", "").replace("deg", "")
    if s in ("id", "identity"):
        return IDENTITY
    if s == "hflip":
        return HFLIP
    if s == "vflip":
        return VFLIP
    m = re.fullmatch("rot" + _NUM, s)
    if m:
        return rotation(float(m.group(1)))
    m = re.fullmatch("scale" + _NUM, s)
    if m:
        return scaling(float(m.group(1)))
    m = re.fullmatch("translate" + _NUM + "," + _NUM, s)
    if m:
        return translation(float(m.group(1)), float(m.group(2)))
    raise ValueError(
        f"parse_transform: unknown transform {spec!r}; expected one of "
        f"{', '.join(TRANSFORM_NAMES)} or a composition g*h"
    )


def parse_transforms(specs) -> Tuple[Transform, ...]:
    """A comma-free list: ``"hflip,rot90,scale0.71"`` (a translate takes its two numbers with
    it) or a sequence of names / transforms."""
    if isinstance(specs, (str, Transform)):
        specs = [specs] if isinstance(specs, Transform) else _split(specs)
    out = tuple(parse_transform(s) for s in specs)
    if not out:
        raise ValueError("parse_transforms: expected at least one transform, got none")
    return out


def _split(text: str) -> Sequence[str]:
    items, pieces = [], [p for p in text.split(",") if p.strip()]
    i = 0
    while i < len(pieces):
        p = pieces[i].strip()
        if re.search(r"translate" + _NUM + r"$", p.lower()) and i + 1 < len(pieces):
            p = p + "," + pieces[i + 1].strip()
            i += 1
        items.append(p)
        i += 1
    return items
