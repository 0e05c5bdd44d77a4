"""HOG in plain PyTorch (autograd), written as the small CNN of Mahendran & Vedaldi.

The layers: derivative filters (a convolution), the channel of largest gradient, orientation
binning (a projection on the bin directions followed by a hard or bilinear assignment),
triangular (bilinear) spatial pooling into cells (a separable linear map), and the block
normalisation with clamping. It equals VLFeat 0.9.21's vl_hog (float32: to ~1e-6) and is the
test oracle and benchmark baseline for the fused kernels in pyinvert.features.hog.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pyinvert.features.hog import check_hog_args, num_cells


def _cell_pooling_matrix(size: int, cell_size: int, dtype, device) -> Tensor:
    """[cells, size - 2] triangular weights of the interior pixels 1..size-2 on the cells.

    Pixel p sits at h = (p + 0.5) / cell_size - 0.5 in cell units (computed in double and
    rounded to dtype, as VLFeat does); it gives weight 1 - (h - floor(h)) to cell floor(h)
    and h - floor(h) to the next one, dropping cells outside the grid.
    """
    cells = num_cells(size, cell_size)
    interior = max(size - 2, 0)
    p = torch.arange(1, 1 + interior, dtype=torch.float64, device=device)
    h = ((p + 0.5) / cell_size - 0.5).to(dtype)
    left = torch.floor(h)
    w_right = h - left
    w_left = 1 - w_right
    left = left.long()
    m = torch.zeros(cells + 2, interior, dtype=dtype, device=device)  # rows: cells -1..cells
    cols = torch.arange(interior, device=device)
    m[left + 1, cols] = w_left
    m[left + 2, cols] = w_right
    return m[1 : cells + 1]


def _orientation_votes(x: Tensor, no: int, bilinear: bool) -> Tensor:
    """[B, 2*no, H-2, W-2]: each interior pixel's |g| times its orientation weight(s), in its
    directed bin(s) (steps 1-3 of the CNN). Needs H, W >= 3."""
    B, C, H, W = x.shape
    dtype, device = x.dtype, x.device
    # 1. Derivative filters [-1, 0, 1] (along x) and its transpose (along y) on every channel,
    #    at the interior pixels. Written as differences of shifted views: that is exactly what
    #    the (valid, stride 1) convolution computes, without conv2d's overhead for 1 channel.
    gx = x[:, :, 1 : H - 1, 2:] - x[:, :, 1 : H - 1, : W - 2]
    gy = x[:, :, 2:, 1 : W - 1] - x[:, :, : H - 2, 1 : W - 1]

    # 2. Keep the channel of largest squared gradient (the first on ties; none if all zero).
    #    (torch.max along a dim returns the first maximal index, like VLFeat's strict ">".)
    g2 = gx * gx + gy * gy
    g2_best, best = g2.max(1, keepdim=True)
    flat = g2_best == 0
    gx = gx.gather(1, best).masked_fill(flat, 0)[:, 0]
    gy = gy.gather(1, best).masked_fill(flat, 0)[:, 0]
    g2_best = g2_best[:, 0]
    # |g|, with a zero (not NaN) derivative where g = 0. The square root is taken in double
    # and rounded: torch's float32 sqrt on CPU is not always correctly rounded (sqrtf is), and
    # one ulp of |g| can move acos(score / |g|) near a bin centre by ~1e-5 (HOGb).
    nonzero = g2_best > 0
    safe = torch.where(nonzero, g2_best, 1).to(torch.float64)
    mag = torch.where(nonzero, torch.sqrt(safe).to(dtype), 0)

    # 3. Orientation binning: scores against the bin directions k pi / no (rounded to dtype as
    #    VLFeat rounds them to float), the best one is the bin (k, or k + no if negative).
    angles = torch.arange(no, dtype=torch.float64) * math.pi / no
    ox = torch.cos(angles).to(device=device, dtype=dtype)
    oy = torch.sin(angles).to(device=device, dtype=dtype)
    scores = gx[:, None] * ox[:, None, None] + gy[:, None] * oy[:, None, None]  # [B,no,h,w]
    a = scores.abs()
    s0, k0 = a.max(1, keepdim=True)
    bin0 = k0 + no * (scores.gather(1, k0) < 0)
    values, bins = [], []
    if not bilinear:
        values.append(mag[:, None])
        bins.append(bin0)
    else:
        # Second best bin (the first on ties; only exists if no >= 2).
        a_rest = a.scatter(1, k0, -1.0)
        k1 = a_rest.max(1, keepdim=True)[1]
        bin1 = k1 + no * (scores.gather(1, k1) < 0)
        # Angle to bin 0. Its value is VLFeat's acos(min(s0 / max(|g|, 1e-10), 1)), float
        # rounding included; its derivative is that of the same angle written as
        # atan2(|g x o0|, g . o0), which is finite on the bin centre where acos' is not.
        denom = torch.clamp_min(mag.to(torch.float64), 1e-10)[:, None]
        cos0 = torch.clamp_max(s0.detach().to(torch.float64) / denom, 1.0).to(dtype)
        phi_value = torch.acos(cos0)
        sign = torch.where(bin0 >= no, -1.0, 1.0).to(dtype)
        o0x, o0y = ox[k0] * sign, oy[k0] * sign
        gxs, gys = gx[:, None], gy[:, None]
        cross = torch.where(nonzero[:, None], o0x * gys - o0y * gxs, 0)
        dot = torch.where(nonzero[:, None], o0x * gxs + o0y * gys, 1)
        phi_grad = torch.atan2(cross.abs(), dot)
        phi = phi_grad + (phi_value - phi_grad).detach()
        w1 = (phi.to(torch.float64) / (math.pi / no)).to(dtype)
        w0 = 1 - w1
        values += [mag[:, None] * w0, mag[:, None] * w1 * (no >= 2)]
        bins += [bin0, bin1 if no >= 2 else torch.full_like(bin1, 2 * no)]
    # One-hot over the 2*no directed bins (+ a discarded slot for "no bin"); a pixel's bins
    # are distinct, so one scatter places both of its votes.
    votes = torch.zeros(B, 2 * no + 1, H - 2, W - 2, dtype=dtype, device=device)
    votes = votes.scatter(1, torch.cat(bins, 1), torch.cat(values, 1))
    return votes[:, : 2 * no]


def hog(
    x: Tensor,
    *,
    cell_size: int = 8,
    num_orientations: int = 9,
    variant: str = "uoctti",
    bilinear_orientations: bool = False,
) -> Tensor:
    r"""HOG equal to VLFeat's vl_hog, as a small CNN in plain PyTorch autograd.

    Same signature, shapes, defaults and errors as :func:`pyinvert.hog`, which documents the
    parameters; this version is the test oracle and the benchmark baseline of the fused op.

    The layers: (1) derivative filters [-1, 0, 1] and their transpose at the interior pixels; (2) the channel of largest squared gradient; (3) projections on the
    ``num_orientations`` bin directions and a hard (or bilinear in angle: HOGb) assignment to
    ``2 * num_orientations`` directed bins; (4) triangular spatial pooling into cells (a
    separable linear map, i.e. a strided convolution with a bilinear kernel); (5) four 2x2
    block normalisations per cell (an average pooling of the squared cell norms), clamping at
    0.2 and the UoCTTI projection / texture features, or the Dalal-Triggs stacking.

    Float32 follows VLFeat's roundings where they matter (the square root is taken in double:
    torch's float32 ``sqrt`` on CPU is not always correctly rounded, and near a bin centre one
    ulp of |g| moves the HOGb weight ``acos(score / |g|)`` by ~1e-5). The bilinear weight's
    value is ``acos(...)`` as in VLFeat, its derivative that of the same angle written with
    ``atan2`` (finite on the bin centre).

    Args:
        x: images (B, C, H, W), float32 or float64.
        cell_size: cell side in pixels. Default: 8.
        num_orientations: number of undirected orientations. Default: 9.
        variant: "uoctti" or "dalaltriggs". Default: "uoctti".
        bilinear_orientations: bilinear orientation assignment (HOGb). Default: False.

    Returns:
        Tensor (B, D, Hc, Wc), as :func:`pyinvert.hog`.

    References:
        A. Mahendran and A. Vedaldi, "Understanding Deep Image Representations by Inverting
        Them", CVPR 2015 (HOG and HOGb as CNNs; the representation of eq. (1)).
    """
    code = check_hog_args("hog", x, cell_size, num_orientations, variant, bilinear_orientations)
    B, C, H, W = x.shape
    no = num_orientations
    dtype, device = x.dtype, x.device
    Hc, Wc = num_cells(H, cell_size), num_cells(W, cell_size)
    D = 3 * no + 4 if code == 0 else 4 * no
    if B == 0:
        return x.new_zeros(B, D, Hc, Wc) + 0 * x.sum()

    if H < 3 or W < 3:  # no interior pixel: every histogram is empty
        votes = x.new_zeros(B, 2 * no, max(H - 2, 0), max(W - 2, 0)) + 0 * x.sum()
    else:
        votes = _orientation_votes(x, no, bilinear_orientations)

    # 4. Triangular spatial pooling into cells: hist = Py @ votes @ Px^T.
    py = _cell_pooling_matrix(H, cell_size, dtype, device)
    px = _cell_pooling_matrix(W, cell_size, dtype, device)
    hist = py @ votes @ px.T  # [B, 2no, Hc, Wc]

    # 5. Block normalisation (VLFeat: cell norms in dtype, the rest in double).
    undirected = hist[:, :no] + hist[:, no:]
    norms = undirected.square().sum(1, keepdim=True).to(torch.float64)  # [B,1,Hc,Wc]
    padded = F.pad(norms, (1, 1, 1, 1), mode="replicate")
    block = F.avg_pool2d(padded, 2, stride=1) * 4  # [B,1,Hc+1,Wc+1], block (i,j) = cells i..i+1
    # Blocks around cell (y,x): upper-left, upper-right, lower-left, lower-right.
    factors = torch.stack(
        [block[:, 0, dy : dy + Hc, dx : dx + Wc] for dy in (0, 1) for dx in (0, 1)], 1
    )
    factors = 1 / torch.sqrt(factors + 1e-4)  # [B, 4, Hc, Wc]
    f = factors[:, :, None]  # [B, 4, 1, Hc, Wc]
    ha = f * hist[:, None, :no].to(torch.float64)
    hb = f * hist[:, None, no:].to(torch.float64)
    hc = torch.clamp(ha + hb, max=0.2)  # [B, 4, no, Hc, Wc]
    if code == 0:  # UoCTTI: average the 4 normalisations, plus 4 texture features
        parts = [
            0.5 * torch.clamp(ha, max=0.2).sum(1),
            0.5 * torch.clamp(hb, max=0.2).sum(1),
            0.5 * hc.sum(1),
        ]
        texture_scale = (
            float(torch.tensor(1.0, dtype=torch.float32) / math.sqrt(18.0))
            if dtype == torch.float32
            else 1 / math.sqrt(18.0)
        )
        parts.append(texture_scale * hc.sum(2))
        out = torch.cat(parts, 1)
    else:  # DalalTriggs: the 4 normalisations of the undirected histogram, block-major
        out = hc.reshape(B, 4 * no, Hc, Wc)
    return out.to(dtype)
