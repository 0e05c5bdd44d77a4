"""The toolbox's docstring examples run, and its functions document their defaults."""

import doctest
import importlib
import inspect

import pytest
import torch

import pyinvert
from tests.test_docs import documented_defaults

MODULES = [
    "pyinvert.toolbox.filters",
    "pyinvert.toolbox.neighbors",
    "pyinvert.toolbox.embed",
    "pyinvert.toolbox.fooling",
    "pyinvert.toolbox.nonparametric",
]
DOCUMENTED = ["filters", "neighbors", "embed", "fool", "texture_nonparametric"]


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", DOCUMENTED + ["toolbox.actmax_yosinski", "toolbox.multifaceted"])
def test_every_argument_with_a_default_documents_it(name):
    fn = pyinvert
    for part in name.split("."):
        fn = getattr(fn, part)
    documented = documented_defaults(inspect.getdoc(fn))
    for arg, p in inspect.signature(fn).parameters.items():
        if p.default is not inspect.Parameter.empty:
            assert arg in documented, f"{name}: {arg} has no documented default"
