"""The decoder network: a representation's code map to an image of a given size, by stages of
nearest-neighbour upsampling (x2) and 3 x 3 convolutions (Dosovitskiy & Brox, CVPR 2016, with
upsample + convolution instead of transposed convolution: Odena et al., "Deconvolution and
Checkerboard Artifacts", Distill 2016).

The geometry comes from the representation (:func:`code_geometry`): a probe of two image sizes
gives the code's channels and its stride in pixels (HOG: the cell size, 8; DSIFT: the step, 4;
a CNN layer: its receptive-field stride); the decoder has ``log2(stride)`` upsampling stages.
The upsampled map (``h * stride`` by ``w * stride``) is then centre-cropped or padded
(replicated borders) to the exact target size, odd sizes included, and refined by two
convolutions at full resolution.
"""

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyinvert.representations import as_representation


def code_map(rep, code: Tensor, image_size) -> Tensor:
    """The code of a representation as one spatial map [B, C, h, w] (DSIFT's [B, N, 128]
    becomes its descriptor grid), or a ValueError for codes without one (several CNN layers,
    logits)."""
    maps = rep.as_code(code, tuple(image_size)).maps
    if len(maps) != 1:
        raise ValueError(
            f"Decoder: expected a representation with one code map, got {len(maps)} layers "
            f"({', '.join(maps)}); train one decoder per layer"
        )
    (m,) = maps.values()
    if m.dim() != 4:
        raise ValueError(
            f"Decoder: expected a spatial code map [B, C, h, w], got shape {list(m.shape)}"
        )
    return m


def _probe_device(rep) -> dict:
    p = next(rep.parameters(), None) if isinstance(rep, nn.Module) else None
    return dict(device=p.device) if p is not None else {}


def code_geometry(rep, sizes: Tuple[int, int] = (64, 96)) -> Dict[str, int]:
    """{"channels", "stride", "image_channels"} of a representation's code, from forwards of
    zero images of two sizes (larger than its ``min_size``).

    Example:
        >>> code_geometry(as_representation("hog"))
        {'channels': 31, 'stride': 8, 'image_channels': 1}
    """
    rep = as_representation(rep, fn="code_geometry")
    base = max(int(rep.min_size), sizes[0])
    a, b = base, base + (sizes[1] - sizes[0])
    like = _probe_device(rep)
    shapes = []
    for s in (a, b):
        x = torch.zeros(1, rep.channels, s, s, **like)
        with torch.no_grad():
            shapes.append(tuple(code_map(rep, rep(rep.preprocess(x)), (s, s)).shape))
    (_, c, ha, _), (_, _, hb, _) = shapes
    if hb == ha:
        raise ValueError(
            f"code_geometry: the code of {rep.name} does not grow with the image "
            f"({list(shapes[0])} at {a} px, {list(shapes[1])} at {b} px): no spatial map to decode"
        )
    stride = max(1, int(round((b - a) / (hb - ha))))
    return {"channels": int(c), "stride": stride, "image_channels": int(rep.channels)}


def fit_to_size(x: Tensor, size) -> Tensor:
    """Centre-crop or pad (replicating the border) [B, C, h, w] to [B, C, H, W] exactly."""
    H, W = (int(v) for v in size)
    h, w = x.shape[-2:]
    if h > H or w > W:  # crop the excess (centred, the odd pixel off the bottom / right)
        ct, cl = max(h - H, 0) // 2, max(w - W, 0) // 2
        x = x[..., ct : ct + min(h, H), cl : cl + min(w, W)]
        h, w = x.shape[-2:]
    top, left = (H - h) // 2, (W - w) // 2
    if H > h or W > w:  # replicate padding has no size limit
        x = F.pad(x, (left, W - w - left, top, H - h - top), mode="replicate")
    return x


def _block(cin: int, cout: int, slope: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope))


