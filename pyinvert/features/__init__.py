"""Differentiable HOG and dense SIFT that equal VLFeat 0.9.21's."""

from pyinvert.features.dsift import DenseSIFT, dsift
from pyinvert.features.hog import HOG, hog, render_hog

__all__ = ["hog", "HOG", "render_hog", "dsift", "DenseSIFT"]
