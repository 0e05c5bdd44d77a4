"""Every way to say which representation: :func:`as_representation` (names, feature modules,
CNNs, any ``nn.Module``, any callable) and the registry of names (:func:`register_representation`),
which is what a batch manifest's ``rep`` column and ``invert(representation="name")`` look up.
"""

from typing import Callable, Dict

from torch import nn

from pyinvert import features as _features
from pyinvert.representations.base import Representation, check_backend
from pyinvert.representations.cnn import cnn_from_spec
from pyinvert.representations.generic import (
    DeclaredRepresentation,
    FunctionRepresentation,
    declared_members,
)
from pyinvert.representations.handcrafted import DSIFTRepresentation, HOGRepresentation

#: The built-in names (plus "cnn:MODEL:LAYER[,LAYER...]").
REPRESENTATIONS = ("hog", "hogb", "dsift")

_REGISTRY: Dict[str, Callable] = {}


def register_representation(name: str, factory: Callable, *, overwrite: bool = False) -> None:
    """Make ``name`` a representation name: ``invert(x, representation=name)``, a batch
    manifest's ``rep`` column and :func:`as_representation` then call ``factory()`` (it may
    return anything :func:`as_representation` accepts).

    Args:
        name: the name (case-insensitive; not a built-in, not starting with "cnn:").
        factory: a function of no arguments returning the representation.
        overwrite: replace an earlier registration of ``name``. Default: False.

    Example:
        >>> register_representation("mean-colour", lambda: (lambda im: im.mean((2, 3))))
        >>> as_representation("mean-colour").kind
        'cnn'
        >>> unregister_representation("mean-colour")
    """
    fn = "register_representation"
    if not isinstance(name, str) or not name:
        raise TypeError(f"{fn}: expected name to be a non-empty str, got {name!r}")
    key = name.lower()
    if key in REPRESENTATIONS or key.startswith("cnn:"):
        raise ValueError(f"{fn}: {name!r} is a built-in representation name")
    if not callable(factory):
        raise TypeError(f"{fn}: expected factory to be callable, got {type(factory).__name__}")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"{fn}: {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[key] = factory


def unregister_representation(name: str) -> None:
    """Remove a name added with :func:`register_representation` (KeyError if it is not)."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise KeyError(f"unregister_representation: {name!r} is not registered")
    del _REGISTRY[key]


def registered_representations() -> tuple:
    """The names added with :func:`register_representation`."""
    return tuple(sorted(_REGISTRY))


def as_representation(
    obj, *, backend: str = "fused", recipe=None, weights="imagenet", fn: str = "as_representation"
) -> Representation:
    """Anything that can serve as Phi, as a :class:`Representation`.

    Args:
        obj: a :class:`Representation` (returned as it is, e.g. :class:`pyinvert.CNN`); a
            name: "hog", "hogb", "dsift", "cnn:MODEL:LAYER[,LAYER...]" or a registered one; a
            :class:`pyinvert.HOG` or :class:`pyinvert.DenseSIFT` module (its parameters, the
            gray image in the authors' pixel scale); an object declaring ``preprocess`` and
            ``postprocess`` (the protocol without the base class); any other ``nn.Module`` or
            callable ``Tensor -> Tensor`` (:class:`FunctionRepresentation`: it sees RGB
            images in [0, 1]).
        backend: "fused" or "reference" (HOG and DSIFT). Default: "fused".
        recipe: a :class:`pyinvert.optim.recipes.Recipe` giving the DSIFT bin size and step of
            the name "dsift"; None uses the DSIFT defaults. Default: None.
        weights: a "cnn:..." name's weights: "imagenet", None (random) or a path. Default:
            "imagenet".
        fn: the function named in error messages. Default: "as_representation".

    Returns:
        The representation.

    Example:
        >>> import pyinvert
        >>> as_representation(pyinvert.HOG(cell_size=4)).config()["cell_size"]
        4
    """
    if isinstance(obj, Representation):
        return obj
    if isinstance(obj, str):
        return _from_name(obj, backend, recipe, weights, fn)
    if isinstance(obj, _features.HOG):
        return HOGRepresentation.from_module(obj, check_backend(backend, fn))
    if isinstance(obj, _features.DenseSIFT):
        return DSIFTRepresentation.from_module(obj, check_backend(backend, fn))
    if not callable(obj):
        raise TypeError(
            f"{fn}: expected representation to be a name, an nn.Module or a "
            f"callable, got {type(obj).__name__}"
        )
    members = declared_members(obj)
    if "preprocess" in members and "postprocess" in members:
        return DeclaredRepresentation(obj, members)
    return FunctionRepresentation(obj)


def _from_name(name: str, backend, recipe, weights, fn) -> Representation:
    key = name.lower()
    if key.startswith("cnn:"):
        return cnn_from_spec(name, weights=weights, fn=fn)
    if key == "hog":
        return HOGRepresentation(backend=check_backend(backend, fn))
    if key == "hogb":
        return HOGRepresentation(bilinear_orientations=True, backend=check_backend(backend, fn))
    if key == "dsift":
        backend = check_backend(backend, fn)
        if recipe is None:
            return DSIFTRepresentation(backend=backend)
        return DSIFTRepresentation(
            bin_size=recipe.dsift_bin_size, step=recipe.dsift_step, backend=backend
        )
    if key in _REGISTRY:
        return as_representation(
            _REGISTRY[key](), backend=backend, recipe=recipe, weights=weights, fn=fn
        )
    extra = f", a registered name {registered_representations()}" if _REGISTRY else ""
    raise ValueError(
        f"{fn}: expected representation in {REPRESENTATIONS}{extra} or "
        f"'cnn:MODEL:LAYER[,LAYER...]', got {name!r}"
    )


def make_representation(
    name, *, backend: str = "fused", recipe=None, weights="imagenet"
) -> nn.Module:
    """:func:`as_representation` under its earlier name (errors name ``invert``).

    Args:
        name: anything :func:`as_representation` accepts.
        backend: "fused" or "reference". Default: "fused".
        recipe: gives the DSIFT bin size and step. Default: None.
        weights: a CNN's weights. Default: "imagenet".

    Returns:
        The representation module.
    """
    return as_representation(name, backend=backend, recipe=recipe, weights=weights, fn="invert")
