"""Your own Phi: any ``nn.Module`` or callable ``Tensor -> Tensor`` as a representation.

:class:`FunctionRepresentation` gives a function the protocol's defaults: identity pre- and
post-processing (the function sees the images themselves, RGB in [0, 1], as it would in its own
pipeline), ``min_size`` 1, the CNN recipes (``kind = "cnn"``) with the receptive-field stride
measured by two probe forwards. Internally the engine optimizes those images in the authors'
pixel scale ``255 (image - 0.5)``, so that the recipes' constants (the noise scale, the bound
B = 80, the priors' lambdas) keep the meaning they have for a CNN; the function never sees
that scale.

An object that already declares its own ``preprocess`` and ``postprocess`` (a representation
written to the protocol without subclassing :class:`pyinvert.representations.Representation`)
keeps them, and its ``channels``, ``min_size``, ``stride``, ``kind``, ``name`` and ``config``.
"""

from typing import Callable, Optional

from torch import Tensor, nn

from pyinvert.representations.base import Representation, probe_stride, to_gray, to_rgb

#: The members a representation may declare; :func:`declared_members` reads these only.
OPTIONAL_MEMBERS = (
    "preprocess",
    "postprocess",
    "channels",
    "min_size",
    "stride",
    "kind",
    "name",
    "config",
    "render_code",
    "as_code",
)


def declared_members(obj) -> dict:
    """The protocol members that ``obj`` declares itself (the one place that looks)."""
    out = {}
    for key in OPTIONAL_MEMBERS:
        try:
            out[key] = getattr(obj, key)
        except AttributeError:
            continue
    return out


class FunctionRepresentation(Representation):
    """A representation from an ``nn.Module`` or a callable ``images -> code``.

    Args:
        fn: the function (an ``nn.Module`` is registered as a submodule: ``.to()`` moves it).
        channels: channels of the images it takes (3: RGB, gray inputs repeated; 1: gray).
            Default: 3.
        min_size: the smallest H and W it accepts. Default: 1.
        name: a name for records and titles; None: the class or function name. Default: None.
        stride: its receptive-field stride in pixels; None measures it from two probe
            forwards (1 for a code without a spatial grid). Default: None.
        kind: "cnn" (the CNN recipe variants, from the stride) or "handcrafted".
            Default: "cnn".

    Example:
        >>> import torch
        >>> rep = FunctionRepresentation(lambda im: im.mean((2, 3)), name="mean colour")
        >>> rep(rep.preprocess(torch.full((1, 3, 8, 8), 0.25)))
        tensor([[0.2500, 0.2500, 0.2500]])
    """

    offset = 0.5
    scale = 255.0

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        *,
        channels: int = 3,
        min_size: int = 1,
        name: Optional[str] = None,
        stride: Optional[int] = None,
        kind: str = "cnn",
    ):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"FunctionRepresentation: expected a callable, got {type(fn).__name__}")
        if channels not in (1, 3):
            raise ValueError(f"FunctionRepresentation: expected channels 1 or 3, got {channels!r}")
        if kind not in ("cnn", "handcrafted"):
            raise ValueError(
                f"FunctionRepresentation: expected kind 'cnn' or 'handcrafted', got {kind!r}"
            )
        if isinstance(fn, nn.Module):
            self.module = fn
        else:
            self.fn = fn
        self.channels = channels
        self._min_size = int(min_size)
        self._stride = stride
        self.kind = kind
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__.lower()

    def _call(self, images: Tensor) -> Tensor:
        return self.module(images) if "module" in self._modules else self.fn(images)

    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def stride(self) -> int:
        if self._stride is None:
            self._stride = probe_stride(self)
        return self._stride

    def preprocess(self, images: Tensor) -> Tensor:
        images = to_rgb(images, self.name) if self.channels == 3 else to_gray(images)
        return (images - self.offset) * self.scale

    def postprocess(self, x: Tensor) -> Tensor:
        return (x / self.scale + self.offset).clamp(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self._call(x / self.scale + self.offset)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{self.name}: expected the representation to return a Tensor, "
                f"got {type(out).__name__}"
            )
        return out

    def config(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "min_size": self.min_size,
            "pixel_scale": "255 (image - 0.5)",
        }


class DeclaredRepresentation(Representation):
    """An object that declares its own pre/post-processing (the protocol written without
    subclassing), with the defaults for what it leaves out."""

    def __init__(self, obj, members: dict):
        super().__init__()
        if isinstance(obj, nn.Module):
            self.module = obj
        else:
            self.fn = obj
        self._members = members
        self.name = str(members.get("name", type(obj).__name__.lower()))
        self.kind = str(members.get("kind", "cnn"))
        self.channels = int(members.get("channels", 3))

    def _call(self, x):
        return self.module(x) if "module" in self._modules else self.fn(x)

    @property
    def min_size(self) -> int:
        return int(self._members.get("min_size", 1))

    @property
    def stride(self) -> int:
        if "stride" not in self._members:
            self._members["stride"] = probe_stride(self)
        return int(self._members["stride"])

    def preprocess(self, images: Tensor) -> Tensor:
        return self._members["preprocess"](images)

    def postprocess(self, x: Tensor) -> Tensor:
        return self._members["postprocess"](x)

    def forward(self, x: Tensor) -> Tensor:
        return self._call(x)

    def as_code(self, value, image_size=None):
        if "as_code" in self._members:
            return self._members["as_code"](value, image_size)
        return super().as_code(value, image_size)

    def render_code(self, code):
        if "render_code" in self._members:
            return self._members["render_code"](code)
        return super().render_code(code)

    def config(self) -> dict:
        if "config" in self._members:
            return self._members["config"]()
        return {"name": self.name}

    def __getattr__(self, key):
        # Anything else (a CNN stand-in's ``layers``, ``normalize``) from the wrapped object.
        try:
            return super().__getattr__(key)
        except AttributeError:
            inner = self._modules.get("module") or self.__dict__.get("fn")
            if inner is None:
                raise
            return getattr(inner, key)
