"""HOG and dense SIFT as representations to invert (the gray image in the authors' pixel scale
``255 gray - 128``), wrapping :mod:`pyinvert.features` (fused kernels) or
:mod:`pyinvert.reference` (pure PyTorch) by ``backend``.

``as_representation(pyinvert.HOG(...))`` and ``as_representation(pyinvert.DenseSIFT(...))``
give these, with the feature module's parameters.
"""

import torch
from torch import Tensor

from pyinvert import features as _features
from pyinvert import reference as _reference
from pyinvert.features.dsift import keypoints
from pyinvert.representations.base import (
    Code,
    Representation,
    check_backend,
    matrix_picture,
    normalized_picture,
)


class HOGRepresentation(Representation):
    """VLFeat's HOG of the gray image (UoCTTI, 31 dimensions per cell by default); HOGb with
    bilinear orientation assignment.

    Args:
        cell_size: HOG cell size. Default: 8.
        bilinear_orientations: HOGb. Default: False.
        backend: "fused" (pyinvert.hog) or "reference" (pyinvert.reference.hog). Default: "fused".
        num_orientations: undirected orientations. Default: 9.
        variant: "uoctti" or "dalaltriggs". Default: "uoctti".

    Example:
        >>> rep = HOGRepresentation()
        >>> rep(rep.preprocess(torch.rand(2, 3, 32, 32))).shape
        torch.Size([2, 31, 4, 4])
    """

    kind = "handcrafted"

    def __init__(
        self,
        cell_size: int = 8,
        bilinear_orientations: bool = False,
        backend: str = "fused",
        num_orientations: int = 9,
        variant: str = "uoctti",
    ):
        super().__init__()
        self.backend = check_backend(backend, "HOGRepresentation")
        self.cell_size = cell_size
        self.bilinear_orientations = bilinear_orientations
        self.num_orientations = num_orientations
        self.variant = variant.lower()
        self.name = "hogb" if bilinear_orientations else "hog"

    @classmethod
    def from_module(cls, module: "_features.HOG", backend: str = "fused") -> "HOGRepresentation":
        """The representation of a :class:`pyinvert.HOG` module's parameters."""
        return cls(
            cell_size=module.cell_size,
            bilinear_orientations=module.bilinear_orientations,
            backend=backend,
            num_orientations=module.num_orientations,
            variant=module.variant,
        )

    @property
    def min_size(self) -> int:
        # At least half a cell (pyinvert.hog's own rule); 3 pixels for a gradient.
        return max(self.cell_size - self.cell_size // 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        fn = _features.hog if self.backend == "fused" else _reference.hog
        return fn(
            x,
            cell_size=self.cell_size,
            num_orientations=self.num_orientations,
            variant=self.variant,
            bilinear_orientations=self.bilinear_orientations,
        )

    def render_code(self, code) -> Tensor:
        """HOG glyphs (VLFeat's ``vl_hog_render``) of one image's code [D, h, w]."""
        if isinstance(code, Code):
            code = code[self.name][0]
        code = code.detach().float().cpu()
        if code.dim() != 3:
            return matrix_picture(code)
        return normalized_picture(
            _features.render_hog(
                code, variant=self.variant, num_orientations=self.num_orientations, glyph_size=11
            )
        )

    def config(self) -> dict:
        out = {
            "name": self.name,
            "cell_size": self.cell_size,
            "bilinear_orientations": self.bilinear_orientations,
            "backend": self.backend,
        }
        if (self.num_orientations, self.variant) != (9, "uoctti"):
            out.update(num_orientations=self.num_orientations, variant=self.variant)
        return out


class DSIFTRepresentation(Representation):
    """Dense SIFT (VLFeat's vl_dsift) descriptors of the gray image.

    Args:
        bin_size: spatial bin size. Default: 8.
        step: sampling step. Default: 4.
        backend: "fused" or "reference". Default: "fused".
        flat_window: VLFeat's flat-window approximation. Default: False.

    Shape:
        - code (forward): :math:`(B, N, 128)` (N descriptors, x fastest); as a :class:`Code`
          the map :math:`(B, 128, N_y, N_x)`.
    """

    name = "dsift"
    kind = "handcrafted"

    def __init__(
        self, bin_size: int = 8, step: int = 4, backend: str = "fused", flat_window: bool = False
    ):
        super().__init__()
        self.backend = check_backend(backend, "DSIFTRepresentation")
        self.bin_size = bin_size
        self.step = step
        self.flat_window = flat_window

    @classmethod
    def from_module(
        cls, module: "_features.DenseSIFT", backend: str = "fused"
    ) -> "DSIFTRepresentation":
        """The representation of a :class:`pyinvert.DenseSIFT` module's parameters."""
        return cls(
            bin_size=module.bin_size,
            step=module.step,
            backend=backend,
            flat_window=module.flat_window,
        )

    @property
    def min_size(self) -> int:
        return 3 * self.bin_size + 1  # one descriptor (4 x 4 bins) fits

    def forward(self, x: Tensor) -> Tensor:
        fn = _features.dsift if self.backend == "fused" else _reference.dsift
        desc, _ = fn(x, step=self.step, bin_size=self.bin_size, flat_window=self.flat_window)
        return desc

    def as_code(self, value: Tensor, image_size=None) -> Code:
        if image_size is None:
            raise ValueError(
                "DSIFTRepresentation.as_code: expected image_size=(H, W) (the "
                "descriptor grid depends on it), got None"
            )
        centres = keypoints(*image_size, step=self.step, bin_size=self.bin_size)
        ny = int(torch.unique(centres[:, 1]).numel())
        nx = centres.shape[0] // max(ny, 1)
        return Code({self.name: value.transpose(1, 2).reshape(value.shape[0], -1, ny, nx)})

    def config(self) -> dict:
        out = {
            "name": self.name,
            "bin_size": self.bin_size,
            "step": self.step,
            "backend": self.backend,
        }
        if self.flat_window:
            out["flat_window"] = True
        return out
