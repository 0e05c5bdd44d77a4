"""Per-row arithmetic whose rounding does not depend on the batch: a row of [B, D] gives the
same bits for B = 1 or B = 100, on any thread count (what :mod:`pyinvert.optim.lbfgs` needs to
make a row's result independent of its batch mates).

The per-row dot products are the compiled op ``torch.ops.pyinvert.rowwise_dot`` (CPU and CUDA;
csrc/common/rowwise_math.h): 256 partial sums over the row in a fixed order, combined by a
fixed pairwise tree, in double (a float32 product is exact). The order depends on D only; the
CUDA kernel uses the CPU's order (its bits are meant to equal the CPU's: it is built with
denormals kept; not yet checked on a GPU). Other devices use :func:`rowsum_tree` (a pairwise
tree of elementwise adds: batch-invariant too, but about 5 times slower on a CPU).
"""

import torch
from torch import Tensor

from pyinvert import _ext  # noqa: F401  (registers torch.ops.pyinvert)

_KERNEL_DEVICES = ("cpu", "cuda")


@torch.library.register_fake("pyinvert::rowwise_dot")
def _(a, b):
    return a.new_empty(a.shape[:1])


@torch.library.register_fake("pyinvert::rowwise_two_loop")
def _(g, S, Y, rho, h, slots):
    return torch.empty_like(g, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    return grad[:, None] * b, grad[:, None] * a


torch.library.register_autograd("pyinvert::rowwise_dot", _backward, setup_context=_setup_context)


def rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-row dot products ``sum_i a[r, i] b[r, i]``, batch-invariant (module docstring).

    Args:
        a, b: [B, D] floating-point tensors of one dtype and device.

    Returns:
        [B] in a's dtype: the sums in double, rounded once (float32), or float64.

    Raises:
        ValueError: a not 2-d, or b of another shape.
        TypeError: another dtype than float32/float64, or a and b of different dtypes.

    Shape:
        - a, b: :math:`(B, D)`; output: :math:`(B,)`.

    Example:
        >>> rowwise_dot(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.ones(2, 2))
        tensor([3., 7.])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(
            f"rowwise_dot: expected Tensors, got {type(a).__name__} and {type(b).__name__}"
        )
    if a.dim() != 2 or b.shape != a.shape:
        raise ValueError(
            f"rowwise_dot: expected a and b of one shape (B, D), got {list(a.shape)} and "
            f"{list(b.shape)}"
        )
    if a.dtype not in (torch.float32, torch.float64) or b.dtype != a.dtype:
        raise TypeError(
            f"rowwise_dot: expected a and b both float32 or both float64, got {a.dtype} and "
            f"{b.dtype}"
        )
    if a.device.type in _KERNEL_DEVICES and b.device == a.device:
        return torch.ops.pyinvert.rowwise_dot(a, b)
    return rowsum_tree(a * b)


def rowsum_tree(v: Tensor) -> Tensor:
    """Sum over dim 1 of [B, D] as a pairwise tree of elementwise adds, whose shape depends on
    D only: the same rounding for every row whatever B, the thread count or the device. (An
    odd level folds its last column into the one before.) The fallback of :func:`rowwise_dot`
    on devices without the compiled op."""
    n = v.shape[1]
    if n == 0:
        return v.new_zeros(v.shape[0])
    while n > 1:
        h = n // 2
        w = v[:, :h] + v[:, h : 2 * h]
        if n % 2:
            w[:, h - 1] = w[:, h - 1] + v[:, 2 * h]
        v, n = w, h
    return v[:, 0]


def rowsum(v: Tensor) -> Tensor:
    """Per-row sums of [B, D], batch-invariant (:func:`rowwise_dot` with ones)."""
    return rowwise_dot(v, v.new_ones(1, v.shape[1]).expand(v.shape))


_BELOW_AUTOGRAD = {
    "cpu": torch._C.DispatchKeySet(torch._C.DispatchKey.CPU),
    "cuda": torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA),
}


def dot(a: Tensor, b: Tensor) -> Tensor:
    """:func:`rowwise_dot` without the argument checks, for tensors that need no gradient
    (the L-BFGS's own calls): the kernel is called below the autograd key, without the
    Python autograd wrapper of ``register_autograd`` (a few microseconds a call)."""
    keys = _BELOW_AUTOGRAD.get(a.device.type)
    if keys is not None:
        return torch.ops.pyinvert.rowwise_dot.default.redispatch(keys, a, b)
    return rowsum_tree(a * b)


