"""What tensor is optimized and how it becomes the image: ``image = param.image(p)``.

* :class:`PixelCanvas` (the default, the papers' setting): p is the image itself, in the
  representation's pixel scale, on a canvas ``jitter - 1`` pixels larger than the image (the
  jittered crops move over it); the recipe's initialization, update rule and bound apply to it.
* :class:`FourierImage`: p is a scaled, colour-decorrelated Fourier spectrum (Olah et al.,
  "Feature Visualization", Distill 2017; lucid's ``fft_image`` and ``to_valid_rgb``): the
  image is ``sigmoid(decorrelate(irfft2(p * scale)))``, which favours low frequencies (the
  spectrum's scale falls as ``1 / f ** decay_power``) and keeps pixels in [0, 1] without a
  projection.

A parameterization has ``init(...) -> p`` (one row per image, each from its own seed),
``image(p, representation) -> canvas`` (differentiable) and ``lr_scale(...)``; decoders and
style transfer plug in the same way (p = a latent code, image = the decoder's output).
"""

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from pyinvert.optim.recipes import Recipe


def _quantile(v: Tensor, q: float) -> Tensor:
    """``torch.quantile(v, q)`` (linear interpolation, the same values) from two selections
    (``kthvalue``, linear time) instead of a full sort (20 ms per 3 x 225 x 225 row)."""
    n = v.numel()
    rank = q * (n - 1)
    lo = int(math.floor(rank))
    hi = min(lo + 1, n - 1)
    below = torch.kthvalue(v, lo + 1).values
    above = torch.kthvalue(v, hi + 1).values if hi != lo else below
    return torch.lerp(below, above, torch.tensor(rank - lo, dtype=v.dtype))


