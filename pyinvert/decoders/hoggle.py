"""HOGgle: HOG inversion by paired dictionary learning (Vondrick et al., ICCV 2013, Sec. 3.4).

A window of ``n x n`` HOG cells and the gray patch under it (the window plus one cell on each
side: ``(n + 2) s`` pixels square, ``s`` the cell size) are written with one shared sparse
code ``a`` in two dictionaries, U (patches) and V (HOG windows). With ``x`` the patch and
``phi`` its HOG window, each mean-centred and scaled to unit L2 norm (per sample, as the
authors' ``learnpairdict.m`` does), the dictionaries solve

    min_{U, V, a_i >= 0}  sum_i 0.5 ||x_i - U a_i||^2 + 0.5 ||phi_i - V a_i||^2 + lam ||a_i||_1,
    subject to ||[u_k; v_k]||_2 <= 1 for every atom k,

which is ordinary dictionary learning on the stacked vectors ``[x; phi]`` (the authors use
SPAMS' ``mexTrainDL`` with ``mode=2, posAlpha=true, lambda=0.02``; we use scikit-learn's
:class:`~sklearn.decomposition.MiniBatchDictionaryLearning`, whose objective is the same).
Inversion codes every window of a HOG map with V alone (the same positive lasso, same ``lam``),
reconstructs each patch as ``U a``, averages the overlapping patches (one per cell, stride
``s``; weighted by a Gaussian around each patch centre, :data:`BLEND`) and rescales the image
to [0, 1] (the authors' min-max; a constant result becomes 0.5). A map of fewer than ``n``
cells is padded with empty cells (as ``invertHOG.m`` does), so any image size works.

The authors' defaults, kept here: ``n = 5``, ``K = 1024`` atoms (we ship fewer: see
:func:`~pyinvert.decoders.hoggle_train.train_hoggle`), ``lam = 0.02``, ``s = 8``. Their HOG is Felzenszwalb's 32-d (31 + a
zero); ours is the project's VLFeat UoCTTI HOG (31-d), computed on the whole image and cut
into windows, exactly as at inversion time.

References:
    C. Vondrick, A. Khosla, T. Malisiewicz, A. Torralba, "HOGgles: Visualizing Object
    Detection Features", ICCV 2013, Sec. 3.4 (paired dictionary learning) and Fig. 5.
"""

import time
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from torch import Tensor

from pyinvert.decoders.hoggle_data import (
    EPS,
    batches,
    hog_windows,
    normalize_rows,
    pair_matrix,
)
from pyinvert.representations.handcrafted import HOGRepresentation
from pyinvert.training import checkpoint as _ckpt

#: The checkpoint ``kind`` of a paired dictionary.
KIND = "hoggle-paired-dictionary"
#: The shipped dictionary (trained by ``python bench/train_hoggle.py``).
SHIPPED = Path(__file__).with_name("weights") / "hoggle.pt"
#: The default ``blend``: the standard deviation, in pixels, of the Gaussian that weights each
#: patch's pixels in the average of overlapping patches (chosen on the bundled samples, crops
#: of training photos: 68.1 % Table-1 error against 74.5 % for a flat average, with a K = 256
#: dictionary; the authors weight by a Gaussian of 75 pixels, nearly flat on 56 pixels).
BLEND = 14.0


def hog_config(rep: HOGRepresentation) -> dict:
    """What a dictionary's HOG must match (the backend is left out: both give one code)."""
    if not isinstance(rep, HOGRepresentation):
        raise TypeError(
            f"PairedDictionary: expected a HOG representation, got {type(rep).__name__}"
        )
    return {
        "name": rep.name,
        "cell_size": rep.cell_size,
        "bilinear_orientations": rep.bilinear_orientations,
        "num_orientations": rep.num_orientations,
        "variant": rep.variant,
    }


