"""pyinvert.analysis docstrings: documented defaults match the signatures, examples run."""

import doctest
import importlib
import inspect

import pytest
import torch

import pyinvert.analysis as analysis
from tests.test_docs import documented_defaults


@pytest.mark.parametrize("name", analysis.__all__)
def test_documented_defaults_match_signature(name):
    obj = getattr(analysis, name)
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if not callable(obj):
        return
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    for arg, text in documented_defaults(doc).items():
        default = params[arg].default
        assert text.split(" (")[0].strip("'\"") == str(default) or text == repr(default), (
            f"{name}: {arg} documented as {text!r}, signature says {default!r}"
        )


def test_the_main_entry_points_document_their_defaults():
    found = documented_defaults(inspect.getdoc(analysis.equivariance))
    assert found["ridge"] == '"auto"' and found["crops"] == "128" and len(found) >= 15


@pytest.mark.parametrize(
    "module",
    [
        "pyinvert.analysis",
        "pyinvert.analysis.transforms",
        "pyinvert.analysis.ridge",
        "pyinvert.analysis.figures",
        "pyinvert.analysis.seeds",
        "pyinvert.analysis.equivalence",
        "pyinvert.analysis.equivariance",
    ],
)
def test_doctests(module):
    torch.manual_seed(0)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
