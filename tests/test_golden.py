"""The public API's seeded results equal the saved ones (tests/golden/golden.pt, written by
tests/golden/make_golden.py): invert (HOG, HOGb, DSIFT x CVPR/IJCV; a two-layer MobileNetV2
code), actmax (classes and a neuron), caricature and dream, bit for bit. Saved first before
the task-layer redesign (which moved code, not arithmetic), and again when the image prior's
row loops got their AVX2+FMA build on every AVX2+FMA CPU (the last bits of its values change:
images by at most 7.5e-4 after the chaotic ijcv HOGb run, feature errors by 1.9e-5 relative).
Other changes must leave them equal."""

import importlib.util
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results():
    from pyinvert import models
    from tests.conftest import REQUIRE_WEIGHTS

    try:
        models.load_model("mobilenet_v2", "imagenet", download=False)
    except models.WeightsNotFoundError:
        if REQUIRE_WEIGHTS:
            pytest.fail("PYINVERT_REQUIRE_WEIGHTS=1 but the MobileNetV2 weights are missing")
        pytest.skip("MobileNetV2 ImageNet weights are not installed")
    threads = torch.get_num_threads()
    try:
        return _load_maker().compute()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "golden.pt", weights_only=True)


def test_same_calls(results, golden):
    assert sorted(results) == sorted(golden)


@pytest.mark.parametrize("key", sorted(torch.load(GOLDEN / "golden.pt", weights_only=True)))
def test_equal_to_before_the_redesign(results, golden, key):
    for field, expected in golden[key].items():
        actual = results[key][field]
        assert actual.shape == expected.shape, (key, field)
        assert torch.equal(actual, expected), (
            f"{key}.{field}: max |diff| {float((actual - expected).abs().max()):.3g}"
        )
