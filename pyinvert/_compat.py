"""Old module paths (before the sub-packages) keep importing, with a DeprecationWarning:
``import pyinvert.recipes`` gives :mod:`pyinvert.optim.recipes`. ``pyinvert.invert`` and
``pyinvert.visualize`` are functions now and have no alias (their modules are
:mod:`pyinvert.tasks.inversion` and :mod:`pyinvert.tasks.visualization`). ``pyinvert.objectives``
and ``pyinvert.figures`` became packages under the same names (nothing to alias), and
``pyinvert.tasks.visualization`` still gives ``caricature``, ``dream``, ``invariance_map`` and
``InvarianceResult``, which moved to modules of their own."""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "pyinvert.regularizers": "pyinvert.priors.handcrafted",
    "pyinvert.cnn": "pyinvert.representations.cnn",
    "pyinvert.recipes": "pyinvert.optim.recipes",
    "pyinvert.optimize": "pyinvert.optim.loop",
    "pyinvert.transforms": "pyinvert.optim.jitter",
    "pyinvert.engine": "pyinvert.optim.engine",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3
        )
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
