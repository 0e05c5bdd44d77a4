"""Property-based tests (hypothesis) of the public ops and of the private torch.ops.pyinvert.* ops.

Public ops (hog, dsift, image_prior), in this process: over dtypes, shapes (empty batches,
1-pixel and odd sizes) and strides (non-contiguous, expanded, channels_last), with finite
pixels in [-10, 10] on a 1/64 grid, every call either refuses its arguments with a ValueError
naming the op or returns finite values (and finite gradients) that do not depend on the strides.

Private ops, in a subprocess (a crash must fail one test, not kill the run): arbitrary
arguments (negative, huge, NaN and infinite numbers; wrong dtypes and shapes; saved tensors
that the forward did not make, with arbitrary indices) either raise an ordinary Python
exception or return. The subprocess prints each example before running it, so a crash names
the example that caused it.

Example counts are bounded (derandomized, no deadline) so the file runs in well under a minute
on a 2-core machine.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyinvert  # noqa: E402
from pyinvert.features.hog import num_cells  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LAYOUTS = ("contiguous", "channels_last", "transposed", "sliced", "expanded")


def with_layout(x, layout):
    """x's values with other strides: channels_last, a transposed copy, a strided slice of a
    larger buffer, or (for the batch) an expanded image."""
    if layout == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if layout == "transposed":
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced":
        B, C, H, W = x.shape
        buffer = torch.full((B, C, 2 * H, W + 3), float("nan"), dtype=x.dtype)
        view = buffer[:, :, ::2, 1 : W + 1]
        view.copy_(x)
        return view
    if layout == "expanded" and x.shape[0] > 0:
        return x[:1].expand(x.shape)
    return x


@st.composite
def images(draw, channels=st.integers(1, 4), sides=st.integers(1, 36)):
    """[B, C, H, W] finite images in [-10, 10] (multiples of 1/64, so that nonzero differences
    are not subnormal), float32 or float64, in one of LAYOUTS."""
    B, C = draw(st.integers(0, 3)), draw(channels)
    H, W = draw(sides), draw(sides)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["random", "constant", "sparse"]))
    if kind == "random":
        x = torch.randint(-640, 641, (B, C, H, W), generator=gen) / 64
    elif kind == "constant":
        x = torch.full((B, C, H, W), draw(st.integers(-640, 640)) / 64)
    else:
        x = (torch.randint(-640, 641, (B, C, H, W), generator=gen) / 64) * (
            torch.rand((B, C, H, W), generator=gen) < 0.1
        )
    return with_layout(x.to(dtype), draw(st.sampled_from(LAYOUTS)))


def finite_gradient(fn, x, pick=lambda out: out):
    xg = x.detach().clone().requires_grad_()
    out = pick(fn(xg))
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (grad,) = torch.autograd.grad((out * weights).sum(), xg, allow_unused=True)
    return grad if grad is not None else torch.zeros_like(xg)


@FUZZ
@given(
    x=images(),
    cell_size=st.integers(1, 12),
    num_orientations=st.integers(1, 12),
    variant=st.sampled_from(["uoctti", "dalaltriggs"]),
    bilinear=st.booleans(),
)
def test_hog(x, cell_size, num_orientations, variant, bilinear):
    kwargs = dict(
        cell_size=cell_size,
        num_orientations=num_orientations,
        variant=variant,
        bilinear_orientations=bilinear,
    )
    B, C, H, W = x.shape
    if num_cells(H, cell_size) < 1 or num_cells(W, cell_size) < 1:
        with pytest.raises(ValueError, match=r"^hog: expected H and W >= "):
            pyinvert.hog(x, **kwargs)
        return
    out = pyinvert.hog(x, **kwargs)
    D = 3 * num_orientations + 4 if variant == "uoctti" else 4 * num_orientations
    assert out.shape == (B, D, num_cells(H, cell_size), num_cells(W, cell_size))
    assert out.dtype == x.dtype and torch.isfinite(out).all()
    assert torch.equal(out, pyinvert.hog(x.contiguous(), **kwargs))
    grad = finite_gradient(lambda v: pyinvert.hog(v, **kwargs), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert torch.equal(grad, finite_gradient(lambda v: pyinvert.hog(v, **kwargs), x.contiguous()))


@FUZZ
@given(
    x=images(channels=st.just(1), sides=st.integers(1, 40)),
    step=st.integers(1, 9),
    bin_size=st.integers(1, 9),
    flat_window=st.booleans(),
)
def test_dsift(x, step, bin_size, flat_window):
    kwargs = dict(step=step, bin_size=bin_size, flat_window=flat_window)
    B, _, H, W = x.shape
    frame = 3 * bin_size + 1
    if H < frame or W < frame:
        with pytest.raises(ValueError, match=rf"^dsift: expected x of at least {frame}x{frame}"):
            pyinvert.dsift(x, **kwargs)
        return
    descriptors, centres = pyinvert.dsift(x, **kwargs)
    N = ((H - frame) // step + 1) * ((W - frame) // step + 1)
    assert descriptors.shape == (B, N, 128) and centres.shape == (N, 2)
    assert torch.isfinite(descriptors).all()
    assert torch.equal(descriptors, pyinvert.dsift(x.contiguous(), **kwargs)[0])
    grad = finite_gradient(lambda v: pyinvert.dsift(v, **kwargs), x, lambda out: out[0])
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert torch.equal(
        grad,
        finite_gradient(lambda v: pyinvert.dsift(v, **kwargs), x.contiguous(), lambda out: out[0]),
    )


exponents = st.one_of(
    st.sampled_from([1.0, 2.0, 3.0, 4.0, 6.0]),
    st.floats(0.25, 8.0, allow_nan=False, allow_infinity=False),
)


@FUZZ
@given(
    x=images(sides=st.integers(1, 20)),
    tv=st.floats(0, 10),
    norm=st.floats(0, 10),
    per_image=st.booleans(),
    beta=exponents,
    alpha=exponents,
    isotropic=st.booleans(),
    eps=st.one_of(st.just(0.0), st.floats(0, 1)),
)
def test_image_prior(x, tv, norm, per_image, beta, alpha, isotropic, eps):
    B = x.shape[0]
    tv_weight = torch.linspace(0, tv, B) if per_image else tv
    kwargs = dict(
        tv_weight=tv_weight, norm_weight=norm, beta=beta, alpha=alpha, isotropic=isotropic, eps=eps
    )
    value = pyinvert.image_prior(x, **kwargs)
    assert value.shape == (B,) and value.dtype == x.dtype and torch.isfinite(value).all()
    torch.testing.assert_close(
        value, pyinvert.image_prior(x.contiguous(), **kwargs), rtol=1e-5, atol=1e-6
    )
    grad = finite_gradient(lambda v: pyinvert.image_prior(v, **kwargs), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()


# ---- the private ops, in a subprocess ---------------------------------------------------------

PRIVATE_OPS_SCRIPT = r'''
import sys
import torch
import pyinvert  # noqa: F401 (registers torch.ops.pyinvert)
from hypothesis import HealthCheck, given, settings, strategies as st

ops = torch.ops.pyinvert
ALLOWED = (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError, OverflowError)


def mostly(usual, other):
    """`usual` 3 times in 4, else `other`: the kernels run, and the checks are reached too."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda u: usual if u else other)


