"""Issue 11, items 1-4: every failure reproduced and refused with a clear error.

1. the private ops reachable through torch.ops.pyinvert check the indices they are given
   (``_hog_backward``'s ``pixels``) and never crash;
2. image_prior refuses non-finite or out-of-range numeric arguments (weights, beta, alpha, eps),
   through its wrapper, its module, the op itself and invert's per-image overrides;
3. non-finite pixels are one clear error for HOG, HOGb and DSIFT: the ops, their backward where
   it reads pixels, invert and the CLI;
4. a malformed PYINVERT_OUTPUT_CACHE_MB is a clear error (at import, and in the kernels when
   it is set after import).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pyinvert
from tests.conftest import DEVICES, DTYPES

ROOT = Path(__file__).resolve().parent.parent
NONFINITE = [float("nan"), float("inf"), float("-inf")]


def run_python(code, **env):
    """Run `code` in a fresh interpreter with this checkout first on the path."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        cwd=ROOT,
    )


# ---- 1. indices given to the private ops -----------------------------------------------------


def _hog_saved(dtype=torch.float32, device="cpu", bilinear=True, shape=(2, 3, 20, 18)):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    out, hist, pixels, jac = torch.ops.pyinvert.hog(x, 4, 9, 0, bilinear, True)
    return x, out, hist, pixels, jac


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "row, value",
    [
        (0, 3),
        (0, 99),
        (0, -2),
        (0, 2**31 - 1),
        (0, -(2**31)),  # channel (C = 3)
        (1, 18),
        (1, -1),
        (1, 2**31 - 1),
        (1, -(2**31)),  # bin 0 (2 * no = 18)
        (2, 18),
        (2, -2),
        (2, 2**31 - 1),
        (2, -(2**31)),  # bin 1
    ],
)
def test_hog_backward_refuses_out_of_range_pixels(device, row, value):
    x, out, hist, pixels, jac = _hog_saved(device=device)
    bad = pixels.clone()
    bad[1, row, 5, 7] = value
    if row > 0:
        bad[1, 0, 5, 7] = 0  # a pixel with a gradient: its bins are read
    grad = torch.ones_like(out)
    with pytest.raises(
        ValueError,
        match=r"_hog_backward: expected pixels as hog saves them "
        r"\(channel -1 or in \[0, 3\) with bins in \[0, 18\) and \[-1, 18\)\), "
        r"got an out-of-range entry in image 1",
    ):
        torch.ops.pyinvert._hog_backward(grad, x, hist, bad, jac, 4, 9, 0, True)
    # What the forward saved is accepted, and so are the bins of a pixel without gradient.
    ok = pixels.clone()
    ok[0, 0, 2, 2] = -1
    ok[0, 1, 2, 2] = 2**31 - 1
    torch.ops.pyinvert._hog_backward(grad, x, hist, ok, jac, 4, 9, 0, True)


