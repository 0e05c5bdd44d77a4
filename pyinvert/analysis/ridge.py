"""The channel map of M_g (or of a stitch E) and its ridge regression fit.

A :class:`ChannelMap` is a 1 x 1 or k x k convolution with a bias: each output cell is an
affine function of the k x k neighbourhood of input cells around it (Lenc & Vedaldi's
structured sparse maps; k = 1 is a per-cell channel map shared over positions). It is fitted
by ridge regression on the rows ``(unfold_k(X)[p], Y[p])`` of every valid cell p:

    W = argmin sum_p |W (x_p - mu_x) - (y_p - mu_y)|^2 + lam |W - P|^2,   b = mu_y - W mu_x,

with ``lam = ridge * trace(C_xx) / d`` (``ridge`` relative to the mean feature variance, so it
does not depend on the features' scale), the bias unregularized, and the prior P either 0 or
the identity (:func:`identity_prior`, where the shapes agree: a strong ridge then falls back on
the permutation / naive stitch, not on the mean).

Two solvers with different algorithms, which the tests check agree: :class:`RidgeAccumulator`
streams the sums ``sum x``, ``sum y``, ``sum x x^T``, ``sum x y^T`` (float64, shifted by the
first chunk's mean against cancellation) over chunks with memory O(d^2) whatever the number of
rows, then solves the normal equations (Cholesky); :func:`ridge_batch` takes all the rows at
once and solves the augmented least-squares problem ``[X; sqrt(lam) I] W = [Y; 0]`` with a QR
(``torch.linalg.lstsq``).

References:
    K. Lenc and A. Vedaldi, "Understanding image representations by measuring their
    equivariance and equivalence", CVPR 2015, Sec. 2.1 (regularized regression, structured
    sparsity), eq. (2).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The largest regression input (D k^2) solved: its d x d float64 normal matrix is 512 MiB.
MAX_INPUT_DIM = 8192


class ChannelMap(nn.Module):
    """``y = conv_k(x) + b``: a 1 x 1 (k = 1) or k x k (zero padding) channel map.

    Args:
        in_channels: D of the input grid.
        out_channels: D' of the output grid.
        kernel: k, odd. Default: 1.

    Shape:
        - x: (B, D, h, w); output (B, D', h, w).

    Example:
        >>> m = ChannelMap(4, 4)
        >>> x = torch.rand(2, 4, 3, 3)
        >>> torch.allclose(m(x), x)  # starts as the identity where the shapes agree
        True
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1):
        super().__init__()
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ChannelMap: expected an odd kernel >= 1, got {kernel!r}")
        self.kernel = kernel
        w = torch.zeros(out_channels, in_channels, kernel, kernel)
        if in_channels == out_channels:
            w[:, :, kernel // 2, kernel // 2] = torch.eye(in_channels)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=self.kernel // 2)

    def set_linear(self, W: Tensor, b: Tensor) -> "ChannelMap":
        """Set the weights from W [D', D k^2] (rows in unfold's (D, ki, kj) order) and b."""
        with torch.no_grad():
            self.weight.copy_(W.reshape(self.weight.shape).to(self.weight.dtype))
            self.bias.copy_(b.to(self.bias.dtype))
        return self

    def linear(self) -> Tuple[Tensor, Tensor]:
        """(W [D', D k^2], b [D'])."""
        return self.weight.detach().flatten(1), self.bias.detach()


def rows(x: Tensor, y: Tensor, valid: Tensor, kernel: int = 1) -> Tuple[Tensor, Tensor]:
    """Regression rows of the valid cells: (unfold_k(x) [N, D k^2], y [N, D']).

    Args:
        x: the (spatially transformed) input grid, [B, D, h, w].
        y: the target grid, [B, D', h, w].
        valid: [h, w] bool.
        kernel: k. Default: 1.
    """
    B, D, h, w = x.shape
    if kernel == 1:
        X = x.permute(0, 2, 3, 1)
    else:
        X = F.unfold(x, kernel, padding=kernel // 2).transpose(1, 2).reshape(B, h, w, -1)
    Y = y.permute(0, 2, 3, 1)
    m = valid.to(x.device)
    return X[:, m].reshape(-1, X.shape[-1]), Y[:, m].reshape(-1, Y.shape[-1])


def _check_dim(d, fn):
    if d > MAX_INPUT_DIM:
        raise ValueError(
            f"{fn}: the regression input has D k^2 = {d} dimensions, more than "
            f"{MAX_INPUT_DIM} (a {d}x{d} float64 system); use kernel=1"
        )


class RidgeAccumulator:
    """Streaming ridge regression: ``update(X, Y)`` per chunk, then ``solve(ridge)``.

    Args:
        in_dim: d (columns of X).
        out_dim: d' (columns of Y).

    Example:
        >>> acc = RidgeAccumulator(3, 2)
        >>> X = torch.randn(100, 3, dtype=torch.float64); Y = X[:, :2] * 2 + 1
        >>> acc.update(X[:50], Y[:50]); acc.update(X[50:], Y[50:])
        >>> W, b = acc.solve(1e-9)
        >>> torch.allclose(W, torch.tensor([[2., 0, 0], [0, 2., 0]], dtype=torch.float64),
        ...                atol=1e-6)
        True
    """

    def __init__(self, in_dim: int, out_dim: int, device=None):
        _check_dim(in_dim, "RidgeAccumulator")
        kw = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.shift_x: Optional[Tensor] = None
        self.shift_y: Optional[Tensor] = None
        self.sx = torch.zeros(in_dim, **kw)
        self.sy = torch.zeros(out_dim, **kw)
        self.sxx = torch.zeros(in_dim, in_dim, **kw)
        self.sxy = torch.zeros(in_dim, out_dim, **kw)
        self.syy = torch.zeros((), **kw)

    def update(self, X: Tensor, Y: Tensor) -> None:
        if (
            X.shape[0] != Y.shape[0]
            or X.shape[1] != self.sx.shape[0]
            or Y.shape[1] != self.sy.shape[0]
        ):
            raise ValueError(
                f"RidgeAccumulator.update: expected X [N, {self.sx.shape[0]}] and "
                f"Y [N, {self.sy.shape[0]}], got {list(X.shape)} and "
                f"{list(Y.shape)}"
            )
        if X.shape[0] == 0:
            return
        X = X.to(self.sx.device, torch.float64)
        Y = Y.to(self.sx.device, torch.float64)
        if self.shift_x is None:
            self.shift_x, self.shift_y = X.mean(0), Y.mean(0)
        X = X - self.shift_x
        Y = Y - self.shift_y
        self.n += X.shape[0]
        self.sx += X.sum(0)
        self.sy += Y.sum(0)
        self.sxx += X.T @ X
        self.sxy += X.T @ Y
        self.syy += (Y * Y).sum()

    @property
    def mean_y(self) -> Tensor:
        return self.sy / self.n + self.shift_y

    @property
    def mean_x(self) -> Tensor:
        return self.sx / self.n + self.shift_x

    def share_shift(self, other: "RidgeAccumulator") -> None:
        """Use ``other``'s shifts; before any update."""
        if self.n:
            raise ValueError("RidgeAccumulator.share_shift: expected an empty accumulator")
        self.shift_x, self.shift_y = other.shift_x, other.shift_y

    def rebased(self, shift_x: Tensor, shift_y: Tensor) -> "RidgeAccumulator":
        """The same rows, their sums taken about other shifts (exact algebra)."""
        out = RidgeAccumulator(self.sx.shape[0], self.sy.shape[0], device=self.sx.device)
        out.shift_x, out.shift_y, out.n = shift_x, shift_y, self.n
        if self.n == 0:
            return out
        dx, dy, n = self.shift_x - shift_x, self.shift_y - shift_y, self.n
        out.sx = self.sx + n * dx
        out.sy = self.sy + n * dy
        out.sxx = (
            self.sxx + torch.outer(dx, self.sx) + torch.outer(self.sx, dx) + n * torch.outer(dx, dx)
        )
        out.sxy = (
            self.sxy + torch.outer(dx, self.sy) + torch.outer(self.sx, dy) + n * torch.outer(dx, dy)
        )
        out.syy = self.syy + 2 * (dy @ self.sy) + n * (dy @ dy)
        return out

    def _aligned(self, other: "RidgeAccumulator") -> "RidgeAccumulator":
        if other.n == 0 or (
            torch.equal(self.shift_x, other.shift_x) and torch.equal(self.shift_y, other.shift_y)
        ):
            return other
        return other.rebased(self.shift_x, self.shift_y)

    def merge(self, other: "RidgeAccumulator") -> "RidgeAccumulator":
        """Add ``other``'s rows into this one; returns self."""
        if other.n == 0:
            return self
        if self.n == 0 and self.shift_x is None:
            self.shift_x, self.shift_y = other.shift_x, other.shift_y
        other = self._aligned(other)
        self.n += other.n
        for name in ("sx", "sy", "sxx", "sxy", "syy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def minus(self, other: "RidgeAccumulator") -> "RidgeAccumulator":
        """A new accumulator of this one's rows without ``other``'s (which must be among
        them)."""
        other = self._aligned(other)
        out = RidgeAccumulator(self.sx.shape[0], self.sy.shape[0], device=self.sx.device)
        out.shift_x, out.shift_y = self.shift_x, self.shift_y
        out.n = self.n - other.n
        for name in ("sx", "sy", "sxx", "sxy", "syy"):
            setattr(out, name, getattr(self, name) - getattr(other, name))
        return out

    def error(self, W: Tensor, b: Tensor) -> float:
        """``sum |W x + b - y|^2`` over the accumulated rows, from the sums alone."""
        if self.n == 0:
            return float("nan")
        c = W @ self.shift_x + b - self.shift_y
        e = (
            torch.sum((W.T @ W) * self.sxx)
            + 2 * c @ (W @ self.sx)
            - 2 * torch.sum(W.T * self.sxy)
            + self.n * c @ c
            - 2 * c @ self.sy
            + self.syy
        )
        return float(e)

    def solve(self, ridge: float = 1e-3, prior: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(W [d', d], b [d']) minimizing the ridge objective of the module docstring (with
        ``|W - prior|^2`` as the penalty when a prior [d', d] is given)."""
        if self.n == 0:
            raise ValueError("RidgeAccumulator.solve: no rows were accumulated (no valid cell?)")
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.sxx - self.n * torch.outer(mx, mx)
        cxy = self.sxy - self.n * torch.outer(mx, my)
        W = _solve_normal(cxx, cxy, ridge, prior)
        b = self.mean_y - W @ self.mean_x
        return W, b


#: The relative ridges ``ridge="auto"`` tries.
RIDGE_GRID = tuple(10.0**k for k in range(-6, 3))


def select_ridge(
    train: RidgeAccumulator, val: RidgeAccumulator, grid=RIDGE_GRID, prior: Optional[Tensor] = None
):
    """The relative ridge of ``grid`` whose fit on ``train`` has the smallest error on ``val``;
    returns (ridge, {ridge: validation error / sum |y - mean|^2})."""
    errs = {}
    for r in grid:
        W, b = train.solve(r, prior)
        errs[r] = val.error(W, b)
    den = val.error(torch.zeros_like(W), train.mean_y)
    best = min(errs, key=lambda r: errs[r])
    return best, {f"{r:g}": e / max(den, 1e-300) for r, e in errs.items()}


def _lam(cxx_trace: Tensor, d: int, ridge: float) -> float:
    if not ridge >= 0:
        raise ValueError(f"ridge: expected ridge >= 0, got {ridge}")
    return float(ridge * cxx_trace / d) if cxx_trace > 0 else float(ridge)


def identity_prior(
    in_channels: int, out_channels: int, kernel: int = 1, dtype=torch.float64, device=None
) -> Optional[Tensor]:
    """The identity map as a [D', D k^2] matrix (centre tap), or None when D != D'."""
    if in_channels != out_channels:
        return None
    P = torch.zeros(out_channels, in_channels, kernel * kernel, dtype=dtype, device=device)
    P[:, :, kernel * kernel // 2] = torch.eye(in_channels, dtype=dtype, device=device)
    return P.flatten(1)


def _solve_normal(cxx: Tensor, cxy: Tensor, ridge: float, prior: Optional[Tensor] = None) -> Tensor:
    d = cxx.shape[0]
    lam = _lam(torch.diagonal(cxx).sum(), d, ridge)
    A = cxx + lam * torch.eye(d, dtype=cxx.dtype, device=cxx.device)
    if prior is not None:
        cxy = cxy + lam * prior.T.to(cxy)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(cxy, L).T
    return torch.linalg.lstsq(A, cxy).solution.T  # singular (ridge = 0, rank-deficient)


def ridge_batch(
    X: Tensor, Y: Tensor, ridge: float = 1e-3, prior: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """In-memory ridge regression of Y [N, d'] on X [N, d] (the augmented least-squares
    problem, QR); the same (W, b) as :class:`RidgeAccumulator`."""
    _check_dim(X.shape[1], "ridge_batch")
    if X.shape[0] == 0:
        raise ValueError("ridge_batch: expected at least one row, got none")
    X = X.double()
    Y = Y.double()
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    d = X.shape[1]
    lam = _lam((Xc * Xc).sum(), d, ridge)
    Xa = torch.cat([Xc, (lam**0.5) * torch.eye(d, dtype=X.dtype, device=X.device)])
    Ya = torch.cat(
        [Yc, Yc.new_zeros(d, Y.shape[1]) if prior is None else (lam**0.5) * prior.T.to(Yc)]
    )
    W = torch.linalg.lstsq(Xa, Ya, driver="gelsd" if X.device.type == "cpu" else None).solution.T
    return W, my - W @ mx
