"""Shared test parametrization: devices and dtypes, and the VLFeat requirement."""
import os

import pytest
import torch

import pyinvert  # noqa: F401  (loads the kernels)
from pyinvert import vlfeat

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]

# CI sets PYINVERT_REQUIRE_VLFEAT=1 so that a missing VLFeat fails instead of skipping.
REQUIRE_VLFEAT = os.environ.get("PYINVERT_REQUIRE_VLFEAT") == "1"


@pytest.fixture
def vl():
    """VLFeat's shared library; skips (or fails under CI) when it is not installed."""
    lib = vlfeat.load_library()
    if lib is None:
        if REQUIRE_VLFEAT:
            pytest.fail("PYINVERT_REQUIRE_VLFEAT=1 but VLFeat's libvl is not installed")
        pytest.skip("VLFeat's libvl is not installed (apt-get install libvlfeat-dev)")
    return lib


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
