"""Quality measures of an inversion: feature-space errors (the papers') and image-space ones.

References:
    A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting Them",
    CVPR 2015, Sec. 4.1 and Table 1 (the normalized reconstruction error).
    Z. Wang et al., "Image Quality Assessment: From Error Visibility to Structural Similarity",
    IEEE TIP 2004 (SSIM).
"""

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(fn, a, b, names=("code", "target")):
    for n, v in zip(names, (a, b)):
        if not isinstance(v, Tensor):
            raise TypeError(f"{fn}: expected {n} to be a torch.Tensor, got {type(v).__name__}")
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: expected {names[0]} and {names[1]} of the same shape, "
            f"got {list(a.shape)} and {list(b.shape)}"
        )
    if a.dim() < 1:
        raise ValueError(f"{fn}: expected a batch dimension, got shape {list(a.shape)}")


def feature_error(code: Tensor, target: Tensor) -> Tensor:
    r"""Normalized feature error :math:`\|\Phi(x_b) - \Phi_{0b}\|^2 / \|\Phi_{0b}\|^2` per image.

    Args:
        code: :math:`\Phi(x)`, [B, ...].
        target: :math:`\Phi_0`, same shape.

    Returns:
        Tensor[B] (float64).

    Example:
        >>> feature_error(torch.ones(2, 3), torch.full((2, 3), 2.0))
        tensor([0.2500, 0.2500], dtype=torch.float64)

    References:
        Mahendran & Vedaldi, CVPR 2015, eq. (1) (the data term).
    """
    _check_pair("feature_error", code, target)
    c, t = code.double().flatten(1), target.double().flatten(1)
    return (c - t).square().sum(1) / t.square().sum(1)


def pairwise_normalizer(targets: Tensor) -> Tensor:
    r"""Mean squared pairwise distance :math:`\frac{1}{N^2}\sum_{i,j}\|\Phi_{0i}-\Phi_{0j}\|^2`
    between the codes of an image set (all ordered pairs, the diagonal included, as
    ``mean(pdist2(Y0', Y0').^2)`` in the authors' evaluation). Needs N >= 2."""
    if not isinstance(targets, Tensor):
        raise TypeError(
            f"table1_error: expected targets to be a torch.Tensor, got {type(targets).__name__}"
        )
    if targets.shape[0] < 2:
        raise ValueError(
            f"table1_error: expected at least 2 target codes (the normalizer is "
            f"their mean pairwise distance), got {targets.shape[0]}"
        )
    y = targets.double().flatten(1)
    return torch.cdist(y, y).square().mean()


def table1_error(codes: Tensor, targets: Tensor) -> Tensor:
    r"""The CVPR 2015 Table 1 error of each image:
    :math:`\|\Phi(x_b) - \Phi_{0b}\|^2 / \overline{d^2}`, where :math:`\overline{d^2}` is the mean
    squared distance between the target codes of the whole set (:func:`pairwise_normalizer`).

    Args:
        codes: :math:`\Phi(x)` of the reconstructions, [N, ...].
        targets: :math:`\Phi_0` of the originals, same shape, N >= 2.

    Returns:
        Tensor[N] (float64); multiply by 100 for the paper's percentages.

    Example:
        >>> t = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> table1_error(t, t)
        tensor([0., 0.], dtype=torch.float64)

    References:
        Mahendran & Vedaldi, CVPR 2015, Sec. 4.1 and Table 1.
    """
    _check_pair("table1_error", codes, targets)
    norm = pairwise_normalizer(targets)
    d = (codes.double() - targets.double()).flatten(1)
    return d.square().sum(1) / norm


def _check_images(fn, x, y):
    _check_pair(fn, x, y, names=("x", "y"))
    if x.dim() != 4:
        raise ValueError(f"{fn}: expected x of shape (B, C, H, W), got {list(x.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    r"""Peak signal-to-noise ratio :math:`10 \log_{10}(R^2 / \mathrm{MSE})` per image, in dB.

    Args:
        x: images, [B, C, H, W].
        y: reference images, same shape.
        data_range: R, the range of the pixel values. Default: 1.0.

    Returns:
        Tensor[B] (float64; inf for identical images).

    Example:
        >>> psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1))
        tensor([20.0000], dtype=torch.float64)
    """
    _check_images("psnr", x, y)
    B = x.shape[0]
    xf, yf = x.reshape(B, -1), y.reshape(B, -1)
    total = torch.zeros(B, dtype=torch.float64, device=x.device)
    for i in range(0, xf.shape[1], _CHUNK):  # bounded memory: no float64 copy of the images
        total += (xf[:, i : i + _CHUNK].double() - yf[:, i : i + _CHUNK].double()).square().sum(1)
    mse = total / max(xf.shape[1], 1)
    return 10 * torch.log10(data_range**2 / mse)


#: Elements per chunk of the image metrics (psnr, ssim): their memory stays bounded (a few
#: times 8 x _CHUNK bytes) whatever the image size.
_CHUNK = 1 << 20


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r * r / (2 * sigma * sigma))
    return g / g.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    r"""Structural similarity (Wang et al. 2004) per image, averaged over channels.

    Local means, variances and covariance use a Gaussian window (size 11, sigma 1.5) over the
    "valid" positions (no padding); :math:`C_1 = (k_1 R)^2`, :math:`C_2 = (k_2 R)^2`;
    the SSIM map's mean is returned.

    Args:
        x: images, [B, C, H, W], H and W >= window_size.
        y: reference images, same shape.
        data_range: R. Default: 1.0.
        window_size: Gaussian window side. Default: 11.
        sigma: Gaussian standard deviation. Default: 1.5.
        k1: Default: 0.01.
        k2: Default: 0.03.

    Returns:
        Tensor[B] (float64), 1 for identical images.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x)
        tensor([1., 1.], dtype=torch.float64)

    References:
        Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, IEEE TIP 13(4), 2004, eq. (13).
    """
    _check_images("ssim", x, y)
    B, C, H, W = x.shape
    if H < window_size or W < window_size:
        raise ValueError(f"ssim: expected H and W >= window_size={window_size}, got H={H}, W={W}")
    g = _gaussian_window(window_size, float(sigma)).to(x.device)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # bounded memory: strips of rows (each with window_size - 1 rows of overlap) of one plane
    # at a time, in float64, summed; the same map as one pass over the whole image
    rows = max(1, _CHUNK // W)
    total = torch.zeros(B, dtype=torch.float64, device=x.device)
    for b in range(B):
        for c in range(C):
            for r0 in range(0, H - window_size + 1, rows):
                r1 = min(H, r0 + rows + window_size - 1)
                total[b] += _ssim_map(x[b, c, r0:r1], y[b, c, r0:r1], g, c1, c2).sum()
    count = (H - window_size + 1) * (W - window_size + 1)
    return total / (C * count)


def _ssim_map(x: Tensor, y: Tensor, g: Tensor, c1: float, c2: float) -> Tensor:
    x = x.double()[None, None]
    y = y.double()[None, None]

    def blur(t):
        t = F.conv2d(t, g.view(1, 1, -1, 1))
        return F.conv2d(t, g.view(1, 1, 1, -1))

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


__all__ = ["feature_error", "table1_error", "pairwise_normalizer", "psnr", "ssim"]
