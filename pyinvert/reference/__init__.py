"""Pure-PyTorch (autograd) versions of every pyinvert op, written for clarity.

They are the test oracle for the fused kernels and the baseline the benchmarks measure against.
"""

from pyinvert.reference.dsift import dsift
from pyinvert.reference.foe import foe_energy, foe_grad, foe_laplacian
from pyinvert.reference.hog import hog
from pyinvert.reference.priors import alpha_norm, image_prior, isotropic_norm, tv_norm

__all__ = [
    "image_prior",
    "tv_norm",
    "alpha_norm",
    "isotropic_norm",
    "hog",
    "dsift",
    "foe_energy",
    "foe_grad",
    "foe_laplacian",
]