def test_hog_backward_with_arbitrary_pixels_does_not_crash():
    # Before the fix this process died (SIGSEGV) on out-of-range bins: run it apart.
    result = run_python("""
        import torch, pyinvert
        g = torch.Generator().manual_seed(1)
        x = torch.rand(2, 3, 33, 31, generator=g)
        out, hist, pixels, jac = torch.ops.pyinvert.hog(x, 8, 9, 0, True, True)
        refused = 0
        for trial in range(50):
            bad = torch.randint(-2 ** 31, 2 ** 31 - 1, pixels.shape, generator=g,
                                dtype=torch.int64).to(torch.int32)
            try:
                torch.ops.pyinvert._hog_backward(torch.ones_like(out), x, hist, bad, jac, 8, 9,
                                                 0, True)
            except ValueError as error:
                assert "out-of-range entry" in str(error), error
                refused += 1
        print("refused", refused)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused 50" in result.stdout


@pytest.mark.parametrize("device", DEVICES)
def test_dsift_backward_checks_what_it_is_given(device):
    x = torch.rand(2, 1, 30, 30, device=device)
    desc, hist = torch.ops.pyinvert.dsift(x, 4, 8, False, True)
    with pytest.raises(RuntimeError, match=r"_dsift_backward: expected histograms of shape "):
        torch.ops.pyinvert._dsift_backward(desc, x, hist[:, :1], 4, 8, False)
    with pytest.raises(
        RuntimeError, match=r"_dsift_backward: expected grad of shape \(2, 4, 128\)"
    ):
        torch.ops.pyinvert._dsift_backward(desc[:1], x, hist, 4, 8, False)
    # Histograms it did not make (even non-finite) are data, not indices: no crash.
    torch.ops.pyinvert._dsift_backward(desc, x, torch.full_like(hist, float("nan")), 4, 8, False)


# ---- 2. image_prior's numeric arguments ------------------------------------------------------


@pytest.mark.parametrize("name", ["tv_weight", "norm_weight"])
@pytest.mark.parametrize("value", NONFINITE)
def test_image_prior_refuses_nonfinite_float_weights(name, value):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(
        ValueError,
        match=rf"image_prior: expected {name} to be finite, got "
        rf"{value}",
    ):
        pyinvert.image_prior(x, **{name: value})
    with pytest.raises(ValueError, match=rf"ImagePrior: expected {name} to be finite"):
        pyinvert.ImagePrior(**{name: value})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tv_weight", "norm_weight"])
def test_image_prior_refuses_bad_tensor_weights(device, name):
    x = torch.rand(3, 2, 8, 8, device=device, requires_grad=True)
    for value, words in [
        (float("nan"), "to be finite, got nan"),
        (float("inf"), "to be finite, got inf"),
        (-0.5, ">= 0, got -0.5"),
    ]:
        weight = torch.tensor([1.0, 1.0, value], device=device)
        with pytest.raises(ValueError, match=rf"image_prior: expected {name} {words} for image 2"):
            pyinvert.image_prior(x, **{name: weight})
        other = "norm_weight" if name == "tv_weight" else "tv_weight"
        args = {name: weight, other: torch.ones(3, device=device)}
        with pytest.raises(ValueError, match=rf"image_prior: expected {name} {words} for image 2"):
            torch.ops.pyinvert.image_prior(
                x, args["tv_weight"], args["norm_weight"], 2.0, 6.0, False, 0.0, True
            )
    # A float64 weight that overflows float32 is refused too (the op sees x's dtype).
    with pytest.raises(ValueError, match=rf"image_prior: expected {name} to be finite, got inf"):
        pyinvert.image_prior(x, **{name: torch.full((3,), 1e300, dtype=torch.float64)})


@pytest.mark.parametrize("name, minimum", [("tv_weight", "0"), ("norm_weight", "0")])
def test_image_prior_refuses_negative_float_weights(name, minimum):
    with pytest.raises(ValueError, match=rf"image_prior: expected {name} >= {minimum}, got -1"):
        pyinvert.image_prior(torch.rand(1, 1, 4, 4), **{name: -1.0})
    with pytest.raises(ValueError, match=rf"ImagePrior: expected {name} >= 0, got -2"):
        pyinvert.ImagePrior(**{name: -2})


@pytest.mark.parametrize("name", ["beta", "alpha", "eps"])
@pytest.mark.parametrize("value", NONFINITE)
def test_image_prior_refuses_nonfinite_exponents(name, value):
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(
        ValueError,
        match=rf"image_prior: expected {name} to be finite, got "
        rf"{value}",
    ):
        pyinvert.image_prior(x, **{name: value})
    with pytest.raises(ValueError, match=rf"ImagePrior: expected {name} to be finite"):
        pyinvert.ImagePrior(**{name: value})
    args = {"beta": 2.0, "alpha": 6.0, "eps": 0.0, name: value}
    with pytest.raises(
        ValueError,
        match=rf"image_prior: expected {name} to be finite, got "
        rf"{value}",
    ):
        torch.ops.pyinvert.image_prior(
            x, torch.ones(2), torch.ones(2), args["beta"], args["alpha"], False, args["eps"], True
        )


def test_image_prior_op_refuses_out_of_range_exponents():
    x = torch.rand(2, 1, 4, 4)
    w = torch.ones(2)
    with pytest.raises(ValueError, match=r"image_prior: expected alpha > 0, got 0"):
        torch.ops.pyinvert.image_prior(x, w, w, 2.0, 0.0, False, 0.0, True)
    with pytest.raises(ValueError, match=r"image_prior: expected eps >= 0, got -1"):
        torch.ops.pyinvert.image_prior(x, w, w, 2.0, 6.0, False, -1.0, True)


def test_invert_refuses_a_negative_per_image_tv_weight():
    # The per-image override path of invert (and of the batch jobs built on it): it used to run,
    # and the item was reported "ok".
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    # (invert scales the weight by its recipe's prior normalization: the value shown is scaled)
    with pytest.raises(
        ValueError,
        match=r"image_prior: expected tv_weight >= 0, got -\S+ for "
        r"image 1",
    ):
        pyinvert.invert(
            x,
            steps=2,
            progress=False,
            tv_weight=torch.tensor([1.0, -1.0]),
            generator=torch.Generator().manual_seed(0),
        )


# ---- 3. non-finite pixels -------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("where", [(2, 1, 5, 6), (2, 0, 0, 0), (2, 2, 15, 16)])  # corners too
def test_hog_refuses_nonfinite_pixels(device, dtype, value, where):
    x = torch.rand(3, 3, 16, 17, dtype=dtype, device=device)
    x[where] = value
    for bilinear in (False, True):
        with pytest.raises(
            ValueError,
            match=r"^hog: expected finite pixel values, got NaN/Inf "
            r"in image 2$",
        ):
            pyinvert.hog(x, cell_size=4, bilinear_orientations=bilinear)
        with pytest.raises(
            ValueError,
            match=r"hog: expected finite pixel values, got NaN/Inf "
            r"in image 2",
        ):
            torch.ops.pyinvert.hog(x, 4, 9, 0, bilinear, True)
    # Also where HOG reads no pixel at all (below 3 x 3), and with a channels_last layout.
    tiny = torch.zeros(1, 1, 2, 2, dtype=dtype, device=device)
    tiny[0, 0, 1, 1] = value
    with pytest.raises(ValueError, match=r"in image 0"):
        pyinvert.hog(tiny, cell_size=2)
    with pytest.raises(ValueError, match=r"in image 2"):
        pyinvert.hog(x.to(memory_format=torch.channels_last), cell_size=4)


def test_all_nan_image_was_all_zero_hog():
    # The reported symptom: an all-NaN image gave an all-zero HOG.
    with pytest.raises(
        ValueError,
        match=r"hog: expected finite pixel values, got NaN/Inf in "
        r"image 0",
    ):
        pyinvert.hog(torch.full((1, 3, 32, 32), float("nan")))


def test_hog_reports_the_first_bad_image_whatever_the_threads():
    x = torch.rand(16, 3, 40, 40)
    x[[5, 9, 13], 0, 20, 20] = float("nan")
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with pytest.raises(ValueError, match=r"in image 5$"):
                pyinvert.hog(x)
            with pytest.raises(ValueError, match=r"in image 5$"):
                pyinvert.dsift(x[:, :1].contiguous())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("flat_window", [False, True])
def test_dsift_refuses_nonfinite_pixels(device, dtype, value, flat_window):
    x = torch.rand(3, 1, 30, 31, dtype=dtype, device=device)
    for where in [(1, 0, 0, 0), (1, 0, 29, 30), (1, 0, 11, 13)]:
        bad = x.clone()
        bad[where] = value
        with pytest.raises(
            ValueError,
            match=r"^dsift: expected finite pixel values, got NaN/Inf "
            r"in image 1$",
        ):
            pyinvert.dsift(bad, step=4, bin_size=4, flat_window=flat_window)
    # The backward reads the pixels again (it recomputes the orientations).
    desc, hist = torch.ops.pyinvert.dsift(x, 4, 4, flat_window, True)
    bad = x.clone()
    bad[2, 0, 3, 3] = value
    with pytest.raises(
        ValueError,
        match=r"_dsift_backward: expected finite pixel values, got "
        r"NaN/Inf in image 2",
    ):
        torch.ops.pyinvert._dsift_backward(torch.ones_like(desc), bad, hist, 4, 4, flat_window)


@pytest.mark.parametrize("representation", ["hog", "hogb", "dsift"])
def test_invert_refuses_nonfinite_images(representation):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[1, 0, 7, 9] = float("nan")
    # The task's input preparation refuses them first, in the name of the function called.
    with pytest.raises(
        ValueError,
        match=r"^invert: expected finite pixel values, got NaN/Inf in "
        r"image 1$",
    ):
        pyinvert.invert(
            x,
            representation=representation,
            steps=2,
            progress=False,
            generator=torch.Generator().manual_seed(0),
        )


def test_cli_refuses_a_nonfinite_image(tmp_path):
    import cv2

    image = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    image[4, 5, 1] = np.nan
    path = tmp_path / "nan.tiff"
    assert cv2.imwrite(str(path), image)
    for rep in ("hog", "dsift"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinvert",
                "invert",
                str(path),
                "--rep",
                rep,
                "--steps",
                "2",
                "--no-progress",
                "--out",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )
        # The CLI's loader refuses the image before the op sees it: one line, no traceback.
        assert result.returncode != 0, (result.stdout, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "nan.tiff has 1 non-finite pixel value(s)" in result.stderr, result.stderr[-2000:]
        assert "ok" not in result.stdout.split()


# ---- 4. environment settings ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", " ", "12MB", "1e3", "99999999999999"])
def test_bad_output_cache_setting_is_a_clear_error_at_import(value):
    result = run_python("import pyinvert", PYINVERT_OUTPUT_CACHE_MB=value)
    assert result.returncode != 0
    assert "stoull" not in result.stderr
    assert (
        f"ValueError: pyinvert: expected PYINVERT_OUTPUT_CACHE_MB to be a whole number of "
        f"megabytes (0 disables the output cache, at most 1099511627776), got {value!r}"
        in result.stderr
    ), result.stderr[-2000:]


def test_bad_output_cache_setting_is_a_clear_error_in_the_kernels():
    # Set after import, before the kernels first read it: the C++ check, same words.
    result = run_python("""
        import os, torch, pyinvert
        os.environ["PYINVERT_OUTPUT_CACHE_MB"] = "abc"
        for attempt in range(2):  # the same error each time, not a half-made cache
            try:
                pyinvert.hog(torch.rand(8, 3, 128, 128))
            except ValueError as error:
                print(error)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    assert lines[0].startswith(
        "pyinvert: expected PYINVERT_OUTPUT_CACHE_MB to be a whole number "
        "of megabytes (0 disables the output cache, at most "
        "1099511627776), got 'abc'"
    )


@pytest.mark.parametrize("value", ["0", "16", " 2048 "])
def test_good_output_cache_settings_work(value):
    result = run_python(
        """
        import torch, pyinvert
        x = torch.rand(4, 3, 128, 128)
        assert torch.equal(pyinvert.hog(x), pyinvert.hog(x.clone()))
        print("ok")
    """,
        PYINVERT_OUTPUT_CACHE_MB=value,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize(
    "rep,backend",
    [
        ("hog", "reference"),
        ("dsift", "reference"),
        ("cnn:mobilenet_v2:features.3", "fused"),
        (lambda im: im.mean((2, 3)), "fused"),
    ],
)
def test_every_representation_refuses_nonfinite_images_at_the_entry_point(rep, backend):
    # Not only the fused HOG/DSIFT ops: the tasks' shared input preparation checks the pixels.
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x[1, 0, 3, 3] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"invert: expected finite pixel values, got NaN/Inf "
        r"in image 1",
    ):
        pyinvert.invert(
            x, representation=rep, backend=backend, steps=1, progress=False, weights=None
        )
    with pytest.raises(ValueError, match=r"caricature: expected finite pixel values"):
        pyinvert.caricature(
            x[1:] * float("nan"),
            "cnn:mobilenet_v2:features.3",
            steps=1,
            weights=None,
            progress=False,
        )
