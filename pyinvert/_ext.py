"""Loads the compiled kernels (pyinvert._C), which registers the torch.ops.pyinvert ops, and
checks the environment settings the kernels read."""

import os

import torch

#: Megabytes of idle CPU output buffers the kernels keep for reuse (csrc/cpu/output_cache.h).
OUTPUT_CACHE_ENV = "PYINVERT_OUTPUT_CACHE_MB"
_MAX_CACHE_MB = 1 << 40  # as csrc/cpu/output_cache.cpp


def check_environment(environ=None) -> None:
    """Raise ValueError for a malformed setting the kernels would read (the C++ code checks
    again, with the same words, when it first reads it).

    Args:
        environ: the mapping to check. Default: None (``os.environ``).
    """
    environ = os.environ if environ is None else environ
    text = environ.get(OUTPUT_CACHE_ENV)
    if text is None:
        return
    value = text.strip(" \t\n")
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_CACHE_MB:
        raise ValueError(
            f"pyinvert: expected {OUTPUT_CACHE_ENV} to be a whole number of megabytes (0 disables "
            f"the output cache, at most {_MAX_CACHE_MB}), got {text!r}"
        )


check_environment()

try:
    from pyinvert import _C  # noqa: F401  (imported for its op registrations)
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"pyinvert: the compiled kernels (pyinvert._C) failed to load: {error}. "
        f"They must be built against the installed torch ({torch.__version__}): run "
        "`./run build` in a source checkout, or reinstall with "
        "`pip install --no-build-isolation --force-reinstall pyinvert`."
    ) from error


def has_cuda_kernels() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("pyinvert::image_prior", "CUDA")
