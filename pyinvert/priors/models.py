r"""Learned patch and field priors: :class:`ICA`, :class:`FoE` and :class:`SeparableFoE`.

Each model is an energy (negative log density up to a constant) over all the valid k x k
patches of an image (:meth:`LearnedModel.energy`: the fused op,
:func:`pyinvert.priors.experts.field_energy`; :meth:`LearnedModel.reference_energy`: the
conv2d formulation, :func:`pyinvert.priors.experts.conv_energy`, which training uses):

.. math::
    E(x) = \sum_p \sum_i \alpha_i \, \rho(\langle w_i, x_p \rangle)

- :class:`ICA`: over-complete ICA (Hyvarinen 2005), expert ``logcosh``; trained on
  independent patches (a patch model), used on an image as a Markov random field whose clique
  potential is the patch model.
- :class:`FoE`: Field of Experts (Roth & Black 2005), expert ``student_t``; trained on image
  crops with the energy summed over all their overlapping patches.
- :class:`SeparableFoE`: an FoE whose filters are separable over space and channels.

Parameterization (the same in all three):

- **Filters** ``w = A V``: ``A`` [n, m] is the free parameter (``coef``), ``V`` [m, C k^2] a
  fixed basis (buffer ``basis``). A new model's basis is the identity (m = C k^2);
  :func:`pyinvert.priors.train` replaces it with the training patches' PCA whitening matrix
  (:func:`pyinvert.priors.train.whitening_basis`), so that learning ``A`` is learning filters
  on whitened data, while ``w`` itself applies to raw patches. With DC removal (the default
  for images) the basis is orthogonal to each channel's constant patch: every filter sums to
  0 over each channel, so the energy ignores any per-channel offset and whatever is done to
  the training patches (DC removal, whitening) is done identically whenever the prior is
  used, by the filters themselves.
- **Weights** :math:`\alpha_i = \exp(\text{log\_alpha}_i)` (always > 0).
- :class:`SeparableFoE`: ``n_spatial`` spatial filters :math:`d_j = A_j V` [k^2] (the basis
  from gray patches) and ``n_pointwise`` channel filters :math:`p_l` [C] (free); expert
  ``i = j * n_pointwise + l`` has the filter :math:`w_i[c, u, v] = p_l[c] \, d_j[u, v]`, i.e.
  the matrix of filters is :math:`W = D \otimes P`, the thesis' :math:`W = D P^\top` per
  (spatial, channel) pair. Its convolution is a depthwise k x k filter followed by a 1x1
  channel mix.

Data of shape [N, D] with D = C k^2 are patches: each row is one image of k x k pixels, so
its energy is the patch's.

References:
    A. Hyvarinen. Estimation of Non-Normalized Statistical Models by Score Matching. JMLR 6,
    2005, Sec. 4.
    S. Roth, M. J. Black. Fields of Experts: A Framework for Learning Image Priors. CVPR 2005.
    F. Harder. Deep Restoration (thesis summary): learned priors for inverting CNN features.
"""

from numbers import Integral
from typing import Optional

import torch
from torch import Tensor, nn

from pyinvert.priors import experts as _experts

#: The model kinds by name (:func:`make_model`, the checkpoints' ``kind``).
KINDS = ("ica", "foe", "separable")


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{fn}: expected {name} to be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{fn}: expected {name} >= 1, got {value}")
    return int(value)


