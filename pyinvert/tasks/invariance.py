"""Invariance maps (IJCV 2016 Sec. 5.2, the variety of pre-images): where the reconstructions
of one image from different random starts differ, the representation is invariant."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from torch import Tensor

from pyinvert import figures
from pyinvert import io as _io
from pyinvert.optim.options import RunOptions
from pyinvert.tasks.inversion import invert
from pyinvert.tasks.result import Result

RUN_FIELDS = tuple(RunOptions.__dataclass_fields__)


@dataclass
class InvarianceResult(Result):
    """What :func:`invariance_map` returns.

    Attributes:
        spread: per-pixel standard deviation across the R reconstructions (mean over colour
            channels), in [0, 1] image units, [B, H, W].
        mean_spread: its mean per image, [B].
        inversion: the :class:`pyinvert.tasks.inversion.InversionResult` with restarts.
    """

    spread: Tensor
    mean_spread: Tensor
    inversion: object

    @property
    def restarts(self) -> int:
        return self.inversion.restarts

    def summary(self) -> dict:
        return {
            "names": self.inversion.names,
            "mean_spread": self.mean_spread.tolist(),
            "restarts": self.restarts,
        }

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """Each reconstruction, ``<name>-spread.png`` (the heat map) and ``invariance.json``."""
        directory = Path(directory)
        names = (
            list(names)
            if names is not None
            else (self.inversion.names or [f"image{i:03d}" for i in range(self.spread.shape[0])])
        )
        written = self.inversion.save(directory, names)
        top = float(self.spread.max()) if self.spread.numel() else 1.0
        for i, n in enumerate(names):
            written.append(
                _io.save_image(
                    directory / f"{n}-spread.png", figures.heat_map(self.spread[i], vmax=top)
                )
            )
        written.append(
            _io.write_json(
                directory / "invariance.json",
                _io.nan_to_none(
                    {
                        "names": names,
                        "mean_spread": self.mean_spread.tolist(),
                        "max_spread": top,
                        "restarts": self.inversion.restarts,
                    }
                ),
            )
        )
        return written


def invariance_map(
    images, representation, *, restarts: int = 4, options: Optional[RunOptions] = None, **kwargs
) -> InvarianceResult:
    """Invert each image ``restarts`` times from different random starts (IJCV 2016 Sec. 5.2:
    the variety of pre-images) and measure, per pixel, how much the reconstructions differ:
    what the representation is invariant to varies most.

    Args:
        images: images as for :func:`pyinvert.invert`.
        representation: the representation.
        restarts: R >= 2 reconstructions per image (``options.restarts`` when this is left
            at 4 and options sets it). Default: 4.
        options: a :class:`pyinvert.optim.options.RunOptions`. Default: None.
        **kwargs: any other :func:`pyinvert.invert` option (recipe, steps, generator, ...).

    Returns:
        An :class:`InvarianceResult`.
    """
    fn = "invariance_map"
    if options is not None and options.restarts != 1 and restarts == 4:
        restarts = options.restarts
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 2:
        raise ValueError(f"{fn}: expected restarts to be an int >= 2, got {restarts!r}")
    run = {k: kwargs.pop(k) for k in RUN_FIELDS if k in kwargs}
    opts = RunOptions.resolve(fn, options, **run, restarts=restarts)
    res = invert(images, representation=representation, options=opts, **kwargs)
    spread = res.images.std(dim=1, unbiased=False).mean(1).cpu()
    return InvarianceResult(spread=spread, mean_spread=spread.flatten(1).mean(1), inversion=res)
