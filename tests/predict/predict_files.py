"""Small image files for the predict tests."""

from pathlib import Path

import numpy as np


def write_png(path: Path, size: tuple[int, int], value: int) -> Path:
    """A grayscale PNG of `size` (height, width), every pixel `value`."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path
