"""The bundled sample photos (CC0 / public domain; see LICENSES.md)."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
SAMPLE_NAMES = ("astronaut", "camera", "chelsea", "coffee", "rocket")


def sample_path(name: str) -> Path:
    """Path of a bundled sample photo, by name (one of SAMPLE_NAMES)."""
    if name not in SAMPLE_NAMES:
        raise ValueError(f"sample_path: expected one of {SAMPLE_NAMES}, got {name!r}")
    return DATA_DIR / f"{name}.png"


def sample_paths() -> list:
    """Paths of all bundled sample photos, in a fixed order."""
    return [sample_path(name) for name in SAMPLE_NAMES]
