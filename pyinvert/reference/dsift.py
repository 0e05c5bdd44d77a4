"""Dense SIFT in plain PyTorch (autograd), written as a small CNN; equals VLFeat 0.9.21's vl_dsift.

This is the test oracle and the benchmark baseline for the fused kernels of `pyinvert.dsift`. It
follows the papers' view of DSIFT as a small CNN (Mahendran & Vedaldi, CVPR 2015, Sec. 3, and
IJCV 2016):

1. derivative filters: gx, gy by central differences [-1/2, 0, 1/2] (one-sided at the borders);
2. orientation binning: the gradient angle (VLFeat's fast atan2 approximation) is soft-assigned
   to the two nearest of 8 orientations, each channel weighted by the gradient modulus;
3. spatial pooling: each orientation channel is filtered, separably, by the 4 x 4 bilinear
   (triangular) spatial-bin kernels times the Gaussian window of the descriptor (image padded by
   replication) and sampled at the bin centres of the keypoint grid;
4. normalization: l2-normalize, clamp at 0.2, l2-normalize again.

Everything is batched and vectorized over images, orientations and pixels. Constants, thresholds
and the order of float operations follow vl/dsift.c and vl/mathop.h where it matters: in nearly
flat image regions (descriptor energy below 1e-8, e.g. saturated areas of a [0, 1] image) VLFeat
divides by its epsilon instead of the norm, which magnifies the last bits of the pooled values, so
the filters below sum their taps in VLFeat's order and the flat-window filter uses VLFeat's integral
signals. The remaining differences are rounding (torch's sums of squares are not sequential, float64
evaluates the same formulas in double).
"""

import math

import torch
import torch.nn.functional as F

NUM_BIN_T = 8  # orientations
NUM_BIN_XY = 4  # spatial bins per side
WINDOW_SIZE = 2.0  # VLFeat's default Gaussian window, in units of bin_size
EPS_F = 1.19209290e-07  # VL_EPSILON_F
ATAN_C1, ATAN_C3 = 0.9675, 0.1821  # vl_fast_atan2_f coefficients
CLAMP = 0.2


def _f32(value):
    """value rounded to float32 (VLFeat computes its constants and kernels in float)."""
    return float(torch.tensor(value, dtype=torch.float32))


def _sqrt_or_zero(q):
    """sqrt(q), or 0 where q < 1e-8, as VLFeat's vl_fast_sqrt_f; the gradient is 0 there.

    For float32 the value is VLFeat's: q times its fast inverse square root (the bit trick plus two
    Newton steps, relative error < 5e-6), because the flat-window integral signals subtract large
    running sums of moduli and would magnify that difference. The gradient is the exact sqrt's.
    """
    # For float32, compare as C does: (double) q < 1e-8; float32(1e-8) itself is below 1e-8.
    threshold = 1.0000000664932204e-08 if q.dtype == torch.float32 else 1e-8
    keep = q >= threshold
    root = torch.sqrt(torch.where(keep, q, torch.ones_like(q)))
    if q.dtype == torch.float32:
        with torch.no_grad():
            y = (0x5F3759DF - (q.view(torch.int32) >> 1)).view(torch.float32)
            half = 0.5 * q
            y = y * (1.5 - half * y * y)
            y = y * (1.5 - half * y * y)
            fast = q * y
        root = fast + (root - root.detach())  # value: fast (exactly); gradient: sqrt's
    return torch.where(keep, root, torch.zeros_like(q))


def _image_derivatives(x):
    """gx, gy of x [B, 1, H, W]: derivative filter [-1/2, 0, 1/2], one-sided at the borders."""
    kernel = x.new_tensor([-0.5, 0.0, 0.5])
    gx_inner = F.conv2d(x, kernel.view(1, 1, 1, 3))
    gy_inner = F.conv2d(x, kernel.view(1, 1, 3, 1))
    left, right = x[..., :, 1:2] - x[..., :, 0:1], x[..., :, -1:] - x[..., :, -2:-1]
    top, bottom = x[..., 1:2, :] - x[..., 0:1, :], x[..., -1:, :] - x[..., -2:-1, :]
    return torch.cat([left, gx_inner, right], 3), torch.cat([top, gy_inner, bottom], 2)


def _fast_atan2(y, x):
    """VLFeat's vl_fast_atan2_f: a cubic in r = (|x| - |y|) / (|x| + |y|), max error 0.0061 rad."""
    abs_y = y.abs() + EPS_F
    positive = x >= 0
    # (x - a) / (x + a) for x >= 0 and (x + a) / (a - x) for x < 0, with a safe denominator.
    r = (x.abs() - abs_y) / (x.abs() + abs_y)
    r = torch.where(positive, r, -r)
    base = torch.where(positive, x.new_tensor(math.pi / 4), x.new_tensor(3 * math.pi / 4))
    angle = base + (ATAN_C3 * r * r - ATAN_C1) * r
    return torch.where(y < 0, -angle, angle)