def init_rows(rec: Recipe, shape, seeds: Sequence[int], sigma: float, dtype) -> Tensor:
    """Initial optimized tensors, one per row, each from its own seeded generator (CPU)."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        if rec.init == "randn_norm":
            z = torch.randn(shape, generator=g, dtype=torch.float64)
            z = z / z.norm() * sigma
        else:
            z = 2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1
            m = _quantile(z.flatten(), 0.95)
            z = z / m * sigma / math.sqrt(3)
        rows.append(z.to(dtype))
    return torch.stack(rows) if rows else torch.zeros((0, *shape), dtype=dtype)


class PixelCanvas:
    """The image is the optimized tensor (the papers' parameterization)."""

    name = "pixels"
    #: The recipe's bound projects the optimized tensor (it is the image).
    projects = True

    def init(
        self,
        rec: Recipe,
        shape,
        seeds,
        sigma: float,
        dtype,
        device,
        representation,
        start: Optional[Tensor] = None,
        start_noise: float = 0.0,
    ) -> Tensor:
        """The rows' tensors: the recipe's noise, or ``start`` (images in the optimized scale,
        [n, C, H, W]) at the centre of the canvas, zeros around, plus ``start_noise`` times
        the noise."""
        if start is None:
            return init_rows(rec, shape, seeds, sigma, dtype).to(device)
        H, W = start.shape[-2:]
        o = (shape[-2] - H) // 2
        x = torch.zeros((start.shape[0], *shape), device=device, dtype=dtype)
        x[..., o : o + H, o : o + W] = start
        if start_noise:
            x += start_noise * init_rows(rec, shape, seeds, sigma, dtype).to(device)
        return x

    def image(self, p: Tensor, representation, canvas_size=None) -> Tensor:
        return p

    def lr_scale(self, lr_mult: float, rec: Recipe) -> float:
        return lr_mult

    def config(self) -> dict:
        return {"name": self.name}


# lucid's colour_correlation_svd_sqrt (the square root of ImageNet's RGB covariance), whose
# columns are scaled to a maximum norm of 1.
_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def _colour_matrix(dtype, device) -> Tensor:
    m = torch.tensor(_COLOUR_SQRT, dtype=torch.float64)
    m = m / m.norm(dim=0).max()
    return m.to(dtype=dtype, device=device)


class FourierImage:
    """A colour-decorrelated image in the Fourier basis (see the module docstring).

    Args:
        decay_power: the spectrum's scale is ``1 / max(f, 1 / max(H, W)) ** decay_power``.
            Default: 1.0.
        sd: standard deviation of the initial spectrum. Default: 0.01.
        decorrelate: mix the three channels with ImageNet's colour correlation (RGB only).
            Default: True.
        lr: the first stage's learning rate in this basis (the recipe's stages keep their
            ratios). Default: 0.05.

    Example:
        >>> from pyinvert.optim.recipes import get_recipe
        >>> from pyinvert.representations import as_representation
        >>> rep = as_representation(lambda im: im)
        >>> param = FourierImage()
        >>> p = param.init(get_recipe("ijcv2016"), (3, 16, 16), [0], 80.0, torch.float32,
        ...                "cpu", rep)
        >>> rep.postprocess(param.image(p, rep)).shape
        torch.Size([1, 3, 16, 16])
    """

    name = "fourier"
    projects = False
    _MAGIC = 4.0  # lucid's division of the image by 4 (a unit-variance spectrum -> mild image)

    def __init__(
        self, decay_power: float = 1.0, sd: float = 0.01, decorrelate: bool = True, lr: float = 0.05
    ):
        for key, v in (("decay_power", decay_power), ("sd", sd), ("lr", lr)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"FourierImage: expected {key} to be a number >= 0, got {v!r}")
        self.decay_power = float(decay_power)
        self.sd = float(sd)
        self.decorrelate = bool(decorrelate)
        self.lr = float(lr)

    def _scale(self, H: int, W: int, dtype, device) -> Tensor:
        fy = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(W, dtype=torch.float64)[None, :]
        f = (fy * fy + fx * fx).sqrt().clamp_min(1.0 / max(H, W))
        return (1.0 / f**self.decay_power).to(dtype=dtype, device=device)

    def _mix(self, z: Tensor, inverse: bool = False) -> Tensor:
        if not self.decorrelate or z.shape[1] != 3:
            return z
        m = _colour_matrix(z.dtype, z.device)
        if inverse:
            m = torch.linalg.inv(m)
        return torch.einsum("ij,bjhw->bihw", m, z)

    def init(
        self,
        rec: Recipe,
        shape,
        seeds,
        sigma: float,
        dtype,
        device,
        representation,
        start: Optional[Tensor] = None,
        start_noise: float = 0.0,
    ) -> Tensor:
        C, Hc, Wc = shape
        spec = (C, Hc, Wc // 2 + 1, 2)
        rows = [
            torch.randn(spec, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
            * self.sd
            for s in seeds
        ]
        p = torch.stack(rows) if rows else torch.zeros((0, *spec), dtype=torch.float64)
        p = p.to(dtype=dtype, device=device)
        if start is not None:
            H, W = start.shape[-2:]
            o = (Hc - H) // 2
            pixels = torch.full((start.shape[0], C, Hc, Wc), 0.5, dtype=dtype, device=device)
            pixels[..., o : o + H, o : o + W] = representation.postprocess(start)
            z = torch.logit(pixels.clamp(1e-3, 1 - 1e-3))
            f = torch.fft.rfft2(self._mix(z, inverse=True) * self._MAGIC, norm="ortho")
            f = f / self._scale(Hc, Wc, dtype, device)
            p = torch.view_as_real(f).contiguous() + start_noise * p
        return p

    def image(self, p: Tensor, representation, canvas_size=None) -> Tensor:
        """The canvas (``canvas_size`` (Hc, Wc); None: an even width) in the
        representation's optimized scale, differentiable in p."""
        Hc, Wc = canvas_size if canvas_size is not None else (p.shape[-3], 2 * (p.shape[-2] - 1))
        f = torch.view_as_complex(p.contiguous()) * self._scale(Hc, Wc, p.dtype, p.device)
        z = torch.fft.irfft2(f, s=(Hc, Wc), norm="ortho") / self._MAGIC
        return representation.preprocess(torch.sigmoid(self._mix(z)))

    def lr_scale(self, lr_mult: float, rec: Recipe) -> float:
        return self.lr / rec.stages[0].lr

    def config(self) -> dict:
        return {
            "name": self.name,
            "decay_power": self.decay_power,
            "sd": self.sd,
            "decorrelate": self.decorrelate,
            "lr": self.lr,
        }
