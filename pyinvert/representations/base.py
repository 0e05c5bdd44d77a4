"""The representation protocol, its base class and the :class:`Code` value.

A representation Phi is what :func:`pyinvert.invert`, :func:`pyinvert.visualize`,
:func:`pyinvert.actmax` and the other tasks take as ``representation=``. Anything can be one:
:func:`pyinvert.representations.as_representation` turns a name, a HOG / DenseSIFT feature
module, a :class:`pyinvert.CNN`, any ``nn.Module`` or any callable ``Tensor -> Tensor`` into
an object of :class:`Representation`, the small base class below whose members are the
protocol (:class:`RepresentationProtocol` states it as a ``typing.Protocol``):

* ``preprocess(images) -> x``: images in [0, 1], [B, C, H, W], to the optimized tensor's scale
  (``255 gray - 128`` for HOG, as in the authors' code; ``255 (image - mean)`` for a CNN);
* ``postprocess(x) -> images``: back to images in [0, 1] (clamped), [B, C', H, W];
* ``forward(x) -> Tensor``: the code Phi(x), [B, ...] in the representation's own layout (the
  engine's hot path: objectives consume it as it is);
* ``code(x) -> Code`` / ``as_code(value, image_size)``: the same code as per-layer maps;
* ``channels``, ``min_size`` (the smallest H and W accepted), ``stride`` (the receptive-field
  stride in pixels, which sizes the CNN recipes' TV weight and jitter), ``kind`` (which recipe
  variants fit: ``"handcrafted"`` or ``"cnn"``), ``name`` and ``config()`` (JSON-friendly,
  for the records);
* ``render_code(code) -> Tensor``: a picture of one image's code, [1, h, w] in [0, 1] (the
  figures ask for it).

A representation has no state changed by ``forward`` and no device fixed at construction.
"""

import math
from typing import Dict, List, Mapping, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch
from torch import Tensor, nn


