"""VLFeat 0.9.21 through ctypes: the external reference our HOG and DSIFT must equal.

Used by the tests and the benchmarks; needs the system library (Debian: libvlfeat-dev).
"""

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=None)
def load_library():
    """Return VLFeat's shared library, or None when it is not installed."""
    for name in ("vl", "libvl.so.1"):
        path = ctypes.util.find_library(name) if "." not in name else name
        if not path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def available() -> bool:
    return load_library() is not None


def require_library():
    lib = load_library()
    if lib is None:
        raise RuntimeError(
            "VLFeat's libvl is not installed; on Debian/Ubuntu: apt-get install libvlfeat-dev"
        )
    return lib
