"""Builds pyinvert._C: the CPU kernels always, the CUDA kernels when a CUDA torch and toolkit exist.

Set PYINVERT_CUDA=1 to force the CUDA build (e.g. to compile-check it on a machine without a GPU),
PYINVERT_CUDA=0 to skip it.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda():
    forced = os.environ.get("PYINVERT_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def extension():
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # No -march=native: the built library must run on other CPUs than the builder's.
    cxx_flags = ["-O3", "-fopenmp"]
    link_flags = ["-fopenmp"]  # without it at::parallel_for silently runs on one thread
    include_dirs = [os.path.join(ROOT, "csrc")]
    if want_cuda():
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
        return CUDAExtension(
            "pyinvert._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            extra_compile_args={
                "cxx": cxx_flags + ["-DPYINVERT_WITH_CUDA"],
                # fast math's approximate transcendentals, but float32 denormals kept
                # (-ftz=false): the kernels compared bit for bit (HOG, DSIFT, the rowwise and
                # L-BFGS ops) round as PyTorch's own CUDA kernels and the CPU do
                "nvcc": ["-O3", "--use_fast_math", "-ftz=false"],
            },
            extra_link_args=link_flags,
        )
    return CppExtension(
        "pyinvert._C",
        cpp_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )


setup(
    packages=find_packages(include=["pyinvert", "pyinvert.*"]),
    package_data={
        "pyinvert": [
            "py.typed",
            "data/*.png",
            "data/*.md",
            "models/*.txt",
            "decoders/weights/*.pt",
            "priors/weights/*.pt",
            "decoders/weights/*.md",
        ]
    },
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