class Code:
    """A representation's code of a batch as per-layer maps, with a flat view.

    Args:
        maps: {layer name: Tensor [B, ...]} in the network's order; spatial layers are
            [B, C, h, w], vectors (logits) [B, K]. All share B.

    Attributes:
        maps: the dict itself.

    Example:
        >>> code = Code({"a": torch.ones(2, 3, 4, 4), "b": torch.zeros(2, 5)})
        >>> code.flat.shape, code.slices
        (torch.Size([2, 53]), [(0, 48), (48, 53)])
        >>> Code.from_flat(code.flat, code.shapes)["b"].shape
        torch.Size([2, 5])
    """

    def __init__(self, maps: Mapping[str, Tensor]):
        if not isinstance(maps, Mapping) or not maps:
            raise ValueError(f"Code: expected a non-empty dict of layer -> Tensor, got {maps!r}")
        sizes = set()
        for name, t in maps.items():
            if not isinstance(t, Tensor) or t.dim() < 1:
                raise TypeError(
                    f"Code: expected {name!r} to be a Tensor [B, ...], got {type(t).__name__}"
                )
            sizes.add(t.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"Code: expected maps of one batch size, got {sorted(sizes)}")
        self.maps: Dict[str, Tensor] = dict(maps)

    @property
    def layers(self) -> List[str]:
        """The layer names, in order."""
        return list(self.maps)

    @property
    def batch_size(self) -> int:
        return next(iter(self.maps.values())).shape[0]

    @property
    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        """{layer: one image's shape}."""
        return {k: tuple(v.shape[1:]) for k, v in self.maps.items()}

    @property
    def slices(self) -> List[Tuple[int, int]]:
        """Each layer's ``(start, stop)`` in :attr:`flat`."""
        out, start = [], 0
        for shape in self.shapes.values():
            out.append((start, start + math.prod(shape)))
            start = out[-1][1]
        return out

    @property
    def flat(self) -> Tensor:
        """[B, D1 + D2 + ...]: the flattened maps, concatenated (what the inversion term
        compares)."""
        parts = [t.flatten(1) for t in self.maps.values()]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    @classmethod
    def from_flat(cls, flat: Tensor, shapes: Mapping[str, Sequence[int]]) -> "Code":
        """The inverse of :attr:`flat`, given each layer's shape."""
        maps, start = {}, 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            maps[name] = flat[:, start:stop].reshape(-1, *shape)
            start = stop
        if start != flat.shape[1]:
            raise ValueError(
                f"Code.from_flat: expected {start} values per row for shapes "
                f"{dict(shapes)}, got {flat.shape[1]}"
            )
        return cls(maps)

    def __getitem__(self, layer: str) -> Tensor:
        return self.maps[layer]

    def __len__(self) -> int:
        return len(self.maps)

    def __iter__(self):
        return iter(self.maps)

    def select(self, rows) -> "Code":
        """The code of some images (an int keeps the batch dimension)."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        return Code({k: v[rows] for k, v in self.maps.items()})

    def __repr__(self) -> str:
        return f"Code({', '.join(f'{k}: {list(v.shape)}' for k, v in self.maps.items())})"


@runtime_checkable
class RepresentationProtocol(Protocol):
    """What a representation provides (see the module docstring); :class:`Representation`
    implements it with defaults."""

    name: str
    kind: str
    channels: int

    @property
    def min_size(self) -> int: ...

    @property
    def stride(self) -> int: ...

    def preprocess(self, images: Tensor) -> Tensor: ...

    def postprocess(self, x: Tensor) -> Tensor: ...

    def forward(self, x: Tensor) -> Tensor: ...

    def as_code(self, value: Tensor, image_size=None) -> Code: ...

    def render_code(self, code) -> Tensor: ...

    def config(self) -> dict: ...


# ITU-R BT.601 luma, as MATLAB's rgb2gray (used by the authors).
_GRAY = (0.2989, 0.5870, 0.1140)


def to_gray(images: Tensor) -> Tensor:
    """[B, C, H, W] in [0, 1] with C in (1, 3, 4) to [B, 1, H, W] (alpha ignored)."""
    C = images.shape[1]
    if C == 1:
        return images
    if C in (3, 4):
        w = images.new_tensor(_GRAY).view(1, 3, 1, 1)
        return (images[:, :3] * w).sum(1, keepdim=True)
    raise ValueError(f"to_gray: expected images with 1, 3 or 4 channels, got C={C}")


def to_rgb(images: Tensor, fn: str = "to_rgb") -> Tensor:
    """[B, C, H, W] with C in (1, 3, 4) to [B, 3, H, W] (gray repeated, alpha dropped)."""
    C = images.shape[1]
    if C == 1:
        return images.expand(-1, 3, -1, -1)
    if C == 4:
        return images[:, :3]
    if C != 3:
        raise ValueError(f"{fn}: expected images with 1, 3 or 4 channels, got C={C}")
    return images


def matrix_picture(code: Tensor) -> Tensor:
    """One image's code as a picture [1, rows, columns] in [0, 1]: positions down, dimensions
    across (negative values clipped, scaled by the maximum)."""
    code = code.detach().float().cpu()
    m = code.reshape(code.shape[0], -1) if code.dim() >= 2 else code.reshape(1, -1)
    return normalized_picture(m.unsqueeze(0))


def normalized_picture(pic: Tensor) -> Tensor:
    pic = pic.clamp_min(0)
    top = pic.max()
    return pic / top if top > 0 else pic


class Representation(nn.Module):
    """Base class of the representations: the protocol with its defaults.

    A subclass sets ``name``, ``kind`` and ``channels``, implements :meth:`forward`, and
    overrides what differs: :meth:`preprocess` / :meth:`postprocess` (default: the authors'
    gray pixel scale ``255 gray - 128``), :attr:`min_size` (1), :attr:`stride` (4),
    :meth:`as_code` (one map named after the representation), :meth:`render_code` (the
    code's values as a matrix) and :meth:`config`.
    """

    name = "representation"
    kind = "handcrafted"
    channels = 1
    offset = 128.0
    scale = 255.0

    @property
    def min_size(self) -> int:
        return 1

    @property
    def stride(self) -> int:
        """Receptive-field stride in pixels (the recipes of visualizations size their jitter
        from it)."""
        return 4

    def preprocess(self, images: Tensor) -> Tensor:
        return to_gray(images) * self.scale - self.offset

    def postprocess(self, x: Tensor) -> Tensor:
        return ((x + self.offset) / self.scale).clamp(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}: forward is not implemented")

    def as_code(self, value: Tensor, image_size=None) -> Code:
        """The output of :meth:`forward` as a :class:`Code` (``image_size`` (H, W) is needed
        by representations whose layout depends on it)."""
        return Code({self.name: value})

    def code(self, x: Tensor) -> Code:
        """Phi(x) as per-layer maps."""
        return self.as_code(self(x), tuple(x.shape[-2:]))

    def render_code(self, code: Union[Tensor, Code]) -> Tensor:
        """A picture [1, h, w] in [0, 1] of one image's code (a Tensor without the batch
        dimension, or a :class:`Code` of one image)."""
        if isinstance(code, Code):
            code = code.flat[0]
        return matrix_picture(code)

    def config(self) -> dict:
        return {"name": self.name}

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def check_backend(backend, fn: str) -> str:
    if backend not in ("fused", "reference"):
        raise ValueError(f"{fn}: expected backend in ('fused', 'reference'), got {backend!r}")
    return backend


def probe_stride(rep: Representation, sizes: Tuple[int, int] = (64, 96), default: int = 1) -> int:
    """Receptive-field stride of a representation from forwards of zero images of two sizes
    (on its parameters' device): input growth / output growth of a spatial [B, C, h, w] code;
    ``default`` for a code without a spatial grid."""
    p = next(rep.parameters(), None)
    like = dict(device=p.device, dtype=p.dtype) if p is not None and p.is_floating_point() else {}
    outs = []
    for s in sizes:
        s = max(s, rep.min_size)
        with torch.no_grad():
            outs.append(rep(rep.preprocess(torch.zeros(1, rep.channels, s, s, **like))))
    a, b = outs
    if a.dim() == 4 and b.dim() == 4 and b.shape[2] != a.shape[2]:
        return max(1, int(round((sizes[1] - sizes[0]) / (b.shape[2] - a.shape[2]))))
    return default
