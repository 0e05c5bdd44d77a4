"""Keep freed memory in the process's heap while the engine iterates (glibc only).

PyTorch's CPU allocator does not cache: every activation of a forward and backward is a
``malloc`` and a ``free``. glibc returns the top of its heap to the OS when more than its trim
threshold is free there, and serves large blocks by ``mmap``; the next evaluation then faults
those pages in again, zeroed by the kernel. In a loop of evaluations that interleaves other
long-lived tensors (the L-BFGS's histories and buffers), glibc's own adaptive thresholds do not
settle: bench/bench_texture.py measured about 200 page faults per evaluation at 96 px and
2,000-3,000 at 224 px (none in a bare loop of the same evaluations), about a tenth of the
network's time at 224 px.

:func:`keep_freed_memory` fixes the thresholds once per process, before the engine's first run:
blocks up to 32 MiB come from the heap (glibc's own ceiling for its adaptive threshold) and up
to 512 MiB of free heap top is kept for reuse. The price is that the process's resident memory
does not shrink below its peak by up to that much. Set ``PYINVERT_KEEP_HEAP=0`` in the
environment to leave glibc's defaults alone. Elsewhere than Linux with glibc it does nothing.
"""

import ctypes
import ctypes.util
import os
import sys

#: mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 512 << 20

_state = {"done": False, "applied": False}


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once (module docstring); True when they are set."""
    if _state["done"]:
        return _state["applied"]
    _state["done"] = True
    if os.environ.get("PYINVERT_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # (setting either disables glibc's adaptive thresholds, so both are set)
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _state["applied"] = ok
    return ok
