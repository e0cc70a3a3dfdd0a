"""Small image files and runs for the predict tests (a module, not conftest.py: test files
import from it, and another folder's conftest may hold that name)."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from trainctl.cli import app

NPZ_CONFIG = """\
name: features
mode: graph
data:
  dataset: npz
  path: features.npz
  batch_size: 8
  val_split: 0.2
  test_split: 0.3
  transforms: [{normalize: {mean: 0.5, std: 2.0}}]
model:
  layers: [linear: {out: 16}, batch_norm, relu, dropout: {p: 0.5}, linear: {out: 4}]
train: {max_steps: 12}
"""


def write_png(path: Path, size: tuple[int, int], value: int) -> Path:
    """A grayscale PNG of `size` (height, width), every pixel `value`."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


def train(folder: Path, config: str) -> Path:
    (folder / "c.yaml").write_text(config)
    result = CliRunner().invoke(
        app, ["train", str(folder / "c.yaml"), "--runs-root", str(folder / "runs"), "-q"]
    )
    assert result.exit_code == 0, result.output
    (run,) = (folder / "runs").iterdir()
    return run