numbers = mostly(st.floats(0.25, 8.0), st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                                  st.integers(-3, 3)))
ints = mostly(st.integers(1, 10), st.one_of(st.integers(-3, 40), st.sampled_from(
    [0, -1, 2 ** 24, 2 ** 24 + 1, 2 ** 31, 2 ** 40, -2 ** 62, 2 ** 63 - 1])))
dtypes = mostly(st.sampled_from([torch.float32, torch.float64]),
                st.sampled_from([torch.float16, torch.int32, torch.bool]))
calls = {"ok": 0, "refused": 0}


@st.composite
def tensors(draw, dims=None):
    dims = draw(st.integers(0, 5)) if dims is None else dims
    shape = [draw(st.integers(0, 3 if i == 0 and dims == 4 else 30)) for i in range(dims)]
    if dims == 4:
        shape[1] = draw(mostly(st.integers(1, 3), st.just(0)))
    dtype = draw(dtypes)
    kind = draw(mostly(st.sampled_from(["rand", "expanded"]),
                       st.sampled_from(["nan", "inf", "big"])))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 999))))
    if kind == "nan" and x.numel():
        x.view(-1)[0] = float("nan")
    elif kind == "inf" and x.numel():
        x.view(-1)[-1] = float("inf")
    elif kind == "big":
        x = x * 1e30
    x = x.to(dtype)
    if kind == "expanded" and dims >= 1 and shape[0] > 0:
        x = x[:1].expand(shape)
    return x


def images(draw):
    return draw(tensors(dims=draw(mostly(st.just(4), st.sampled_from([0, 1, 3, 5])))))


def run(name, fn):
    print(name, flush=True)
    try:
        fn()
        calls["ok"] += 1
    except ALLOWED:
        calls["refused"] += 1