class PairedDictionary:
    """Paired patch / HOG dictionaries with shared sparse codes (HOGgle), and the inversion.

    Args:
        gray: U, the patch atoms, [K, P*P] with P = (window + 2) * cell size.
        hog: V, the HOG-window atoms, [K, D * window**2].
        representation: the HOG the dictionary was learned for. Default: None (VLFeat
            UoCTTI HOG with 8-pixel cells).
        window: HOG cells per window side (n). Default: 5.
        lam: the lasso weight (lambda). Default: 0.02.
        blend: the standard deviation in pixels of the Gaussian weighting the overlapping
            patches; None: a flat average. Default: BLEND.
        metadata: training details kept in the saved file. Default: None.

    Example:
        >>> import torch
        >>> from pyinvert.decoders.hoggle import PairedDictionary
        >>> pd = PairedDictionary.fit([torch.rand(3, 64, 64)], num_atoms=8, window=2, steps=2)
        >>> pd.invert_images(torch.rand(1, 3, 41, 37)).shape
        torch.Size([1, 1, 41, 37])

    References:
        Vondrick et al., "HOGgles: Visualizing Object Detection Features", ICCV 2013, Sec. 3.4.
    """

    def __init__(
        self,
        gray: Tensor,
        hog: Tensor,
        *,
        representation: Optional[HOGRepresentation] = None,
        window: int = 5,
        lam: float = 0.02,
        blend: Optional[float] = BLEND,
        metadata: Optional[Mapping] = None,
    ):
        self.rep = representation if representation is not None else HOGRepresentation()
        self.config = hog_config(self.rep)
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"PairedDictionary: expected window >= 1, got {window!r}")
        if not lam > 0:
            raise ValueError(f"PairedDictionary: expected lam > 0, got {lam!r}")
        self.window, self.lam = window, float(lam)
        s, D = self.rep.cell_size, self.channels
        want = ((window + 2) * s) ** 2, D * window * window
        if gray.dim() != 2 or hog.dim() != 2 or gray.shape[0] != hog.shape[0]:
            raise ValueError(
                f"PairedDictionary: expected gray [K, {want[0]}] and hog [K, {want[1]}], "
                f"got {list(gray.shape)} and {list(hog.shape)}"
            )
        if (gray.shape[1], hog.shape[1]) != want:
            raise ValueError(
                f"PairedDictionary: expected gray [K, {want[0]}] and hog [K, {want[1]}] for "
                f"window={window} and cell size {s}, got {list(gray.shape)} and "
                f"{list(hog.shape)}"
            )
        self.gray = gray.detach().float().cpu().contiguous()
        self.hog = hog.detach().float().cpu().contiguous()
        if blend is not None and not blend > 0:
            raise ValueError(f"PairedDictionary: expected blend > 0 or None, got {blend!r}")
        self.blend = None if blend is None else float(blend)
        self.metadata = dict(metadata or {})

    @property
    def channels(self) -> int:
        """D, the HOG dimensions per cell."""
        o = self.rep.num_orientations
        return 3 * o + 4 if self.rep.variant == "uoctti" else 4 * o

    @property
    def num_atoms(self) -> int:
        """K."""
        return self.gray.shape[0]

    @property
    def patch_size(self) -> int:
        """P = (window + 2) * cell size, the patch side in pixels."""
        return (self.window + 2) * self.rep.cell_size

    # ---- learning -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        images: Sequence[Tensor],
        *,
        representation: Optional[HOGRepresentation] = None,
        num_atoms: int = 1024,
        window: int = 5,
        lam: float = 0.02,
        scales: Sequence[float] = (1.0,),
        flips: bool = False,
        max_pairs: Optional[int] = None,
        steps: int = 100,
        batch_size: int = 400,
        generator: Optional[torch.Generator] = None,
        progress: bool = False,
    ) -> "PairedDictionary":
        """Learn a paired dictionary from images (see the module docstring).

        Args:
            images: [C, H, W] tensors in [0, 1] (any sizes).
            representation: the HOG. Default: None (VLFeat UoCTTI, 8-pixel cells).
            num_atoms: K. Default: 1024.
            window: HOG cells per window side. Default: 5.
            lam: lasso weight. Default: 0.02.
            scales: each image is also used resized by these factors. Default: (1.0,).
            flips: add the mirrored images. Default: False.
            max_pairs: keep a random subset of this many pairs; None keeps all. Default: None.
            steps: mini-batch steps of the dictionary update. Default: 100.
            batch_size: pairs per step. Default: 400.
            generator: seeds the subset, the initial atoms (random pairs, as the authors'
                ``pickrandom``) and the batch order. Default: None (seed 0).
            progress: a progress bar. Default: False.

        Returns:
            The learned :class:`PairedDictionary` (its ``metadata`` has the data hash and the
            training settings and seconds).

        Raises:
            ValueError: no pairs (images smaller than a patch), or fewer pairs than atoms.
        """
        # scikit-learn is imported where it is used: it takes about a second to import, and
        # `import pyinvert` should not pay for it
        from sklearn.decomposition import MiniBatchDictionaryLearning
        from sklearn.exceptions import ConvergenceWarning

        start = time.perf_counter()
        rep = representation if representation is not None else HOGRepresentation()
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        X = pair_matrix(images, rep, window, scales, flips)
        if max_pairs is not None and X.shape[0] > max_pairs:
            X = X[torch.randperm(X.shape[0], generator=g)[:max_pairs]]
        if X.shape[0] < num_atoms:
            raise ValueError(
                f"PairedDictionary.fit: expected at least num_atoms={num_atoms} pairs, got "
                f"{X.shape[0]} (give more or larger images)"
            )
        Xn = X.numpy()  # float32; each batch goes to float64
        init = Xn[torch.randperm(Xn.shape[0], generator=g)[:num_atoms].numpy()].astype(np.float64)
        init = init / np.linalg.norm(init, axis=1, keepdims=True).clip(EPS)
        learner = MiniBatchDictionaryLearning(
            n_components=num_atoms,
            alpha=lam,
            batch_size=batch_size,
            fit_algorithm="cd",
            positive_code=True,
            dict_init=init,
            random_state=int(torch.randint(2**31 - 1, (), generator=g)),
            transform_algorithm="lasso_cd",
        )
        order = batches(Xn.shape[0], batch_size, steps, g)
        if progress:
            order = tqdm(order, desc="hoggle", unit="step")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for idx in order:
                learner.partial_fit(Xn[idx].astype(np.float64))
        D = torch.from_numpy(learner.components_).float()
        P2 = ((window + 2) * rep.cell_size) ** 2
        meta = {
            "data_hash": _ckpt.data_hash(images),
            "pairs": int(Xn.shape[0]),
            "steps": int(steps),
            "batch_size": int(batch_size),
            "scales": [float(v) for v in scales],
            "flips": bool(flips),
            "seconds": round(time.perf_counter() - start, 2),
        }
        return cls(D[:, :P2], D[:, P2:], representation=rep, window=window, lam=lam, metadata=meta)

    # ---- inversion ------------------------------------------------------------------------

    def encode(self, windows: Tensor) -> Tensor:
        """The positive lasso codes of HOG windows in V: argmin_{a >= 0} 0.5 ||phi - V a||^2
        + lam ||a||_1 with phi normalized as in training.

        Shape:
            - windows: :math:`(N, D n^2)`.
            - Output: :math:`(N, K)` (float64).
        """
        if windows.shape[0] == 0:
            return torch.zeros(0, self.num_atoms, dtype=torch.float64)
        return _lasso(normalize_rows(windows.detach().double().cpu()), self.hog, self.lam)

    def invert(self, codes: Tensor, image_size) -> Tensor:
        """Invert HOG maps: code every window with V, decode with U, average the overlaps.

        Args:
            codes: HOG maps of this dictionary's HOG, [B, D, H_c, W_c].
            image_size: (H, W) of the images the codes were computed from.

        Returns:
            Gray images in [0, 1], [B, 1, H, W] (float32, CPU).

        Shape:
            - codes: :math:`(B, D, H_c, W_c)` with :math:`H_c = \\lfloor (H + \\lfloor s/2
              \\rfloor) / s \\rfloor` (the HOG's own size rule; :math:`W_c` likewise).
            - Output: :math:`(B, 1, H, W)`.

        Raises:
            ValueError: codes of another shape than this HOG gives for ``image_size``.
        """
        H, W = (int(v) for v in image_size)
        s, n, P = self.rep.cell_size, self.window, self.patch_size
        cells = ((H + s // 2) // s, (W + s // 2) // s)
        if codes.dim() != 4 or codes.shape[1] != self.channels or tuple(codes.shape[-2:]) != cells:
            raise ValueError(
                f"PairedDictionary.invert: expected codes of shape (B, {self.channels}, "
                f"{cells[0]}, {cells[1]}) for {H}x{W} images, got {list(codes.shape)}"
            )
        B = codes.shape[0]
        if B == 0:
            return torch.zeros(0, 1, H, W)
        # too few cells for a window: pad with empty cells after the map (invertHOG.m)
        c = codes.detach().double().cpu()
        c = F.pad(c, (0, max(n - cells[1], 0), 0, max(n - cells[0], 0)))
        Hc, Wc = c.shape[-2:]
        windows = hog_windows(c, n)
        L = windows.shape[1]
        alpha = self.encode(windows.reshape(B * L, -1))
        patches = (alpha @ self.gray.double()).reshape(B, L, P * P).transpose(1, 2)
        # canvas pixel 0 is image pixel -s: window (i, j) covers [(i - 1) s, (i + n + 1) s)
        canvas = ((Hc + 2) * s, (Wc + 2) * s)
        weight = self.blend_weights().reshape(1, P * P, 1)
        total = F.fold(patches * weight, canvas, P, stride=s)
        count = F.fold(weight.expand(1, -1, L), canvas, P, stride=s)
        image = (total / count)[:, :, s : s + H, s : s + W]
        lo = image.amin((1, 2, 3), keepdim=True)
        span = image.amax((1, 2, 3), keepdim=True) - lo
        flat = span <= 1e-12
        image = torch.where(flat, torch.full_like(image, 0.5), (image - lo) / span.clamp_min(1e-12))
        return image.float()

    def blend_weights(self) -> Tensor:
        """The weight of each patch pixel in the average of overlapping patches: a Gaussian
        of standard deviation :attr:`blend` pixels around the patch centre (flat when None),
        [P, P] float64."""
        P = self.patch_size
        if self.blend is None:
            return torch.ones(P, P, dtype=torch.float64)
        r = torch.arange(P, dtype=torch.float64) - (P - 1) / 2
        g = torch.exp(-0.5 * (r / self.blend) ** 2)
        return g[:, None] * g[None, :]

    def invert_images(self, images: Tensor) -> Tensor:
        """HOGgle of images: their HOG (this dictionary's), inverted. [B, C, H, W] in [0, 1]
        to [B, 1, H, W] in [0, 1]."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError(
                f"PairedDictionary.invert_images: expected images of shape (B, C, H, W), got "
                f"{list(images.shape) if isinstance(images, Tensor) else type(images).__name__}"
            )
        with torch.no_grad():
            codes = self.rep(self.rep.preprocess(images.float().cpu()))
        return self.invert(codes, images.shape[-2:])

    def reconstruct(self, patches: Tensor, windows: Tensor) -> Tensor:
        """The stacked, normalized pairs ``[x; phi]`` and their reconstruction ``[U a; V a]``
        with the joint code ``a`` (the training objective's terms), both [N, P*P + D n^2]."""
        X = torch.cat([normalize_rows(patches.double()), normalize_rows(windows.double())], 1)
        D = torch.cat([self.gray, self.hog], 1).double()
        return X, _lasso(X, D, self.lam) @ D

    # ---- files ----------------------------------------------------------------------------

    def save(self, path, *, half: bool = True) -> Path:
        """Write the dictionary atomically (:func:`pyinvert.training.save_checkpoint`), with
        its HOG config, K, lam, window, data hash and training details.

        Args:
            path: the file.
            half: store the atoms as float16 (half the size; inversion computes in float64).
                Default: True.
        """
        dtype = torch.float16 if half else torch.float32
        meta = {
            **self.metadata,
            "kind": KIND,
            "hog": self.config,
            "window": self.window,
            "num_atoms": self.num_atoms,
            "lam": self.lam,
        }
        state = {"gray": self.gray.to(dtype), "hog": self.hog.to(dtype)}
        return _ckpt.save_checkpoint(path, step=meta.get("steps", 0), metadata=meta, state=state)

    @classmethod
    def load(
        cls, path=None, *, representation: Optional[HOGRepresentation] = None, **expect
    ) -> "PairedDictionary":
        """Read a saved dictionary.

        Args:
            path: the file. Default: None (the shipped one, :data:`SHIPPED`).
            representation: the HOG it must have been learned for; None takes the file's.
                Default: None.
            **expect: other metadata that must match (``window=5``, ``data_hash=...``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a paired dictionary, or its metadata differs from ``expect`` or
                from ``representation`` (the message names the entry and both values).
        """
        path = SHIPPED if path is None else Path(path)
        want = {"kind": KIND, **expect}
        if representation is not None:
            want["hog"] = hog_config(representation)
        payload = _ckpt.load_checkpoint(path, expect=want, caller="PairedDictionary.load")
        meta = payload["metadata"]
        rep = representation
        if rep is None:
            h = meta["hog"]
            rep = HOGRepresentation(
                cell_size=h["cell_size"],
                bilinear_orientations=h["bilinear_orientations"],
                num_orientations=h["num_orientations"],
                variant=h["variant"],
            )
        extra = {k: v for k, v in meta.items() if k not in ("kind", "hog", "window", "lam")}
        return cls(
            payload["state"]["gray"],
            payload["state"]["hog"],
            representation=rep,
            window=meta["window"],
            lam=meta["lam"],
            metadata=extra,
        )

    def __repr__(self) -> str:
        return (
            f"PairedDictionary(num_atoms={self.num_atoms}, window={self.window}, "
            f"lam={self.lam}, hog={self.config})"
        )


def _lasso(X: Tensor, D: Tensor, lam: float) -> Tensor:
    """argmin_{a >= 0} 0.5 ||x - D^T a||^2 + lam ||a||_1 per row x of X (scikit-learn's
    coordinate descent; its rare "did not converge" warnings at a 1e-7 duality gap are
    silenced). X [N, F], D [K, F] -> [N, K] float64."""
    from sklearn.decomposition import sparse_encode
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = sparse_encode(
            X.double().numpy(), D.double().numpy(), algorithm="lasso_cd", alpha=lam, positive=True
        )
    return torch.from_numpy(a)
