"""Differentiable dense SIFT equal to VLFeat 0.9.21's vl_dsift (fused C++/CUDA kernels).

This module is the only one touching `torch.ops.pyinvert.dsift` / `_dsift_backward`: it registers
their fake (meta) kernels and the autograd formula, and wraps them in `dsift` and `DenseSIFT`.
"""

import operator

import torch
from torch import nn

from pyinvert import _ext  # noqa: F401  (loads the kernels)

NUM_BINS = 4  # spatial bins per side (VLFeat's vl_dsift_new_basic geometry: 4 x 4 x 8)
DESCRIPTOR_SIZE = 128


def _frames_along(size, step, bin_size):
    """Keypoints along one side, as VLFeat's _vl_dsift_update_buffers (0 when too small)."""
    extent = size - 1 - (NUM_BINS - 1) * bin_size
    return extent // step + 1 if extent >= 0 else 0


def _check_params(step, bin_size, flat_window, op="dsift"):
    values = []
    for name, value in (("step", step), ("bin_size", bin_size)):
        if isinstance(value, bool):
            raise TypeError(f"{op}: expected {name} to be an int, got bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{op}: expected {name} to be an int, got {type(value).__name__}"
            ) from None
        if value < 1:
            raise ValueError(f"{op}: expected {name} >= 1, got {value}")
        values.append(value)
    if not isinstance(flat_window, bool):
        raise TypeError(
            f"{op}: expected flat_window to be a bool, got {type(flat_window).__name__}"
        )
    return values[0], values[1], flat_window


