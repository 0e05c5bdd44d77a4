"""CNN representations: the codes of one or several named layers of a network.

``CNN(model, layers)`` follows the protocol of :mod:`pyinvert.representations`. The optimized
tensor x lives in the authors' CNN pixel scale, ``255 (image - mean)`` (0-255 pixels minus the
ImageNet mean colour, as MatConvNet's ``averageImage`` subtraction in deep-goggle's
``cnn_normalize`` and nnpreimage's ``opts.normalize``), so that the IJCV 2016 constants
(B = 80, B+ = 2B, lambda's) keep their meaning. Our networks are torchvision-style networks
that take ``(image - mean) / std`` with the image in [0, 1], so :meth:`CNN.forward` divides x
by ``255 std`` before the network: ``model(x / (255 std))`` is exactly ``model(normalize(image))``.

The codes are read with forward hooks on the named modules, and the forward pass is stopped
(a private exception raised from the last hook needed) as soon as every requested layer has
produced its output: later layers (the classifier of a net inverted at ``features.3``) are
never run.

Several layers: the code is the concatenation of the flattened per-layer codes, [B, D1 + D2 +
...], and :attr:`CNN.segments` gives each layer's slice and shape. The inversion objective
(:class:`pyinvert.objectives.Inversion`) then sums the per-layer normalized data terms
``sum_l |Phi_l(x) - Phi0_l|^2 / |Phi0_l|^2``, so each layer weighs the same whatever its size.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from pyinvert import models
from pyinvert.models import layer_names  # noqa: F401 (the one layer list, re-exported)
from pyinvert.models.gatys import resolve_layer
from pyinvert.models.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 (re-exported)
from pyinvert.representations.base import Code, Representation, to_rgb
from pyinvert.representations.cnn_names import (  # noqa: F401 (parse_spec re-exported)
    parse_spec,
    suggested_layers,
    valid_layers_text,
)


class _StopForward(Exception):
    """Raised from the hook of the last layer needed, to cut the forward pass short."""


@dataclass(frozen=True)
class Segment:
    """One layer's part of a (multi-layer) code: ``code[:, start:stop].view(-1, *shape)``."""

    layer: str
    start: int
    stop: int
    shape: Tuple[int, ...]


