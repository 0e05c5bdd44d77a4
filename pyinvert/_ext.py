"""Loads the compiled kernels (pyinvert._C), which registers the torch.ops.pyinvert ops."""
import torch

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
