"""Docstrings: documented defaults match the signatures, and the examples run."""

import doctest
import importlib
import importlib.util
import inspect
import re

import pytest
import torch

import pyinvert


def public_callables():
    for name in pyinvert.__all__:
        obj = getattr(pyinvert, name)
        if callable(obj):
            yield name, obj


def documented_defaults(doc):
    """{argument: default text} from Google-style 'Args:' entries ending in 'Default: X.'"""
    found = {}
    args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    args = re.split(r"\n(?:Returns|Shape|Example|References|Raises):", args)[0]
    for entry in re.split(r"\n(?=    \*{0,2}\w+:)", args):
        match = re.match(r"\s*(\w+):.*Default:\s*(.+?)\.?\s*$", entry, re.S)
        if match:
            found[match.group(1)] = " ".join(match.group(2).split())
    return found


@pytest.mark.parametrize("name, obj", list(public_callables()))
def test_documented_defaults_match_signature(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    for arg, text in documented_defaults(doc).items():
        assert arg in params, f"{name}: documents {arg!r}, which is not a parameter"
        text = re.sub(r"\s*\(.*\)$", "", text)  # "None (meaning ...)" documents None
        default = params[arg].default
        assert default is not inspect.Parameter.empty, f"{name}: {arg} has no default"
        # A default may be documented by the name of a constant of its module (IMAGENET_MEAN).
        named = getattr(inspect.getmodule(target), text.strip("`"), inspect.Parameter.empty)
        assert (
            text == repr(default)
            or text.strip("'\"`") == str(default)
            or (text.isidentifier() and named == default)
        ), f"{name}: {arg} documented as {text!r}, signature says {default!r}"


def test_every_public_function_documents_its_defaults():
    # Not a vacuous pass: the parser finds the documented defaults of image_prior.
    found = documented_defaults(inspect.getdoc(pyinvert.image_prior))
    assert found["beta"] == "2.0" and found["isotropic"] == "False"


def test_public_api_is_curated():
    # __all__ is exact (every name exists, nothing public is left out by accident), no name
    # shadows its own module, and no module is imported with *.
    for name in pyinvert.__all__:
        assert hasattr(pyinvert, name), name
    public = {n for n in vars(pyinvert) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(pyinvert, n))}
    assert public - modules - {"annotations"} <= set(pyinvert.__all__), sorted(
        public - modules - set(pyinvert.__all__)
    )
    for name in pyinvert.__all__:
        if not inspect.ismodule(getattr(pyinvert, name)):
            assert importlib.util.find_spec(f"pyinvert.{name}") is None, (
                f"pyinvert.{name} shadows the module of that name"
            )


DOCTEST_MODULES = [
    "pyinvert.priors.handcrafted",
    "pyinvert.representations.cnn",
    "pyinvert.tasks.inversion",
    "pyinvert.optim.recipes",
    "pyinvert.objectives",
    "pyinvert.tasks.visualization",
    "pyinvert.representations.base",
    "pyinvert.representations.handcrafted",
    "pyinvert.representations.generic",
    "pyinvert.representations.registry",
    "pyinvert.optim.options",
    "pyinvert.optim.parameterizations",
]


@pytest.mark.parametrize("module", DOCTEST_MODULES)
def test_doctests(module):
    torch.manual_seed(0)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
