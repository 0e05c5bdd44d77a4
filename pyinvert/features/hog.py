"""Differentiable HOG equal to VLFeat 0.9.21's ``vl_hog``, and its glyph renderer.

This is the only module that calls ``torch.ops.pyinvert.hog`` / ``_hog_backward``; it registers
their fake (meta) kernels and the autograd formula.
"""

import functools
import math

import torch
from torch import Tensor, nn

from pyinvert import _ext  # noqa: F401  (registers torch.ops.pyinvert)

#: The HOG variants, as VLFeat names them (lower case).
VARIANTS = ("uoctti", "dalaltriggs")
_VARIANT_CODES = {"uoctti": 0, "dalaltriggs": 1}  # must match csrc/common/hog_math.h


def num_cells(size: int, cell_size: int) -> int:
    """Number of HOG cells along a side of ``size`` pixels (the last one at least half inside)."""
    return (size + cell_size // 2) // cell_size


def descriptor_size(num_orientations: int, variant: str = "uoctti") -> int:
    """Dimension D of a cell's descriptor: 3*no + 4 for "uoctti", 4*no for "dalaltriggs"."""
    code = _check_variant("descriptor_size", variant)
    return 3 * num_orientations + 4 if code == 0 else 4 * num_orientations


MAX_ORIENTATIONS = 1 << 24  # the kernels index directed bins with int32


def _check_int(fn, name, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: expected {name} to be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: expected {name} >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{fn}: expected {name} <= {maximum}, got {value}")


def _check_variant(fn, variant):
    if not isinstance(variant, str):
        raise TypeError(f"{fn}: expected variant to be a str, got {type(variant).__name__}")
    code = _VARIANT_CODES.get(variant.lower())
    if code is None:
        raise ValueError(f"{fn}: expected variant in {VARIANTS}, got {variant!r}")
    return code


def check_hog_args(fn, x, cell_size, num_orientations, variant, bilinear_orientations):
    """Validate the arguments of hog (shared with pyinvert.reference.hog); returns the variant
    code. Raises TypeError / ValueError whose message starts with ``fn``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{fn}: expected x of shape (B, C, H, W), got {list(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{fn}: expected x of dtype float32 or float64, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{fn}: expected x with at least 1 channel, got C={x.shape[1]}")
    _check_int(fn, "cell_size", cell_size, 1)
    _check_int(fn, "num_orientations", num_orientations, 1, MAX_ORIENTATIONS)
    code = _check_variant(fn, variant)
    if not isinstance(bilinear_orientations, bool):
        raise TypeError(
            f"{fn}: expected bilinear_orientations to be a bool, "
            f"got {type(bilinear_orientations).__name__}"
        )
    H, W = x.shape[2], x.shape[3]
    if num_cells(H, cell_size) < 1 or num_cells(W, cell_size) < 1:
        raise ValueError(
            f"{fn}: expected H and W >= {cell_size - cell_size // 2} (at least half a cell of "
            f"cell_size={cell_size}), got H={H}, W={W}"
        )
    return code


# ---- the op: fake kernels and autograd ------------------------------------------------------

# The op returns (features, hist, pixels, jacobian): the directed histograms before
# normalisation [B, 2*no, Hc, Wc] and, when save_for_backward, per interior pixel the chosen
# channel and bins (int32 [B, 3, H-2, W-2]) and the Jacobian of the bin values
# ([B, 4, H-2, W-2]) that the backward pass uses instead of recomputing the orientations.


def _pixel_shape(x, rows, saved):
    B, _, H, W = x.shape
    return (B, rows, max(H - 2, 0), max(W - 2, 0)) if saved else (0,)


@torch.library.register_fake("pyinvert::hog")
def _hog_fake(x, cell_size, num_orientations, variant, bilinear_orientations, save_for_backward):
    B, _, H, W = x.shape
    Hc, Wc = num_cells(H, cell_size), num_cells(W, cell_size)
    D = 3 * num_orientations + 4 if variant == 0 else 4 * num_orientations
    return (
        x.new_empty((B, D, Hc, Wc)),
        x.new_empty((B, 2 * num_orientations, Hc, Wc)),
        x.new_empty(_pixel_shape(x, 3, save_for_backward), dtype=torch.int32),
        x.new_empty(_pixel_shape(x, 4, save_for_backward)),
    )


@torch.library.register_fake("pyinvert::_hog_backward")
def _hog_backward_fake(
    grad, x, hist, pixels, jacobian, cell_size, num_orientations, variant, bilinear_orientations
):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _hog_setup_context(ctx, inputs, output):
    x, cell_size, num_orientations, variant, bilinear, _ = inputs
    _, hist, pixels, jacobian = output
    ctx.save_for_backward(x, hist, pixels, jacobian)
    ctx.params = (cell_size, num_orientations, variant, bilinear)
    ctx.mark_non_differentiable(hist, pixels, jacobian)
    # Otherwise autograd fills a zero gradient for each of those (large) outputs on every
    # backward: measured as a third of an inversion step's time at B = 16, 224 x 224.
    ctx.set_materialize_grads(False)


def _hog_backward(ctx, grad_features, grad_hist, grad_pixels, grad_jacobian):
    # Only the features are differentiable outputs (hog() returns nothing else).
    x, hist, pixels, jacobian = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0] and grad_features is not None:
        grad_x = torch.ops.pyinvert._hog_backward(
            grad_features, x, hist, pixels, jacobian, *ctx.params
        )
    return grad_x, None, None, None, None, None


torch.library.register_autograd("pyinvert::hog", _hog_backward, setup_context=_hog_setup_context)


# ---- public API -----------------------------------------------------------------------------


def hog(
    x: Tensor,
    *,
    cell_size: int = 8,
    num_orientations: int = 9,
    variant: str = "uoctti",
    bilinear_orientations: bool = False,
) -> Tensor:
    r"""Histogram of oriented gradients, equal to VLFeat 0.9.21's ``vl_hog`` and differentiable.

    Computes, for every image, what ``vl_hog_new(variant, num_orientations, false)``,
    ``vl_hog_set_use_bilinear_orientation_assignments``, ``vl_hog_put_image`` and
    ``vl_hog_extract`` compute on the planar float image (bit for bit in float32 on the CPU):
    central-difference gradients at the interior pixels (the channel with the largest
    gradient at each pixel), orientation binning into ``2 * num_orientations`` directed bins
    (hard, or bilinear in angle: the paper's HOGb), bilinear spatial pooling into cells of
    ``cell_size`` pixels, normalisation by the four 2x2 blocks around each cell with clamping
    at 0.2, and for "uoctti" the averaging over blocks and the four texture features.

    The gradient is the exact derivative of this function wherever it is differentiable; the
    channel choice, the hard orientation bins and the 0.2 clamps are piecewise constant and
    contribute no gradient. When ``x`` requires grad, the forward pass also keeps 7 numbers
    per pixel (chosen channel, bins, Jacobian of the bin values) for the backward pass.

    Args:
        x: images; any strides (channels_last included), float32 or float64, CPU or CUDA.
        cell_size: cell side in pixels. Default: 8.
        num_orientations: number of undirected orientations (the directed histogram has
            twice as many bins). Default: 9.
        variant: "uoctti" (Felzenszwalb et al., DPM) or "dalaltriggs". Default: "uoctti".
        bilinear_orientations: split each gradient between its two nearest orientation bins
            (HOGb) instead of assigning it to the nearest one. Default: False.

    Returns:
        The HOG array, indexed (image, dimension, cell row, cell column); VLFeat's own buffer
        is the (dimension, cell row, cell column) array of one image.

    Raises:
        ValueError: arguments out of range, or a NaN / Inf pixel anywhere in ``x`` ("hog:
            expected finite pixel values, got NaN/Inf in image b", b the first such image).
        TypeError: arguments of the wrong type.

    Shape:
        - x: :math:`(B, C, H, W)` with :math:`C \ge 1`, :math:`B \ge 0`.
        - Output: :math:`(B, D, H_c, W_c)` with :math:`H_c = \lfloor (H + \lfloor s/2 \rfloor)
          / s \rfloor`, :math:`W_c` likewise (:math:`s` = cell_size, both must be at least 1),
          and :math:`D = 3 n_o + 4` ("uoctti") or :math:`4 n_o` ("dalaltriggs").

    Example:
        >>> import torch, pyinvert
        >>> x = torch.rand(2, 3, 64, 48, requires_grad=True)
        >>> h = pyinvert.hog(x)
        >>> h.shape
        torch.Size([2, 31, 8, 6])
        >>> h.square().sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 64, 48])

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015: HOG (and HOGb, with bilinear orientation assignment) written as a
        small CNN, the representation :math:`\Phi` inverted by eq. (1).
        P. Felzenszwalb et al., "Object Detection with Discriminatively Trained Part Based
        Models", PAMI 2010 (the UoCTTI variant); N. Dalal and B. Triggs, CVPR 2005.
    """
    code = check_hog_args("hog", x, cell_size, num_orientations, variant, bilinear_orientations)
    save = torch.is_grad_enabled() and x.requires_grad
    features = torch.ops.pyinvert.hog(
        x, cell_size, num_orientations, code, bilinear_orientations, save
    )[0]
    return features


class HOG(nn.Module):
    r"""Module form of :func:`hog`, with the parameters fixed at construction.

    Args:
        cell_size: cell side in pixels. Default: 8.
        num_orientations: number of undirected orientations. Default: 9.
        variant: "uoctti" or "dalaltriggs". Default: "uoctti".
        bilinear_orientations: bilinear orientation assignment (HOGb). Default: False.

    Shape:
        - Input: :math:`(B, C, H, W)`.
        - Output: :math:`(B, D, H_c, W_c)`, see :func:`hog`.

    Example:
        >>> import torch, pyinvert
        >>> phi = pyinvert.HOG(cell_size=4, variant="dalaltriggs")
        >>> phi(torch.rand(1, 1, 32, 32)).shape
        torch.Size([1, 36, 8, 8])

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015.
    """

    def __init__(
        self,
        cell_size: int = 8,
        num_orientations: int = 9,
        variant: str = "uoctti",
        bilinear_orientations: bool = False,
    ):
        super().__init__()
        _check_int("HOG", "cell_size", cell_size, 1)
        _check_int("HOG", "num_orientations", num_orientations, 1, MAX_ORIENTATIONS)
        _check_variant("HOG", variant)
        if not isinstance(bilinear_orientations, bool):
            raise TypeError(
                f"HOG: expected bilinear_orientations to be a bool, "
                f"got {type(bilinear_orientations).__name__}"
            )
        self.cell_size = cell_size
        self.num_orientations = num_orientations
        self.variant = variant.lower()
        self.bilinear_orientations = bilinear_orientations

    @property
    def descriptor_size(self) -> int:
        """Dimension D of a cell's descriptor."""
        return descriptor_size(self.num_orientations, self.variant)

    def forward(self, x: Tensor) -> Tensor:
        return hog(
            x,
            cell_size=self.cell_size,
            num_orientations=self.num_orientations,
            variant=self.variant,
            bilinear_orientations=self.bilinear_orientations,
        )

    def extra_repr(self) -> str:
        return (
            f"cell_size={self.cell_size}, num_orientations={self.num_orientations}, "
            f"variant={self.variant!r}, bilinear_orientations={self.bilinear_orientations}"
        )


# ---- rendering ------------------------------------------------------------------------------


def _round_half_away(v: float) -> int:
    return int(math.floor(v + 0.5)) if v >= 0 else int(math.ceil(v - 0.5))


@functools.lru_cache(maxsize=None)
def _glyphs(num_orientations: int, glyph_size: int) -> Tensor:
    """[no, g, g] float32 bars, one per orientation, drawn as vl_hog_new draws them: a
    one-pixel line through the centre, orthogonal to the orientation (i.e. along the edge)."""
    g = glyph_size
    out = torch.zeros(num_orientations, g, g)
    for o in range(num_orientations):
        angle = math.fmod(o * math.pi / num_orientations + math.pi / 2, math.pi)
        x2 = g * math.cos(angle) / 2
        y2 = g * math.sin(angle) / 2
        if angle <= math.pi / 4 or angle >= math.pi * 3 / 4:  # mostly horizontal bar
            slope = y2 / x2
            offset = (1 - slope) * (g - 1) / 2
            skip = int((1 - abs(math.cos(angle))) / 2 * g)
            for i in range(skip, g - skip):
                j = _round_half_away(slope * i + offset)
                if 0 <= j < g:
                    out[o, j, i] = 1  # row j, column i
        else:  # mostly vertical bar
            slope = x2 / y2
            offset = (1 - slope) * (g - 1) / 2
            skip = int((1 - math.sin(angle)) / 2 * g)
            for j in range(skip, g - skip):
                i = _round_half_away(slope * j + offset)
                if 0 <= i < g:
                    out[o, j, i] = 1
    return out


def render_hog(
    features: Tensor, *, variant: str = "uoctti", num_orientations=None, glyph_size: int = 21
) -> Tensor:
    r"""Picture of HOG features as oriented bars (the glyph image of VLFeat's ``vl_hog_render``).

    Each cell becomes a ``glyph_size`` square where the bar of orientation k (drawn along the
    edge, i.e. orthogonal to the gradient orientation) has the cell's weight for k: the sum of
    the corresponding directed, undirected (and for "dalaltriggs" the four block) components.
    Overlapping bars add up, and each cell is clipped to [min(0, min_k w_k), max(0, max_k w_k)].

    Args:
        features: HOG array from :func:`hog` (one image or a batch), any floating dtype/device.
        variant: the variant that produced ``features``. Default: "uoctti".
        num_orientations: number of orientations; None infers it from D and ``variant``.
            Default: None.
        glyph_size: side of a cell's glyph in pixels (VLFeat uses 21). Default: 21.

    Returns:
        A one-channel image (same dtype and device as ``features``; not normalised: values
        are descriptor weights, e.g. divide by the maximum to display).

    Shape:
        - features: :math:`(D, H_c, W_c)` or :math:`(B, D, H_c, W_c)`.
        - Output: :math:`(1, g H_c, g W_c)` or :math:`(B, 1, g H_c, g W_c)`, g = glyph_size.

    Example:
        >>> import torch, pyinvert
        >>> h = pyinvert.hog(torch.rand(1, 3, 32, 40))
        >>> pyinvert.render_hog(h).shape
        torch.Size([1, 1, 84, 105])

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015 (HOG glyph figures).
    """
    fn = "render_hog"
    if not isinstance(features, Tensor):
        raise TypeError(
            f"{fn}: expected features to be a torch.Tensor, got {type(features).__name__}"
        )
    if features.dim() not in (3, 4):
        raise ValueError(
            f"{fn}: expected features of shape (D, Hc, Wc) or (B, D, Hc, Wc), "
            f"got {list(features.shape)}"
        )
    if not features.is_floating_point():
        raise TypeError(f"{fn}: expected floating point features, got {features.dtype}")
    code = _check_variant(fn, variant)
    _check_int(fn, "glyph_size", glyph_size, 1)
    D = features.shape[-3]
    if num_orientations is None:
        num_orientations = (D - 4) // 3 if code == 0 else D // 4
    else:
        _check_int(fn, "num_orientations", num_orientations, 1)
    no = num_orientations
    expected = 3 * no + 4 if code == 0 else 4 * no
    if no < 1 or D != expected:
        raise ValueError(
            f"{fn}: expected D = {'3*no + 4' if code == 0 else '4*no'} for variant "
            f"{variant!r}, got D={D} (num_orientations={num_orientations})"
        )
    batched = features.dim() == 4
    f = features if batched else features.unsqueeze(0)
    B, _, Hc, Wc = f.shape
    groups = 3 if code == 0 else 4
    # Weight of orientation k: the sum of its `groups` components, as vl_hog_render adds them.
    w = f[:, : groups * no].reshape(B, groups, no, Hc, Wc).sum(1)
    glyphs = _glyphs(no, glyph_size).to(device=f.device, dtype=f.dtype)
    g = glyph_size
    image = torch.einsum("bkyx,kij->byixj", w, glyphs)  # [B, Hc, g, Wc, g]
    zero = w.new_zeros(())
    lo = torch.minimum(w.amin(1), zero)[:, :, None, :, None]
    hi = torch.maximum(w.amax(1), zero)[:, :, None, :, None]
    image = torch.maximum(lo, torch.minimum(hi, image)).reshape(B, 1, Hc * g, Wc * g)
    return image if batched else image[0]
