"""The :class:`Result` base every task's result shares: ``save()`` (PNGs and a JSON record,
each written atomically), ``summary()`` and the per-row reshaping of the engine's rows."""

from pathlib import Path
from typing import List, Optional, Sequence

from torch import Tensor

from pyinvert import io as _io


def per_image(t: Optional[Tensor], B: int, R: int) -> Optional[Tensor]:
    """The engine's rows [B R, ...] as [B, R, ...] when R > 1 (row = image * R + restart)."""
    return t.reshape(B, R, *t.shape[1:]) if (R > 1 and t is not None) else t


class Result:
    """Base of the tasks' results (subclasses are dataclasses with ``images``, ``settings``,
    ``names`` and the history fields listed in ``HISTORIES``).

    ``save(directory)`` writes every image as ``<name>.png`` (``<name>-r<k>.png`` with
    restarts) and ``result.json``: the settings, :meth:`summary` and the histories.
    """

    HISTORIES = ("loss_history",)

    def summary(self) -> dict:
        raise NotImplementedError

    @property
    def restarts(self) -> int:
        return int(self.settings.get("restarts", 1))

    def file_names(self, names: Optional[Sequence[str]] = None) -> List[str]:
        """``names``, else the result's own names, else image000, image001, ..."""
        B = self.images.shape[0]
        names = (
            list(names)
            if names is not None
            else (self.names or [f"image{i:03d}" for i in range(B)])
        )
        if len(names) != B:
            raise ValueError(f"{type(self).__name__}.save: expected {B} names, got {len(names)}")
        return names

    def save(self, directory, names: Optional[Sequence[str]] = None) -> List[Path]:
        """Write the images and ``result.json`` into ``directory``. Returns the paths."""
        directory = Path(directory)
        names = self.file_names(names)
        written = _io.save_image_rows(directory, self.images, names)
        payload = {
            "settings": self.settings,
            **self.summary(),
            "names": names,
            **{k: getattr(self, k).tolist() for k in self.HISTORIES},
        }
        written.append(_io.write_json(directory / "result.json", _io.nan_to_none(payload)))
        return written
