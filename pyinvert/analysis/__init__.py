"""Equivariance and equivalence of representations (Lenc & Vedaldi, CVPR 2015)."""
from pyinvert.analysis.equivariance import equivariance
from pyinvert.analysis.results import EquivalenceResult, EquivarianceResult
from pyinvert.analysis.transforms import Transform, parse_transform, parse_transforms
from pyinvert.analysis.equivalence import equivalence
