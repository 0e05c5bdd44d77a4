"""Representations Phi to invert, visualize or analyse, all on one protocol
(:mod:`pyinvert.representations.base`: :class:`Representation` and its :class:`Code`):

* :mod:`~pyinvert.representations.handcrafted`: HOG, HOGb and dense SIFT;
* :mod:`~pyinvert.representations.cnn`: the codes of named CNN layers (forward hooks);
* :mod:`~pyinvert.representations.generic`: your own ``nn.Module`` or function;
* :mod:`~pyinvert.representations.registry`: :func:`as_representation` (anything to a
  representation) and :func:`register_representation` (names for manifests and the CLI).
"""

from pyinvert.representations.base import (
    Code,
    Representation,
    RepresentationProtocol,
    to_gray,
    to_rgb,
)
from pyinvert.representations.cnn import CNN
from pyinvert.representations.generic import FunctionRepresentation
from pyinvert.representations.handcrafted import DSIFTRepresentation, HOGRepresentation
from pyinvert.representations.registry import (
    REPRESENTATIONS,
    as_representation,
    make_representation,
    register_representation,
    registered_representations,
    unregister_representation,
)

__all__ = [
    "Representation",
    "RepresentationProtocol",
    "Code",
    "HOGRepresentation",
    "DSIFTRepresentation",
    "CNN",
    "FunctionRepresentation",
    "as_representation",
    "make_representation",
    "register_representation",
    "registered_representations",
    "unregister_representation",
    "REPRESENTATIONS",
    "to_gray",
    "to_rgb",
]