class CNN(Representation):
    """The codes of named layers of a CNN, as a representation to invert or visualize.

    Args:
        model: the network (e.g. from :func:`pyinvert.models.load_model`); it is put in eval
            mode (batch statistics would couple the images of a batch). Its parameters are not
            differentiated by the engine (gradients are taken w.r.t. the image only).
        layers: a module name (``"features.6"``, ``"classifier.1"``) or a sequence of names;
            a model's layer aliases (VGG: ``"conv1_1"``, ``"relu4_2"``, ``"pool4"``) stand for
            their module names, which :attr:`layers` then holds.
        mean: the normalization mean (RGB, images in [0, 1]). Default: IMAGENET_MEAN.
        std: the normalization std. Default: IMAGENET_STD.
        model_name: a short name for records and titles. Default: None (the class name,
            lower case).

    Raises:
        ValueError: a layer name is not a submodule of the model (the message lists the valid
            names), or no layer is given.

    Shape:
        - x (forward): :math:`(B, 3, H, W)` in the pixel scale ``255 (image - mean)``.
        - code: the layer's output :math:`(B, ...)` for one layer; :math:`(B, D)` with
          :math:`D = \\sum_l D_l` for several.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 5, 3))
        >>> rep = CNN(net, "1")
        >>> rep(rep.preprocess(torch.rand(2, 3, 16, 16))).shape
        torch.Size([2, 4, 7, 7])
        >>> rep.stride
        2

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015, Sec. 5; "Visualizing Deep Convolutional Neural Networks Using
        Natural Pre-Images", IJCV 2016, Sec. 3.2 (the CNN representations and their scales).
    """

    channels = 3
    kind = "cnn"

    def __init__(
        self,
        model: nn.Module,
        layers: Union[str, Sequence[str]],
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        model_name: Optional[str] = None,
    ):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"CNN: expected model to be an nn.Module, got {type(model).__name__}")
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("CNN: expected at least one layer name, got none")
        # The papers' aliases ("conv1_1", "pool4" on VGG) become module names here.
        layers = [resolve_layer(model, n) if isinstance(n, str) else n for n in layers]
        modules = dict(model.named_modules())
        for name in layers:
            if not isinstance(name, str):
                raise TypeError(f"CNN: expected layer names as str, got {type(name).__name__}")
            if name not in modules or name == "":
                raise ValueError(
                    f"CNN: unknown layer {name!r}; valid layers are: "
                    f"{valid_layers_text(suggested_layers(model), model_name=model_name)}"
                )
        if len(set(layers)) != len(layers):
            raise ValueError(f"CNN: expected distinct layer names, got {layers}")
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        std = torch.as_tensor(std, dtype=torch.float64).flatten()
        if mean.shape != (3,) or std.shape != (3,):
            raise ValueError(
                f"CNN: expected mean and std of 3 values (RGB), got "
                f"{list(mean.shape)} and {list(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError(f"CNN: expected std > 0, got {std.tolist()}")
        self.model = model.eval()
        self.layers = tuple(layers)
        # Looked up once: walking the module tree costs ~0.5 ms per forward on MobileNetV2.
        self._layer_modules = {name: modules[name] for name in self.layers}
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.model_name = model_name or type(model).__name__.lower()
        self.name = f"cnn:{self.model_name}:{','.join(self.layers)}"
        self._probe: Optional[dict] = None

    # ---- scales --------------------------------------------------------------------------

    def _vec(self, values, like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in [0, 1], [B, C, H, W] (C = 1 is repeated to RGB, an alpha channel is
        dropped), to the pixel scale ``255 (image - mean)``."""
        images = to_rgb(images, "CNN")
        return (images - self._vec(self.mean, images)) * 255.0

    def postprocess(self, x: Tensor) -> Tensor:
        """Back to images in [0, 1] (clamped)."""
        return (x / 255.0 + self._vec(self.mean, x)).clamp(0, 1)

    def normalize(self, x: Tensor) -> Tensor:
        """The network's input ``x / (255 std)`` (= (image - mean) / std)."""
        return x / (self._vec(self.std, x) * 255.0)

    # ---- the forward pass ------------------------------------------------------------------

    def layer_outputs(self, x: Tensor) -> Dict[str, Tensor]:
        """{layer: output} of the network on x (pixel scale), stopping the forward pass after
        the last layer needed."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CNN: expected x of shape (B, 3, H, W), got {list(x.shape)}")
        wanted = set(self.layers)
        found: Dict[str, Tensor] = {}
        handles = []

        def make_hook(name):
            def hook(module, inputs, output):
                if name in found:
                    return
                if not isinstance(output, Tensor):
                    raise TypeError(
                        f"CNN: layer {name!r} returns {type(output).__name__}, expected a Tensor"
                    )
                if len(found) + 1 == len(wanted):
                    found[name] = output
                    raise _StopForward
                # Another layer is still to come: keep a copy, a later in-place op (ReLU6
                # with inplace=True) could overwrite this one.
                found[name] = output.clone()

            return hook

        for name in wanted:
            handles.append(self._layer_modules[name].register_forward_hook(make_hook(name)))
        try:
            self.model(self.normalize(x))
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in self.layers if n not in found]
        if missing:
            raise RuntimeError(
                f"CNN: layer(s) {missing} were not called by the model's forward pass"
            )
        return found

    def forward(self, x: Tensor) -> Tensor:
        """The code Phi(x): the layer's output, or the concatenated flattened outputs."""
        out = self.layer_outputs(x)
        if len(self.layers) == 1:
            return out[self.layers[0]]
        return torch.cat([out[n].flatten(1) for n in self.layers], 1)

    # ---- structure (from a probe forward) ----------------------------------------------

    def _probe_info(self) -> dict:
        """Strides and output shapes of the requested layers, from forwards of zero images of
        two sizes (224 and 256) on the CPU copy of the parameters' device."""
        if self._probe is not None:
            return self._probe
        p = next(self.model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        sizes = (224, 256)
        runs = []
        for s in sizes:
            order: List[Tuple[str, Tuple[int, ...]]] = []
            handles = []
            for name, module in self.model.named_modules():
                if not name:
                    continue

                def hook(module, inputs, output, name=name, order=order):
                    if isinstance(output, Tensor):
                        order.append((name, tuple(output.shape)))

                handles.append(module.register_forward_hook(hook))
            try:
                with torch.no_grad():
                    out = self.layer_outputs(torch.zeros(1, 3, s, s, device=device, dtype=dtype))
            finally:
                for h in handles:
                    h.remove()
            runs.append((order, {k: tuple(v.shape[1:]) for k, v in out.items()}))
        (order_a, shapes_a), (order_b, shapes_b) = runs
        # Stride of each executed module: input growth / output growth for 4D outputs whose
        # spatial size changes with the input; a module whose output does not (global pooling,
        # a classifier) inherits the largest stride seen before it.
        strides = {}
        best = 1
        for (name, sa), (_, sb) in zip(order_a, order_b):
            if len(sa) == 4 and len(sb) == 4 and sb[2] != sa[2]:
                st = max(1, int(round((sizes[1] - sizes[0]) / (sb[2] - sa[2]))))
                best = max(best, st)
                strides[name] = st
            else:
                strides.setdefault(name, best)
        layer_strides = {n: strides.get(n, best) for n in self.layers}
        self._probe = {
            "strides": layer_strides,
            "shapes": shapes_a,
            "spatial": {
                n: len(shapes_a[n]) == 3 and shapes_a[n][1] != shapes_b[n][1] for n in self.layers
            },
        }
        return self._probe

    @property
    def stride(self) -> int:
        """Receptive-field stride (pixels) of the deepest requested layer, from a probe forward:
        how far the input moves for one step of the layer's output grid. Layers without a
        spatial grid (after global pooling) get the largest stride before them."""
        return max(self._probe_info()["strides"].values())

    @property
    def layer_strides(self) -> Dict[str, int]:
        """{layer: receptive-field stride}."""
        return dict(self._probe_info()["strides"])

    @property
    def min_size(self) -> int:
        """The smallest H = W giving the deepest layer at least one output position (at least
        its stride; found by probe forwards of growing sizes)."""
        if "min_size" in self._probe_info():
            return self._probe["min_size"]
        p = next(self.model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32

        def works(s):
            try:
                with torch.no_grad():
                    self.layer_outputs(torch.zeros(1, 3, s, s, device=device, dtype=dtype))
                return True
            except RuntimeError:
                return False

        lo = self.stride
        if not works(lo):
            hi = lo * 2
            while not works(hi):
                hi *= 2
                if hi > 4096:
                    raise RuntimeError(f"CNN: no input size up to 4096 works for {self.name}")
            while hi - lo > 1:  # invariant: lo fails, hi works
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if works(mid) else (mid, hi)
            lo = hi
        self._probe["min_size"] = lo
        return lo

    def segments(self, image_size=(224, 224)) -> List[Segment]:
        """Each layer's slice of the code for images of ``image_size`` (a probe forward)."""
        p = next(self.model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        with torch.no_grad():
            out = self.layer_outputs(torch.zeros(1, 3, *image_size, device=device, dtype=dtype))
        return self.segments_of(out)

    def segments_of(self, outputs: Dict[str, Tensor]) -> List[Segment]:
        segs, start = [], 0
        for n in self.layers:
            shape = tuple(outputs[n].shape[1:])
            size = math.prod(shape)
            segs.append(Segment(n, start, start + size, shape))
            start += size
        return segs

    def split(self, code: Tensor, image_size) -> Dict[str, Tensor]:
        """A code as {layer: [B, *shape]} (the inverse of the concatenation)."""
        if len(self.layers) == 1:
            return {self.layers[0]: code}
        return {
            s.layer: code[:, s.start : s.stop].reshape(-1, *s.shape)
            for s in self.segments(image_size)
        }

    def as_code(self, value: Tensor, image_size=None) -> Code:
        """A code (one layer's output, or the concatenation) as {layer: [B, ...]}."""
        if len(self.layers) == 1:
            return Code({self.layers[0]: value})
        if image_size is None:
            raise ValueError(
                "CNN.as_code: expected image_size=(H, W) for a multi-layer code, got None"
            )
        return Code(self.split(value, image_size))

    def code_mask(
        self,
        image_size,
        *,
        window: Optional[int] = None,
        channels: Optional[Sequence[int]] = None,
        layer: Optional[str] = None,
    ) -> Tensor:
        """A 0/1 mask over the code (shape of one image's code) keeping a centred ``window`` x
        ``window`` block of neurons and/or a subset of ``channels`` of ``layer`` (default: the
        first layer), everything else of that layer zeroed; other layers are kept whole. The
        window is centred as in deep-goggle (``ceil((size - n + 1) / 2)``, 1-based).

        Args:
            image_size: (H, W) of the images.
            window: side of the neuron window; None for the whole grid.
            channels: channel indices to keep; None for all.
            layer: which layer the mask restricts; None for the first.

        Returns:
            Tensor of the code's shape without the batch dimension (float32, CPU).
        """
        layer = layer or self.layers[0]
        if layer not in self.layers:
            raise ValueError(f"CNN.code_mask: expected layer in {list(self.layers)}, got {layer!r}")
        segs = self.segments(image_size)
        parts = []
        for s in segs:
            m = torch.ones(s.shape)
            if s.layer == layer:
                cm = torch.ones(s.shape[0])
                if channels is not None:
                    ch = torch.as_tensor(list(channels), dtype=torch.long)
                    if ch.numel() == 0 or ch.min() < 0 or ch.max() >= s.shape[0]:
                        raise ValueError(
                            f"CNN.code_mask: expected channels in [0, "
                            f"{s.shape[0]}), got {ch.tolist()}"
                        )
                    cm = torch.zeros(s.shape[0])
                    cm[ch] = 1
                m = cm.view(-1, *([1] * (len(s.shape) - 1))).expand(s.shape).clone()
                if window is not None:
                    if len(s.shape) != 3:
                        raise ValueError(
                            f"CNN.code_mask: a neuron window needs a spatial "
                            f"layer (C, h, w), {layer!r} gives {list(s.shape)}"
                        )
                    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
                        raise ValueError(
                            f"CNN.code_mask: expected window to be an int >= 1, got {window!r}"
                        )
                    sm = torch.zeros(s.shape[1:])
                    lo = []
                    for d in (1, 2):
                        n = min(window, s.shape[d])
                        lo.append((math.ceil((s.shape[d] - n + 1) / 2) - 1, n))
                    (y0, ny), (x0, nx) = lo
                    sm[y0 : y0 + ny, x0 : x0 + nx] = 1
                    m = m * sm
            parts.append(m)
        if len(parts) == 1:
            return parts[0]
        return torch.cat([p.flatten() for p in parts])

    def config(self) -> dict:
        return {
            "name": self.name,
            "model": self.model_name,
            "layers": list(self.layers),
            "mean": list(self.mean),
            "std": list(self.std),
            "pixel_scale": "255 (image - mean)",
            "stride": self.stride,
        }


def cnn_from_spec(spec: str, weights="imagenet", fn: str = "invert") -> CNN:
    """A :class:`CNN` from ``"cnn:MODEL:LAYER[,LAYER...]"`` with the zoo's model
    (:func:`pyinvert.models.load_model`, ``weights`` "imagenet", None (random) or a path)."""
    model_name, layers = parse_spec(spec, fn)
    model = models.load_model(model_name, weights=weights)
    return CNN(
        model, layers, mean=models.IMAGENET_MEAN, std=models.IMAGENET_STD, model_name=model_name
    )