class Decoder(nn.Module):
    """Code map [B, C, h, w] -> image [B, C_img, H, W] in [0, 1] (not clamped in training).

    Args:
        in_channels: the code's channels.
        out_channels: the image's channels (1 for the gray HOG / DSIFT, 3 for a CNN).
        stride: the code's stride in pixels; ``round(log2(stride))`` upsampling stages.
        width: channels at full resolution; k >= 1 stages below it a map has
            ``width * 2 ** min(k + 1, 4)`` channels (HOG, width 8: 128, 64, 32, then 8 at
            full resolution, where the convolutions cost the most). Default: 8.
        negative_slope: the LeakyReLU's slope (0 for a ReLU). Default: 0.2.
        channels: the channels of each resolution, the code's first and full resolution last
            (``stages + 1`` ints); None: from ``width`` as above. Default: None.

    Attributes:
        code_scale: buffer [C]: the codes are divided by it (per-channel RMS of the training
            codes, set by :meth:`calibrate`; ones before).
        config: the constructor's arguments (what :func:`pyinvert.decoders.load` rebuilds it
            from).

    Shape:
        - code: :math:`(B, C, h, w)`; size: (H, W); output: :math:`(B, C_{img}, H, W)`.

    Example:
        >>> dec = Decoder(31, 1, stride=8, width=8)
        >>> dec(torch.rand(2, 31, 4, 5), (33, 41)).shape
        torch.Size([2, 1, 33, 41])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        width: int = 8,
        negative_slope: float = 0.2,
        channels: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        for key, v in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("stride", stride),
            ("width", width),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Decoder: expected {key} to be an int >= 1, got {v!r}")
        if not isinstance(negative_slope, (int, float)) or not 0 <= negative_slope < 1:
            raise ValueError(f"Decoder: expected negative_slope in [0, 1), got {negative_slope!r}")
        self.stride = stride
        self.stages = max(0, int(round(math.log2(stride))))
        if channels is None:
            chans = [width * 2 ** min(k + 1, 4) if k else width for k in range(self.stages, -1, -1)]
        else:
            chans = [int(c) for c in channels]
            if len(chans) != self.stages + 1 or min(chans) < 1:
                raise ValueError(
                    f"Decoder: expected channels as {self.stages + 1} ints >= 1 (one per "
                    f"resolution), got {list(channels)}"
                )
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "stride": stride,
            "width": width,
            "negative_slope": float(negative_slope),
            "channels": chans,  # recorded: a file does not depend on the default rule
        }
        s = float(negative_slope)
        self.register_buffer("code_scale", torch.ones(in_channels))
        self.inp = nn.Sequential(
            _block(in_channels, chans[0], s),
            _block(chans[0], chans[0], s),
            _block(chans[0], chans[0], s),
        )
        self.ups = nn.ModuleList(_block(chans[k], chans[k + 1], s) for k in range(self.stages))
        self.head = nn.Sequential(
            _block(chans[-1], chans[-1], s), nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        )

    @torch.no_grad()
    def calibrate(self, codes: Tensor) -> None:
        """Set :attr:`code_scale` from training codes [N, C, h, w] (per-channel RMS)."""
        rms = codes.detach().double().square().mean((0, 2, 3)).sqrt()
        rms = torch.where(rms > 0, rms, torch.ones_like(rms))
        self.code_scale.copy_(rms.to(self.code_scale))

    def forward(self, code: Tensor, size) -> Tensor:
        if code.dim() != 4 or code.shape[1] != self.code_scale.numel():
            raise ValueError(
                f"Decoder: expected a code of shape [B, {self.code_scale.numel()}, h, w], got "
                f"{list(code.shape)}"
            )
        h, w = code.shape[-2:]
        y = self.inp(code / self.code_scale.view(1, -1, 1, 1))
        for up in self.ups:
            y = up(F.interpolate(y, scale_factor=2, mode="nearest"))
        if 2**self.stages != self.stride:  # a stride that is not a power of 2
            y = F.interpolate(y, size=(h * self.stride, w * self.stride), mode="bilinear")
        return self.head(fit_to_size(y, size)) + 0.5

    @classmethod
    def for_representation(cls, rep, width: int = 8, negative_slope: float = 0.2) -> "Decoder":
        """A decoder sized for ``rep``'s code (see :func:`code_geometry`).

        Args:
            rep: anything :func:`pyinvert.representations.as_representation` accepts ("hog",
                "dsift", "cnn:mobilenet_v2:features.3", a :class:`pyinvert.CNN` of one layer).
            width: channels at full resolution. Default: 8.
            negative_slope: the LeakyReLU's slope. Default: 0.2.

        Example:
            >>> Decoder.for_representation("hog", width=8).stages
            3
        """
        g = code_geometry(rep)
        return cls(g["channels"], g["image_channels"], g["stride"], width, negative_slope)