def _orientation_channels(x):
    """The 8 oriented-gradient channels [B, 8, H, W]: modulus times the orientation-bin weight."""
    gx, gy = _image_derivatives(x)
    modulus = _sqrt_or_zero(gx * gx + gy * gy)
    angle = _fast_atan2(gy, gx)
    two_pi = _f32(2 * math.pi) if x.dtype == torch.float32 else 2 * math.pi
    angle = torch.where(angle < 0, angle + two_pi, angle)  # vl_mod_2pi_f
    # Bin coordinate t in [0, 8]: VLFeat multiplies by the double 8 / (2 pi), rounds to float.
    t = (angle.double() * (NUM_BIN_T / (2 * math.pi))).to(x.dtype)
    lower = torch.floor(t)
    frac = t - lower  # no gradient through floor: d frac / d t = 1
    bins = torch.arange(NUM_BIN_T, device=x.device).view(1, -1, 1, 1)
    lower = lower.long()
    is_lower = (lower % NUM_BIN_T == bins).to(x.dtype)
    is_upper = ((lower + 1) % NUM_BIN_T == bins).to(x.dtype)
    return (1 - frac) * modulus * is_lower + frac * modulus * is_upper


def _bin_kernels(bin_size, flat_window):
    """The 4 one-dimensional spatial-bin filters k_i(d), d = -bin_size+1 .. bin_size-1, [4, 2*bs-1].

    k_i(d) = (1 - |d| / bin_size) * window_i(d): the triangular (bilinear) bin weight times the
    Gaussian window (sigma = 2 * bin_size) centred on the descriptor, whose centre is at offset
    -bin_size * (i - 1.5) from bin i's centre. With flat_window, VLFeat drops window_i from the
    filter and multiplies the result by the window's mean over the bin instead (`_window_means`).
    Values are float32, computed as VLFeat does.
    """
    d = torch.arange(-bin_size + 1, bin_size, dtype=torch.float32)
    triangle = 1.0 - d.abs() / bin_size
    if flat_window:
        return triangle.expand(NUM_BIN_XY, -1)
    return torch.stack([triangle * _window(bin_size, i) for i in range(NUM_BIN_XY)])


def _window(bin_size, bin_index):
    """The Gaussian window seen from bin bin_index, at offsets d = -bin_size+1 .. bin_size-1."""
    d = torch.arange(-bin_size + 1, bin_size, dtype=torch.float32)
    delta = bin_size * (_f32(bin_index) - _f32(0.5 * (NUM_BIN_XY - 1)))
    sigma = _f32(bin_size) * _f32(WINDOW_SIZE)
    z = (d - _f32(delta)) / sigma
    e = (-0.5 * z * z).double().exp().float()  # expf, correctly rounded
    return e


def _window_means(bin_size):
    """VLFeat's flat-window reweighting: bin_size * mean of the window over each bin, [4]."""
    means = []
    for i in range(NUM_BIN_XY):
        acc = torch.zeros((), dtype=torch.float32)
        for value in _window(bin_size, i):  # sequential float sum, as _vl_dsift_get_bin_window_mean
            acc = acc + value
        means.append(acc / (2 * bin_size - 1) * bin_size)
    return torch.stack(means)


def _filter_taps(v, kernel, dim, start, step, count):
    """Strided convolution along dim, with replicate padding: out[f] = sum_d kernel(d) v[y_f - d]
    at y_f = start + f * step, f < count (taps d = -R..R; v[p] = v[clamp(p)] outside).

    The taps are accumulated one at a time in the order of VLFeat's vl_imconvcol (ascending source
    index, products rounded before the sum), so that float32 results are bit-identical.
    """
    taps = kernel.numel()
    radius = (taps - 1) // 2
    centres = start + step * torch.arange(count)
    source = (centres[:, None] - radius + torch.arange(taps)).clamp(0, v.shape[dim] - 1)
    v = v.movedim(dim, -2)
    windows = v.index_select(-2, source.flatten().to(v.device)).unflatten(-2, (count, taps))
    weights = kernel.tolist()  # Python floats: exact (float32 values), and fast as multipliers
    out = None
    for k, term in enumerate(windows.unbind(-2)):  # source y_f - R + k, i.e. d = R - k
        term = term * weights[taps - 1 - k]
        out = term if out is None else out + term
    return out.movedim(-2, dim)


def _filter_triangle_integral(v, delta, dim):
    """VLFeat's vl_imconvcoltri along dim: the triangular filter (delta - |d|) / delta^2 with
    replicate padding, computed as VLFeat does: by integral signals (two box filters)."""
    v = v.movedim(dim, 0).unbind(0)
    n = len(v)
    scale = _f32(1.0 / (delta * delta)) if v[0].dtype == torch.float32 else 1.0 / (delta * delta)
    # Backward running sum s[y] = sum_{p >= y} v[p], continued below 0 with v[0] (index y+delta).
    s = [None] * (n + delta)
    s[n - 1 + delta] = v[n - 1]
    for y in range(n - 2, -delta - 1, -1):
        s[y + delta] = s[y + 1 + delta] + v[max(y, 0)]
    # Box filter sum_{p=y}^{y+delta-1} v[p], replicating v[n-1] past the end.
    box = [s[y + delta] - s[y + 2 * delta] for y in range(-delta, n - delta)]
    box += [s[y + delta] - s[n - 1 + delta] * float(n - delta - y) for y in range(n - delta, n)]
    # Forward running sum of the box filter, then the second (backward) box filter.
    c = [box[0]]
    for b in box[1:]:
        c.append(c[-1] + b)
    out = torch.stack([(c[y + delta] - c[y]) * scale for y in range(n)])
    return out.movedim(0, dim)