def amax(v: Tensor) -> Tensor:
    """max |v| per row of [B, D] (exact; NaN propagates), 0 for D = 0."""
    if not v.shape[1]:
        return v.new_zeros(v.shape[0])
    # two vectorized reductions without a temporary (abs().amax and the inf-norm are slower)
    return torch.maximum(v.amax(1), v.amin(1).neg())


def where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """torch.where with a per-row mask [B] against [B] or [B, D] values. For [B, D] values a
    mask that is all True (or all False) returns a (or b) itself, not a copy: the callers
    never modify these tensors in place."""
    if a.dim() == 2 or (isinstance(b, Tensor) and b.dim() == 2):
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape:
            if bool(mask.all()):
                return a
            if not bool(mask.any()):
                return b
        mask = mask[:, None]
    return torch.where(mask, a, b)


def cubic_minimizer(x1, f1, g1, x2, f2, g2, lo, hi):
    """Minimizer of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to [lo, hi]; the
    midpoint of [lo, hi] where it has none (N&W eq. 3.59)."""
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2sq = d1 * d1 - g1 * g2
    d2 = torch.sqrt(torch.clamp(d2sq, min=0))
    up = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    down = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    pos = torch.where(x1 <= x2, up, down)
    ok = (d2sq >= 0) & torch.isfinite(pos)
    return torch.where(ok, torch.minimum(torch.maximum(pos, lo), hi), (lo + hi) / 2)


def two_loop_reference(g, S, Y, rho, h, count, updates, m, rows):
    """The L-BFGS two-loop recursion -H g (N&W Alg. 7.4) of every row of ``rows`` with its own
    history, as tensor operations (rowwise dot products, elementwise updates): the fallback of
    :class:`pyinvert.optim.lbfgs.LBFGS` on other devices than the CPU and CUDA and the fused
    op ``rowwise_two_loop``'s test oracle (the other rows' values are discarded).

    Args:
        g: [B, D] gradients; S, Y: [m', B, D] the pairs (row b's newest in slot
            (updates[b] - 1) % m); rho: [m', B] their 1 / y.s; h: [B] the initial Hessian
            scales; count, updates: [B] pairs held and pairs ever kept; m: the history size;
            rows: [B] bool.
    """
    B, D = g.shape
    ar = torch.arange(B, device=g.device)
    q = -g
    kmax = int(count[rows].max()) if bool(rows.any()) else 0
    # Entries every row of `rows` has need no mask: the other rows' values are discarded.
    kmin = int(count[rows].min()) if kmax else 0
    # When the rows' histories are in step (one row; or rows updated together) slot j is the
    # same for every row: the pairs are read in place (views of S and Y), not gathered.
    u = updates[rows]
    newest = int(u.max()) if kmax else 0
    in_step = kmax > 0 and kmax == kmin and newest == int(u.min())
    saved = []
    for j in range(kmax):
        valid = rows & (count > j)
        if in_step:
            slot = (newest - 1 - j) % m
            s, y, r_j = S[slot], Y[slot], rho[slot]
        else:
            slot = torch.where(valid, (updates - 1 - j) % m, 0)
            flat = slot * B + ar  # rows of the [slots * B, D] views: one memcpy per row
            s = S.view(-1, D).index_select(0, flat)
            y = Y.view(-1, D).index_select(0, flat)
            r_j = rho.view(-1).index_select(0, flat)
        a = dot(s, q) * r_j
        # q is ours (a new tensor): updated in place, with the same roundings
        if j < kmin:
            q.sub_(a[:, None] * y)
        else:
            q = where_rows(valid, q - a[:, None] * y, q)
        saved.append((j, valid, s, y, r_j, a))
    r = q.mul_(h[:, None])
    for j, valid, s, y, r_j, a in reversed(saved):
        b = dot(y, r) * r_j
        if j < kmin:
            r.add_((a - b)[:, None] * s)
        else:
            r = where_rows(valid, r + (a - b)[:, None] * s, r)
    return r
