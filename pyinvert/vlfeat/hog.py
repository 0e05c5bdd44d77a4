"""VLFeat's HOG (vl/hog.h) through ctypes: the external reference for pyinvert.hog.

Both functions work on one image at a time, in VLFeat's own (planar, row-major) layouts.
"""

import ctypes
import functools

import numpy as np

from pyinvert.vlfeat import require_library

# VlHogVariant in vl/hog.h (note: pyinvert's own op encodes the variants the other way round).
_VARIANTS = {"dalaltriggs": 0, "uoctti": 1}

_float_p = ctypes.POINTER(ctypes.c_float)


@functools.lru_cache(maxsize=None)
def _lib():
    lib = require_library()
    # Declare the signatures once.
    lib.vl_hog_new.restype = ctypes.c_void_p
    lib.vl_hog_new.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_int]
    lib.vl_hog_delete.restype = None
    lib.vl_hog_delete.argtypes = [ctypes.c_void_p]
    lib.vl_hog_set_use_bilinear_orientation_assignments.restype = None
    lib.vl_hog_set_use_bilinear_orientation_assignments.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.vl_hog_put_image.restype = None
    lib.vl_hog_put_image.argtypes = [
        ctypes.c_void_p,
        _float_p,
        ctypes.c_uint64,
        ctypes.c_uint64,
        ctypes.c_uint64,
        ctypes.c_uint64,
    ]
    lib.vl_hog_extract.restype = None
    lib.vl_hog_extract.argtypes = [ctypes.c_void_p, _float_p]
    for name in (
        "vl_hog_get_width",
        "vl_hog_get_height",
        "vl_hog_get_dimension",
        "vl_hog_get_glyph_size",
    ):
        getattr(lib, name).restype = ctypes.c_uint64
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.vl_hog_render.restype = None
    lib.vl_hog_render.argtypes = [
        ctypes.c_void_p,
        _float_p,
        _float_p,
        ctypes.c_uint64,
        ctypes.c_uint64,
    ]
    return lib


def _variant_code(variant):
    try:
        return _VARIANTS[variant.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"vl_hog: expected variant in {tuple(_VARIANTS)}, got {variant!r}"
        ) from None


class _Hog:
    """Owns a VlHog object for the duration of a `with` block."""

    def __init__(self, lib, variant, num_orientations, bilinear=False):
        self.lib = lib
        self.ptr = lib.vl_hog_new(_variant_code(variant), int(num_orientations), 0)
        if not self.ptr:
            raise MemoryError("vl_hog_new failed")
        lib.vl_hog_set_use_bilinear_orientation_assignments(self.ptr, int(bool(bilinear)))

    def __enter__(self):
        return self.ptr

    def __exit__(self, *exc):
        self.lib.vl_hog_delete(self.ptr)


def vl_hog(image, cell_size=8, num_orientations=9, variant="uoctti", bilinear=False):
    """HOG of one image by VLFeat.

    Args:
        image: float32 array [C, H, W] (planar, as vl_hog_put_image reads it), or [H, W].
        cell_size: cell side in pixels.
        num_orientations: number of undirected orientations.
        variant: "uoctti" or "dalaltriggs".
        bilinear: bilinear orientation assignments (HOGb).

    Returns:
        float32 array [D, Hc, Wc] (VLFeat's buffer layout), D = 3*no + 4 (uoctti) or 4*no.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"vl_hog: expected image of shape (C, H, W), got {list(image.shape)}")
    C, H, W = image.shape
    if (H + cell_size // 2) // cell_size < 1 or (W + cell_size // 2) // cell_size < 1:
        raise ValueError(f"vl_hog: image {H}x{W} is smaller than half a cell of {cell_size}")
    image = np.ascontiguousarray(image)
    lib = _lib()
    with _Hog(lib, variant, num_orientations, bilinear) as hog:
        lib.vl_hog_put_image(hog, image.ctypes.data_as(_float_p), W, H, C, cell_size)
        Wc, Hc = lib.vl_hog_get_width(hog), lib.vl_hog_get_height(hog)
        D = lib.vl_hog_get_dimension(hog)
        out = np.empty((D, Hc, Wc), dtype=np.float32)
        lib.vl_hog_extract(hog, out.ctypes.data_as(_float_p))
    return out


def vl_hog_render(features, variant="uoctti", num_orientations=None):
    """VLFeat's glyph picture of one HOG array.

    Args:
        features: float32 array [D, Hc, Wc].
        variant: the variant that produced the features.
        num_orientations: number of orientations; inferred from D and the variant when None.

    Returns:
        float32 array [Hc * 21, Wc * 21] (VLFeat's glyphs are 21 pixels).
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 3:
        raise ValueError(
            f"vl_hog_render: expected features of shape (D, Hc, Wc), got {list(features.shape)}"
        )
    D, Hc, Wc = features.shape
    if num_orientations is None:
        num_orientations = (D - 4) // 3 if variant.lower() == "uoctti" else D // 4
    lib = _lib()
    with _Hog(lib, variant, num_orientations) as hog:
        if lib.vl_hog_get_dimension(hog) != D:
            raise ValueError(
                f"vl_hog_render: D={D} does not fit variant {variant!r} with "
                f"num_orientations={num_orientations}"
            )
        g = lib.vl_hog_get_glyph_size(hog)
        image = np.zeros((Hc * g, Wc * g), dtype=np.float32)
        lib.vl_hog_render(
            hog, image.ctypes.data_as(_float_p), features.ctypes.data_as(_float_p), Wc, Hc
        )
    return image
