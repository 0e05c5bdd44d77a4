"""VLFeat 0.9.21's dense SIFT (vl/dsift.h) through ctypes: what `pyinvert.dsift` must equal.

Only `vl_dsift_new_basic`, `vl_dsift_process` and `vl_dsift_delete` are exported by libvl; the
setters and getters of dsift.h are `VL_INLINE`, so the filter's fields are read and written through
a ctypes mirror of `VlDsiftFilter` (x86-64 layout of the 0.9.21 header).
"""

import ctypes

import numpy as np

from pyinvert.vlfeat import require_library


class _Keypoint(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_double),
        ("y", ctypes.c_double),
        ("s", ctypes.c_double),
        ("norm", ctypes.c_double),
    ]


class _Geometry(ctypes.Structure):
    _fields_ = [
        ("numBinT", ctypes.c_int),
        ("numBinX", ctypes.c_int),
        ("numBinY", ctypes.c_int),
        ("binSizeX", ctypes.c_int),
        ("binSizeY", ctypes.c_int),
    ]


class _Filter(ctypes.Structure):
    _fields_ = [
        ("imWidth", ctypes.c_int),
        ("imHeight", ctypes.c_int),
        ("stepX", ctypes.c_int),
        ("stepY", ctypes.c_int),
        ("boundMinX", ctypes.c_int),
        ("boundMinY", ctypes.c_int),
        ("boundMaxX", ctypes.c_int),
        ("boundMaxY", ctypes.c_int),
        ("geom", _Geometry),
        ("useFlatWindow", ctypes.c_int),
        ("windowSize", ctypes.c_double),
        ("numFrames", ctypes.c_int),
        ("descrSize", ctypes.c_int),
        ("frames", ctypes.POINTER(_Keypoint)),
        ("descrs", ctypes.POINTER(ctypes.c_float)),
        ("numBinAlloc", ctypes.c_int),
        ("numFrameAlloc", ctypes.c_int),
        ("numGradAlloc", ctypes.c_int),
        ("grads", ctypes.POINTER(ctypes.POINTER(ctypes.c_float))),
        ("convTmp1", ctypes.POINTER(ctypes.c_float)),
        ("convTmp2", ctypes.POINTER(ctypes.c_float)),
    ]


def _functions():
    lib = require_library()
    lib.vl_dsift_new_basic.restype = ctypes.POINTER(_Filter)
    lib.vl_dsift_new_basic.argtypes = [ctypes.c_int] * 4
    lib.vl_dsift_process.restype = None
    lib.vl_dsift_process.argtypes = [ctypes.POINTER(_Filter), ctypes.POINTER(ctypes.c_float)]
    lib.vl_dsift_delete.restype = None
    lib.vl_dsift_delete.argtypes = [ctypes.POINTER(_Filter)]
    return lib


def vl_dsift(image, step: int, bin_size: int, flat_window: bool):
    """Dense SIFT of one grayscale image, exactly as VLFeat's C API computes it.

    Runs `vl_dsift_new_basic(W, H, step, bin_size)`, sets the flat window flag
    (`vl_dsift_set_flat_window`), `vl_dsift_process`, and copies out what
    `vl_dsift_get_descriptors` and `vl_dsift_get_keypoints` return.

    Args:
        image: float32 array of shape (H, W), row-major (pixel (x, y) at image[y, x]).
        step: sampling step, in pixels, of the keypoint grid (both directions).
        bin_size: size in pixels of a spatial bin (both directions).
        flat_window: use VLFeat's fast flat-window approximation of the Gaussian window.

    Returns:
        (descriptors, keypoints): float32 [N, 128] in the C API order (no transposition:
        index = (bin_y * 4 + bin_x) * 8 + orientation), and float64 [N, 2] keypoint centres
        (x, y). N = 0 when the image is smaller than one descriptor.
    """
    lib = _functions()
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"vl_dsift: expected image of shape (H, W), got {list(image.shape)}")
    height, width = image.shape
    filt = lib.vl_dsift_new_basic(width, height, int(step), int(bin_size))
    if not filt:
        raise MemoryError("vl_dsift: vl_dsift_new_basic failed")
    try:
        filt.contents.useFlatWindow = 1 if flat_window else 0
        lib.vl_dsift_process(filt, image.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        f = filt.contents
        num, size = f.numFrames, f.descrSize
        if num == 0:
            return np.zeros((0, size), np.float32), np.zeros((0, 2), np.float64)
        descriptors = np.ctypeslib.as_array(f.descrs, shape=(num * size,)).reshape(num, size).copy()
        frames = np.ctypeslib.as_array(
            ctypes.cast(f.frames, ctypes.POINTER(ctypes.c_double)), shape=(num * 4,)
        )
        keypoints = frames.reshape(num, 4)[:, :2].copy()
        return descriptors, keypoints
    finally:
        lib.vl_dsift_delete(filt)