def _check_input(x, bin_size, op="dsift"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: expected x of shape (B, 1, H, W), got {list(x.shape)}")
    if x.shape[1] != 1:
        raise ValueError(
            f"{op}: expected x of shape (B, 1, H, W) (grayscale), got {list(x.shape)}; convert RGB "
            "with x.mean(1, keepdim=True) or a luminance weighting"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: expected x of dtype float32 or float64, got {x.dtype}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: expected x on a CPU or CUDA device, got {x.device}")
    if x.device.type == "cuda" and not torch._C._dispatch_has_kernel_for_dispatch_key(
        "pyinvert::dsift", "CUDA"
    ):
        raise RuntimeError(
            f"{op}: pyinvert was built without its CUDA kernels; rebuild it with a "
            "CUDA torch and toolkit (PYINVERT_CUDA=1), or move x to the CPU"
        )
    frame = (NUM_BINS - 1) * bin_size + 1
    height, width = x.shape[2], x.shape[3]
    if height < frame or width < frame:
        raise ValueError(
            f"{op}: expected x of at least {frame}x{frame} pixels (3 * bin_size + 1) "
            f"for one descriptor, got {height}x{width}"
        )


def keypoints(height, width, *, step=4, bin_size=8, dtype=torch.float32, device=None):
    """Centres (x, y) of the dense SIFT descriptors of an H x W image, x fastest (VLFeat order).

    Args:
        height: image height H.
        width: image width W.
        step: sampling step in pixels. Default: 4.
        bin_size: spatial bin size in pixels. Default: 8.
        dtype: dtype of the result. Default: torch.float32.
        device: device of the result. Default: None (the current default device).

    Returns:
        Tensor [N, 2]: keypoint k is at (3/2 bin_size + step * (k % Nx), 3/2 bin_size + step *
        (k // Nx)), 0-based pixel coordinates, as `vl_dsift_get_keypoints` returns them.
    """
    step, bin_size, _ = _check_params(step, bin_size, False, "keypoints")
    center = 0.5 * bin_size * (NUM_BINS - 1)
    ys = torch.arange(_frames_along(height, step, bin_size), dtype=dtype, device=device)
    xs = torch.arange(_frames_along(width, step, bin_size), dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ys * step + center, xs * step + center, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1)


def dsift(x, *, step=4, bin_size=8, flat_window=False):
    r"""Dense SIFT descriptors of a batch of grayscale images, equal to VLFeat's and differentiable.

    Computes what VLFeat 0.9.21 computes with ``vl_dsift_new_basic(W, H, step, bin_size)``,
    ``vl_dsift_set_flat_window(flat_window)`` and ``vl_dsift_process``: 4 x 4 spatial bins of
    ``bin_size`` pixels and 8 orientations per descriptor, descriptors on a grid of ``step`` pixels
    covering the image. Per pixel, the gradient modulus is split between the two orientation bins
    nearest to the gradient angle (VLFeat's fast atan2 approximation); the orientation channels are
    pooled by the bilinear spatial-bin kernels times a Gaussian window of standard deviation
    ``2 * bin_size`` (or, with ``flat_window``, the window's mean over each bin), with the image
    padded by replication; each descriptor is l2-normalized, clamped at 0.2 and l2-normalized again.
    In float32 the float operations follow VLFeat's one by one (its fast atan2 and inverse square
    root, its summation orders, the integral signals of the flat window), so the descriptors equal
    VLFeat's bit for bit on our tests, including nearly flat patches where VLFeat divides by its
    epsilon (descriptor energy below 1e-8). float64 evaluates the same formulas in double: it agrees
    with VLFeat to ~1e-5 except on such nearly flat patches, whose values VLFeat's float rounding
    decides. The gradient is exact (entries clamped at 0.2 and moduli below VLFeat's 1e-8
    threshold are locally constant), with VLFeat's fast square root differentiated as the exact one.

    Args:
        x: grayscale images; for RGB use ``x.mean(1, keepdim=True)`` or a luminance weighting.
            Any value range (VLFeat's output does not depend on it, except in nearly flat regions).
        step: keypoint sampling step in pixels (both directions). Default: 4.
        bin_size: spatial bin size in pixels (both directions). Default: 8.
        flat_window: use VLFeat's fast flat-window approximation of the Gaussian window.
            Default: False.

    Returns:
        (descriptors, keypoints): descriptors in VLFeat's C API order (``vl_dsift_get_descriptors``,
        not transposed): entry ``(bin_y * 4 + bin_x) * 8 + t``, where orientation ``t`` is the
        gradient angle ``2 pi t / 8`` from the +x axis towards +y (x right, y down, i.e. clockwise
        on screen); keypoints as ``vl_dsift_get_keypoints`` gives them: the descriptor centres
        (x, y), 0-based, x fastest.

    Raises:
        ValueError: arguments out of range, or a NaN / Inf pixel anywhere in ``x`` ("dsift:
            expected finite pixel values, got NaN/Inf in image b", b the first such image).
        TypeError: arguments of the wrong type.

    Shape:
        - x: :math:`(B, 1, H, W)`, float32 or float64, CPU or CUDA, any strides, B may be 0,
          :math:`H, W \geq 3 \cdot bin\_size + 1`.
        - descriptors: :math:`(B, N, 128)` with :math:`N = N_y N_x`,
          :math:`N_y = \lfloor (H - 1 - 3 \cdot bin\_size) / step \rfloor + 1` (same for x).
        - keypoints: :math:`(N, 2)`, dtype and device of x.

    Example:
        >>> x = torch.rand(2, 1, 64, 64)
        >>> descriptors, centres = dsift(x, step=4, bin_size=8)
        >>> descriptors.shape, centres.shape
        (torch.Size([2, 100, 128]), torch.Size([100, 2]))
        >>> centres[:2].tolist()
        [[12.0, 12.0], [16.0, 12.0]]

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
        CVPR 2015, Eq. (1) (the inversion objective Phi is used in) and Sec. 3 (DSIFT and HOG
        written as CNNs); their IJCV 2016 extension "Visualizing Deep Convolutional Neural Networks
        Using Natural Pre-Images"; D. G. Lowe, "Distinctive Image Features from Scale-Invariant
        Keypoints", IJCV 2004, Sec. 6.1 (the descriptor); A. Vedaldi and B. Fulkerson, VLFeat,
        vl/dsift.c (the dense implementation reproduced here).
    """
    step, bin_size, flat_window = _check_params(step, bin_size, flat_window)
    _check_input(x, bin_size)
    # The histograms before normalization are kept only when a gradient will be needed.
    keep = x.requires_grad and torch.is_grad_enabled()
    descriptors, _ = torch.ops.pyinvert.dsift(x, step, bin_size, flat_window, keep)
    centres = keypoints(
        x.shape[2], x.shape[3], step=step, bin_size=bin_size, dtype=x.dtype, device=x.device
    )
    return descriptors, centres


class DenseSIFT(nn.Module):
    """Dense SIFT as a module: ``DenseSIFT(step, bin_size, flat_window)(x) == dsift(x, ...)``.

    Args:
        step: keypoint sampling step in pixels. Default: 4.
        bin_size: spatial bin size in pixels. Default: 8.
        flat_window: VLFeat's flat-window approximation of the Gaussian window. Default: False.

    Returns:
        (descriptors [B, N, 128], keypoints [N, 2]), see `dsift`.

    Shape:
        - Input: :math:`(B, 1, H, W)`.
        - Output: :math:`(B, N, 128)` and :math:`(N, 2)`.

    Example:
        >>> sift = DenseSIFT(step=8, bin_size=4)
        >>> descriptors, centres = sift(torch.rand(1, 1, 32, 40))
        >>> descriptors.shape
        torch.Size([1, 12, 128])

    References:
        A. Mahendran and A. Vedaldi, CVPR 2015, Sec. 3; VLFeat's vl/dsift.c. See `dsift`.
    """

    def __init__(self, step=4, bin_size=8, flat_window=False):
        super().__init__()
        self.step, self.bin_size, self.flat_window = _check_params(
            step, bin_size, flat_window, "DenseSIFT"
        )

    def forward(self, x):
        return dsift(x, step=self.step, bin_size=self.bin_size, flat_window=self.flat_window)

    def extra_repr(self):
        return f"step={self.step}, bin_size={self.bin_size}, flat_window={self.flat_window}"


# --- fake (meta) kernels and autograd for the ops --------------------------------------------


@torch.library.register_fake("pyinvert::dsift")
def _dsift_fake(x, step, bin_size, flat_window, return_histograms):
    torch._check(x.dim() == 4, lambda: f"dsift: expected x of shape (B, 1, H, W), got {x.shape}")
    frames = _frames_along(x.shape[2], step, bin_size) * _frames_along(x.shape[3], step, bin_size)
    descriptors = x.new_empty(x.shape[0], frames, DESCRIPTOR_SIZE)
    histograms = x.new_empty(descriptors.shape if return_histograms else (0,))
    return descriptors, histograms


@torch.library.register_fake("pyinvert::_dsift_backward")
def _dsift_backward_fake(grad, x, histograms, step, bin_size, flat_window):
    return x.new_empty(x.shape)


def _dsift_setup_context(ctx, inputs, output):
    x, step, bin_size, flat_window, return_histograms = inputs
    _, histograms = output
    ctx.mark_non_differentiable(histograms)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the histograms
    ctx.save_for_backward(x, histograms)
    ctx.params = (step, bin_size, flat_window)
    ctx.has_histograms = return_histograms


def _dsift_backward(ctx, grad, _grad_histograms):
    x, histograms = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        if not ctx.has_histograms:
            raise RuntimeError(
                "dsift: backward needs the histograms; call torch.ops.pyinvert.dsift"
                " with return_histograms=True (pyinvert.dsift does when x requires "
                "grad)"
            )
        if grad is None:
            grad = torch.zeros_like(histograms)
        grad_x = torch.ops.pyinvert._dsift_backward(grad, x, histograms, *ctx.params)
    return grad_x, None, None, None, None


torch.library.register_autograd(
    "pyinvert::dsift", _dsift_backward, setup_context=_dsift_setup_context
)
