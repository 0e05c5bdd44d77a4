"""Representations Phi to invert, visualize or analyse: HOG and dense SIFT
(:mod:`pyinvert.representations.handcrafted`), CNN layers (:mod:`pyinvert.representations.cnn`)."""
from pyinvert.representations.handcrafted import (REPRESENTATIONS, DSIFTRepresentation,
                                                  HOGRepresentation, Representation,
                                                  make_representation, to_gray)
from pyinvert.representations.cnn import CNN

__all__ = ["REPRESENTATIONS", "Representation", "HOGRepresentation", "DSIFTRepresentation",
           "CNN", "make_representation", "to_gray"]