class LearnedModel(nn.Module):
    """Base class of the learned priors (see the module docstring for the parameterization).

    Subclasses set :attr:`kind` and :attr:`expert` and may override :meth:`filter_bank`.
    """

    kind = "model"
    expert = "student_t"

    def __init__(self, size: int, n: int, channels: int, generator=None):
        super().__init__()
        fn = type(self).__name__
        self.size = _positive_int(size, "the filter size", fn)
        self.n = _positive_int(n, "the number of filters", fn)
        self.channels = _positive_int(channels, "channels", fn)
        self.register_buffer("basis", torch.eye(self.basis_dim))
        self.coef = nn.Parameter(torch.empty(self.n_coef, self.basis.shape[0]))
        self.log_alpha = nn.Parameter(torch.zeros(self.n))
        self._extra_parameters()
        self.reset_parameters(generator)

    # ---- what subclasses change ---------------------------------------------------------

    @property
    def basis_dim(self) -> int:
        """The length of a basis vector (C k^2; k^2 for the separable model)."""
        return self.channels * self.size**2

    @property
    def n_coef(self) -> int:
        """Rows of ``coef`` (n; n_spatial for the separable model)."""
        return self.n

    def _extra_parameters(self) -> None:
        """Create the subclass' own parameters (before the first reset)."""

    def filter_bank(self) -> Tensor:
        """The filters as convolution weights [n, C, k, k]."""
        k = self.size
        return (self.coef @ self.basis).view(self.n, self.channels, k, k)

    # ---- the common part -----------------------------------------------------------------

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Random filters of unit norm in the basis' coordinates (whitened responses of
        variance about 1), alphas = 1; random numbers from ``generator``."""
        with torch.no_grad():
            c = torch.randn(self.coef.shape, generator=generator, dtype=self.coef.dtype)
            self.coef.copy_(c / c.norm(dim=1, keepdim=True).clamp_min(1e-12))
            self.log_alpha.zero_()

    def set_basis(self, basis: Tensor, generator: Optional[torch.Generator] = None) -> None:
        """Replace the basis ([m, basis_dim]) and draw new coefficients for it."""
        fn = f"{type(self).__name__}.set_basis"
        if basis.dim() != 2 or basis.shape[1] != self.basis_dim:
            raise ValueError(
                f"{fn}: expected a basis of shape (m, {self.basis_dim}), got {list(basis.shape)}"
            )
        dtype = self.coef.dtype
        self.basis = basis.detach().to(dtype).clone()
        self.coef = nn.Parameter(torch.empty(self.n_coef, basis.shape[0], dtype=dtype))
        self.reset_parameters(generator)

    @property
    def filters(self) -> Tensor:
        """The filters w_i, one per row: [n, C k^2] (channel-major, then rows, columns)."""
        return self.filter_bank().reshape(self.n, -1)

    @property
    def alphas(self) -> Tensor:
        """The experts' weights alpha_i = exp(log_alpha_i) > 0: [n]."""
        return self.log_alpha.exp()

    @property
    def patch_dim(self) -> int:
        """D = C k^2, the length of a patch vector."""
        return self.channels * self.size**2

    def as_images(self, x: Tensor, fn: str) -> Tensor:
        """[N, D] patches as [N, C, k, k] images; [B, C, H, W] as is."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{fn}: expected x to be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 2:
            if x.shape[1] != self.patch_dim:
                raise ValueError(
                    f"{fn}: expected patches of shape (N, {self.patch_dim}) (C k^2 = "
                    f"{self.channels}*{self.size}^2), got {list(x.shape)}"
                )
            return x.reshape(x.shape[0], self.channels, self.size, self.size)
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"{fn}: expected x of shape (B, {self.channels}, H, W) or (N, {self.patch_dim}), "
                f"got {list(x.shape)}"
            )
        return x

    def energy(self, x: Tensor) -> Tensor:
        """The energy of each image (summed over all its valid k x k patches) or patch: the
        inference path, the fused op (:func:`pyinvert.priors.experts.field_energy`),
        differentiable with respect to x and the parameters.

        Shape:
            - x: (B, C, H, W) with H, W >= k, or (N, C k^2)
            - output: (B,) or (N,)
        """
        x = self.as_images(x, f"{type(self).__name__}.energy")
        return _experts.field_energy(x, self.filter_bank(), self.alphas, self.expert)

    def reference_energy(self, x: Tensor) -> Tensor:
        """:meth:`energy` by the conv2d formulation (:func:`pyinvert.priors.experts.conv_energy`,
        the one training's score matching differentiates twice); the same values."""
        x = self.as_images(x, f"{type(self).__name__}.reference_energy")
        return _experts.conv_energy(x, self.filter_bank().to(x.dtype), self.alphas, self.expert)

    forward = energy

    def score(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """The score -grad_x E(x), like x (``create_graph`` keeps it differentiable)."""
        fn = f"{type(self).__name__}.score"
        self.as_images(x, fn)
        with torch.enable_grad():
            xx = x if x.requires_grad and create_graph else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(xx).sum(), xx, create_graph=create_graph)
        return -g

    def config(self) -> dict:
        """What defines the model's shape (the checkpoints' metadata)."""
        return {
            "kind": self.kind,
            "size": self.size,
            "n": self.n,
            "channels": self.channels,
            "expert": self.expert,
            "basis_rows": int(self.basis.shape[0]),
        }

    def extra_repr(self) -> str:
        return f"size={self.size}, n={self.n}, channels={self.channels}, expert={self.expert!r}"


class ICA(LearnedModel):
    r"""Over-complete ICA: ``n_filters`` filters on k x k patches with the log cosh expert,
    :math:`E(x_p) = \sum_i \alpha_i \log\cosh\langle w_i, x_p \rangle` (Hyvarinen 2005,
    G(s) = -log cosh s); on an image, summed over all patches (an MRF).

    Args:
        patch_size: k. Default: 8.
        n_filters: n (over-complete when n > C k^2). Default: 64.
        channels: C. Default: 1.
        generator: seeds the random initial filters. Default: None.

    Shape:
        - input: (B, C, H, W) or (N, C k^2)
        - output: (B,) or (N,)

    Example:
        >>> model = ICA(patch_size=4, n_filters=20)
        >>> model.filters.shape, model.energy(torch.zeros(2, 16)).shape
        (torch.Size([20, 16]), torch.Size([2]))
    """

    kind = "ica"
    expert = "logcosh"

    def __init__(self, patch_size: int = 8, n_filters: int = 64, channels: int = 1, generator=None):
        super().__init__(patch_size, n_filters, channels, generator)


class FoE(LearnedModel):
    r"""Field of Experts: :math:`E(x) = \sum_p \sum_i \alpha_i \log(1 + \langle w_i, x_p
    \rangle^2 / 2)` over all k x k patches (Roth & Black 2005, Student-t experts).

    Args:
        filter_size: k. Default: 5.
        n_experts: n. Default: 24.
        channels: C. Default: 1.
        generator: seeds the random initial filters. Default: None.

    Shape:
        - input: (B, C, H, W) or (N, C k^2)
        - output: (B,) or (N,)

    Example:
        >>> model = FoE(filter_size=3, n_experts=8)
        >>> model.energy(torch.zeros(1, 1, 6, 6)).detach()
        tensor([0.])
    """

    kind = "foe"
    expert = "student_t"

    def __init__(
        self, filter_size: int = 5, n_experts: int = 24, channels: int = 1, generator=None
    ):
        super().__init__(filter_size, n_experts, channels, generator)


class SeparableFoE(LearnedModel):
    r"""A Field of Experts with space x channel separable filters,
    :math:`w_{jl}[c, u, v] = p_l[c] \, d_j[u, v]` (see the module docstring): n = n_spatial x
    n_pointwise Student-t experts.

    Args:
        filter_size: k. Default: 5.
        n_spatial: spatial filters d_j. Default: 8.
        channels: C. Default: 3.
        n_pointwise: channel filters p_l; None: C. Default: None.
        generator: seeds the random initial filters. Default: None.

    Shape:
        - input: (B, C, H, W) or (N, C k^2)
        - output: (B,) or (N,)

    Example:
        >>> model = SeparableFoE(filter_size=3, n_spatial=4, channels=3)
        >>> model.filters.shape, model.alphas.shape
        (torch.Size([12, 27]), torch.Size([12]))
    """

    kind = "separable"
    expert = "student_t"

    def __init__(
        self,
        filter_size: int = 5,
        n_spatial: int = 8,
        channels: int = 3,
        n_pointwise: Optional[int] = None,
        generator=None,
    ):
        fn = "SeparableFoE"
        channels = _positive_int(channels, "channels", fn)
        self.n_spatial = _positive_int(n_spatial, "n_spatial", fn)
        self.n_pointwise = (
            channels if n_pointwise is None else _positive_int(n_pointwise, "n_pointwise", fn)
        )
        super().__init__(filter_size, self.n_spatial * self.n_pointwise, channels, generator)

    def _extra_parameters(self) -> None:
        self.pointwise = nn.Parameter(torch.empty(self.n_pointwise, self.channels))

    @property
    def basis_dim(self) -> int:
        return self.size**2

    @property
    def n_coef(self) -> int:
        return self.n_spatial

    def reset_parameters(self, generator=None) -> None:
        super().reset_parameters(generator)
        with torch.no_grad():
            p = torch.randn(self.pointwise.shape, generator=generator, dtype=self.pointwise.dtype)
            self.pointwise.copy_(p / p.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def filter_bank(self) -> Tensor:
        k, C = self.size, self.channels
        spatial = (self.coef @ self.basis).view(self.n_spatial, 1, 1, k, k)
        point = self.pointwise.to(spatial.dtype).view(1, self.n_pointwise, C, 1, 1)
        return (spatial * point).reshape(self.n, C, k, k)

    def config(self) -> dict:
        return {**super().config(), "n_spatial": self.n_spatial, "n_pointwise": self.n_pointwise}


def make_model(config: dict) -> LearnedModel:
    """A new model of the shape :meth:`LearnedModel.config` describes (its basis the identity
    of the right size until a state dict is loaded)."""
    kind = config.get("kind")
    if kind == "ica":
        model = ICA(config["size"], config["n"], config["channels"])
    elif kind == "foe":
        model = FoE(config["size"], config["n"], config["channels"])
    elif kind == "separable":
        model = SeparableFoE(
            config["size"], config["n_spatial"], config["channels"], config["n_pointwise"]
        )
    else:
        raise ValueError(f"make_model: expected kind in {KINDS}, got {kind!r}")
    rows = int(config.get("basis_rows", model.basis.shape[0]))
    if rows != model.basis.shape[0]:
        model.set_basis(torch.zeros(rows, model.basis_dim))
    return model


def amari_index(W: Tensor, A: Tensor) -> float:
    r"""The Amari index of an unmixing estimate W [n, n] against the mixing matrix A [n, n]:
    0 when P = W A is a scaled permutation,

    .. math::
        \frac{1}{2n(n-1)} \Big[\sum_i \Big(\sum_j \frac{|p_{ij}|}{\max_k |p_{ik}|} - 1\Big)
        + \sum_j \Big(\sum_i \frac{|p_{ij}|}{\max_k |p_{kj}|} - 1\Big)\Big] \in [0, 1].

    References:
        S. Amari, A. Cichocki, H. H. Yang. A New Learning Algorithm for Blind Signal
        Separation. NIPS 1996.
    """
    if W.dim() != 2 or A.dim() != 2 or W.shape[1] != A.shape[0] or W.shape[0] != A.shape[1]:
        raise ValueError(
            f"amari_index: expected W (n, n) and A (n, n), got {list(W.shape)} and {list(A.shape)}"
        )
    P = (W.double() @ A.double()).abs()
    n = P.shape[0]
    rows = (P / P.max(dim=1, keepdim=True).values).sum(dim=1) - 1
    cols = (P / P.max(dim=0, keepdim=True).values).sum(dim=0) - 1
    return float((rows.sum() + cols.sum()) / (2 * n * max(n - 1, 1)))


__all__ = ["LearnedModel", "ICA", "FoE", "SeparableFoE", "make_model", "amari_index", "KINDS"]