def _sample(v, dim, bin_size, step, num_frames, bin_index):
    """v sampled along dim at the centres of spatial bin bin_index: f * step + bin_index * bs."""
    start = bin_index * bin_size
    return v.narrow(dim, start, (num_frames - 1) * step + 1)[
        (slice(None),) * dim + (slice(None, None, step),)
    ]


def _spatial_pooling(channels, step, bin_size, flat_window, frames_y, frames_x):
    """Pooled histograms h [B, 8, 4 (bin y), 4 (bin x), Fy, Fx] of the orientation channels."""
    if flat_window:
        # Triangular filter (unit integral), then VLFeat's per-bin mean of the Gaussian window.
        rows = _filter_triangle_integral(channels, bin_size, 2)
        rows = torch.stack(
            [_sample(rows, 2, bin_size, step, frames_y, j) for j in range(NUM_BIN_XY)], 2
        )  # [B, 8, 4, Fy, W]
        cols = _filter_triangle_integral(rows, bin_size, 4)
        h = torch.stack(
            [_sample(cols, 4, bin_size, step, frames_x, i) for i in range(NUM_BIN_XY)], 3
        )  # [B, 8, 4, 4, Fy, Fx]
        means = _window_means(bin_size).to(h.dtype).to(h.device)
        weight = means.view(-1, 1) * means.view(1, -1)  # [bin y, bin x]: wy * wx
        return weight.view(1, 1, 4, 4, 1, 1) * h
    kernels = _bin_kernels(bin_size, flat_window).to(channels.dtype).to(channels.device)
    rows = torch.stack(
        [
            _filter_taps(channels, kernels[j], 2, j * bin_size, step, frames_y)
            for j in range(NUM_BIN_XY)
        ],
        2,
    )  # [B, 8, 4, Fy, W]
    return torch.stack(
        [
            _filter_taps(rows, kernels[i], 4, i * bin_size, step, frames_x)
            for i in range(NUM_BIN_XY)
        ],
        3,
    )  # [B, 8, 4, 4, Fy, Fx]


def _normalize(h):
    """VLFeat's _vl_dsift_normalize_histogram: h / (sqrt(sum h^2) + eps), sqrt -> 0 below 1e-8."""
    norm = _sqrt_or_zero((h * h).sum(-1, keepdim=True)) + EPS_F
    return h / norm


def dsift(x, *, step=4, bin_size=8, flat_window=False):
    """Dense SIFT of a batch of grayscale images, in plain PyTorch; see `pyinvert.dsift`.

    Args:
        x: images [B, 1, H, W], float32 or float64.
        step: keypoint sampling step in pixels. Default: 4.
        bin_size: spatial bin size in pixels. Default: 8.
        flat_window: VLFeat's flat-window approximation of the Gaussian window. Default: False.

    Returns:
        (descriptors [B, N, 128], keypoints [N, 2]) laid out as `pyinvert.dsift`'s.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"dsift: expected x of shape (B, 1, H, W), got {list(x.shape)}")
    batch, _, height, width = x.shape
    frame_size = bin_size * (NUM_BIN_XY - 1) + 1
    if height < frame_size or width < frame_size:
        raise ValueError(
            f"dsift: expected x at least {frame_size}x{frame_size} "
            f"(3 * bin_size + 1), got {height}x{width}"
        )
    frames_y = (height - frame_size) // step + 1
    frames_x = (width - frame_size) // step + 1
    keypoints = _keypoints(frames_y, frames_x, step, bin_size, x.dtype, x.device)
    if batch == 0:
        return x.new_zeros(0, frames_y * frames_x, 128), keypoints

    channels = _orientation_channels(x)  # [B, 8, H, W]
    h = _spatial_pooling(channels, step, bin_size, flat_window, frames_y, frames_x)
    # [B, t, bin y, bin x, Fy, Fx] -> [B, N, 128] in VLFeat's order (bin_y * 4 + bin_x) * 8 + t.
    h = h.permute(0, 4, 5, 2, 3, 1).reshape(batch, frames_y * frames_x, 128)
    h = _normalize(h)
    h = torch.clamp(h, max=CLAMP)
    return _normalize(h), keypoints


def _keypoints(frames_y, frames_x, step, bin_size, dtype, device):
    """Descriptor centres (x, y), x fastest, as vl_dsift_get_keypoints."""
    center = 0.5 * bin_size * (NUM_BIN_XY - 1)
    ys = torch.arange(frames_y, dtype=dtype, device=device) * step + center
    xs = torch.arange(frames_x, dtype=dtype, device=device) * step + center
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1)
