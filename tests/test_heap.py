"""pyinvert.optim.heap: glibc's thresholds are set once per process, the environment can opt
out, and the engine asks for it before its first run."""

import sys

import pytest

from pyinvert.optim import heap


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(heap, "_state", {"done": False, "applied": False})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_sets_the_thresholds_once(fresh, monkeypatch):
    calls = []
    real = heap.ctypes.CDLL

    class Libc:
        def __init__(self, name):
            self.lib = real(name)
            self.mallopt = self

        argtypes = restype = None

        def __call__(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(heap.ctypes, "CDLL", Libc)
    assert heap.keep_freed_memory() is True
    assert calls == [
        (heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD),
        (heap.M_TRIM_THRESHOLD, heap.TRIM_THRESHOLD),
    ]
    assert heap.keep_freed_memory() is True and len(calls) == 2  # once per process


def test_environment_opts_out(fresh, monkeypatch):
    monkeypatch.setenv("PYINVERT_KEEP_HEAP", "0")
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda name: pytest.fail("libc was loaded"))
    assert heap.keep_freed_memory() is False


def test_not_glibc_does_nothing(fresh, monkeypatch):
    def missing(name):
        raise OSError("no libc")

    monkeypatch.setattr(heap.ctypes, "CDLL", missing)
    assert heap.keep_freed_memory() is False


def test_the_engine_calls_it(monkeypatch):
    import torch

    import pyinvert
    from pyinvert.optim import engine

    seen = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: seen.append(1))
    pyinvert.invert(torch.rand(1, 1, 16, 16), representation="hog", steps=2, progress=False)
    assert seen
