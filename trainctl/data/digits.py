"""The embedded default data set: UCI handwritten digits, 1,797 8x8 images, 10 classes.

The file ships inside the wheel as trainctl/data/embedded/digits.csv.gz (pyproject's
force-include) and lives in the source checkout as datasets/digits.csv.gz; both are looked
for, in that order, so an installed trainctl and a checkout both train out of the box.
Each row is 64 pixel counts (0..16, row-major) and the digit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.csvfile import read_table
from trainctl.data.dataset import ArrayDataset, DatasetEntry, Loaded
from trainctl.errors import DataError

FILE_NAME = "digits.csv.gz"
CANDIDATES = (
    Path(__file__).parent / "embedded" / FILE_NAME,
    Path(__file__).resolve().parents[2] / "datasets" / FILE_NAME,
)
SIDE, MAX_PIXEL, NUM_CLASSES = 8, 16, 10
ORIGIN = "the UCI repository (Alpaydin & Kaynak), via scikit-learn; see datasets/README.md"


def digits_file() -> Path:
    """The first copy of the digits file found (packaged, then source checkout)."""
    for path in CANDIDATES:
        if path.is_file():
            return path
    raise DataError(
        f"the embedded digits file is missing: looked for {' and '.join(map(str, CANDIDATES))}; "
        "reinstall trainctl, or restore datasets/digits.csv.gz in the checkout"
    )


def read_digits(path: Path) -> ArrayDataset:
    """NHWC (N, 8, 8, 1) images in [0, 1] (pixel / 16) and labels 0..9."""
    table, _ = read_table(path, header=False)
    if table.shape[1] != SIDE * SIDE + 1:
        raise DataError(f"{path}: {table.shape[1]} columns, expected {SIDE * SIDE + 1}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL:
        raise DataError(f"{path}: pixel values outside 0..{MAX_PIXEL}")
    if not np.isin(labels, np.arange(NUM_CLASSES)).all():
        raise DataError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    inputs = (pixels / MAX_PIXEL).astype(np.float32).reshape(-1, SIDE, SIDE, 1)
    return ArrayDataset(inputs, labels.astype(np.int64), "classification", NUM_CLASSES)


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    file = digits_file()
    return Loaded(read_digits(file), None, str(file))


ENTRY = DatasetEntry(
    name="digits",
    help=(
        "embedded: UCI handwritten digits, 1,797 8x8x1 images in [0, 1], 10 classes "
        "(CC BY 4.0); needs no path"
    ),
    load=load,
    obtain=ORIGIN,
)