def corrupt(draw, t):
    """t, or a tensor like it with other shape, dtype or (for int32) arbitrary values."""
    how = draw(mostly(st.sampled_from(["same", "values"]),
                      st.sampled_from(["shape", "dtype", "empty"])))
    if how == "values":
        if t.dtype == torch.int32:
            return torch.randint(-2 ** 31, 2 ** 31 - 1, t.shape, dtype=torch.int64,
                                 generator=torch.Generator().manual_seed(draw(
                                     st.integers(0, 999)))).to(torch.int32)
        return torch.full_like(t, draw(numbers))
    if how == "shape":
        return t.reshape(-1)[: max(t.numel() - 1, 0)] if t.numel() else t.new_zeros(3)
    if how == "dtype":
        return t.to(torch.float64 if t.dtype != torch.float64 else torch.float32)
    if how == "empty":
        return t.new_zeros(0)
    return t


@settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def fuzz(data):
    draw = data.draw
    op = draw(st.sampled_from(["hog", "_hog_backward", "dsift", "_dsift_backward",
                               "image_prior"]))
    if op == "hog":
        x = images(draw)
        args = (draw(ints), draw(ints), draw(mostly(st.integers(0, 1), st.integers(-2, 3))),
                draw(st.booleans()), draw(st.booleans()))
        run(f"hog {x.dtype} {list(x.shape)} {x.stride()} {args}", lambda: ops.hog(x, *args))
    elif op == "_hog_backward":
        shape = (draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 30)),
                 draw(st.integers(1, 30)))
        x = torch.rand(shape, dtype=draw(st.sampled_from([torch.float32, torch.float64])))
        params = (draw(st.integers(1, 9)), draw(st.integers(1, 12)), draw(st.integers(0, 1)),
                  draw(st.booleans()))
        try:
            out, hist, pixels, jac = ops.hog(x, *params, True)
        except ALLOWED:
            return
        saved = [corrupt(draw, t) for t in (torch.ones_like(out), hist, pixels, jac)]
        backward_params = params if draw(mostly(st.just(True), st.just(False))) else (
            draw(ints), draw(ints), draw(st.integers(-1, 2)), draw(st.booleans()))
        run(f"_hog_backward {list(x.shape)} {params} {backward_params} "
            f"{[(list(t.shape), t.dtype) for t in saved]}",
            lambda: ops._hog_backward(saved[0], x, saved[1], saved[2], saved[3],
                                      *backward_params))
    elif op == "dsift":
        x = images(draw)
        args = (draw(ints), draw(ints), draw(st.booleans()), draw(st.booleans()))
        run(f"dsift {x.dtype} {list(x.shape)} {x.stride()} {args}", lambda: ops.dsift(x, *args))
    elif op == "_dsift_backward":
        shape = (draw(st.integers(0, 2)), 1, draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        x = torch.rand(shape, dtype=draw(st.sampled_from([torch.float32, torch.float64])))
        params = (draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.booleans()))
        try:
            descriptors, histograms = ops.dsift(x, *params, True)
        except ALLOWED:
            return
        grad = corrupt(draw, torch.ones_like(descriptors))
        histograms = corrupt(draw, histograms)
        backward_params = params if draw(mostly(st.just(True), st.just(False))) else (
            draw(ints), draw(ints), draw(st.booleans()))
        run(f"_dsift_backward {list(x.shape)} {params} {backward_params} "
            f"{list(grad.shape)} {list(histograms.shape)}",
            lambda: ops._dsift_backward(grad, x, histograms, *backward_params))
    else:
        x = images(draw)
        B = x.shape[0] if x.dim() else 0
        tv, norm = (draw(mostly(st.just(None), tensors(dims=1))) for _ in range(2))
        tv, norm = (torch.rand(B).to(x.dtype if x.is_floating_point() else torch.float32)
                    if w is None else w for w in (tv, norm))
        args = (draw(numbers), draw(numbers), draw(st.booleans()), draw(numbers),
                draw(st.booleans()))
        run(f"image_prior {x.dtype} {list(x.shape)} {list(tv.shape)} {tv.dtype} "
            f"{list(norm.shape)} {args}",
            lambda: ops.image_prior(x, tv, norm, args[0], args[1], args[2], args[3], args[4]))


fuzz()
print("calls", calls, flush=True)
'''


def test_private_ops_never_crash():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRIVATE_OPS_SCRIPT), "250"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=ROOT,
    )
    last = result.stdout.strip().splitlines()[-3:] or ["(no output)"]
    assert result.returncode == 0, (
        f"exit code {result.returncode}; last examples: {last}\n{result.stderr[-3000:]}"
    )
    summary = last[-1]
    assert summary.startswith("calls"), last
    # Both outcomes occur: the strategies reach the kernels, not only the checks.
    calls = eval(summary[len("calls ") :])  # noqa: S307 (our own dict literal)
    assert calls["ok"] >= 20 and calls["refused"] >= 20, calls
