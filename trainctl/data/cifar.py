"""CIFAR-10, binary version: data_batch_1..5.bin and test_batch.bin.

Each file is a run of 3073-byte records: one label byte (0..9), then a 32x32 colour image as
3072 bytes in channel-major (CHW) order, which becomes NHWC float32 in [0, 1] here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, Loaded
from trainctl.data.files import find_file, read_bytes, require_folder
from trainctl.errors import DataError

SIDE, CHANNELS, NUM_CLASSES = 32, 3, 10
RECORD = 1 + CHANNELS * SIDE * SIDE
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
SUBFOLDER = "cifar-10-batches-bin"
CIFAR10_OBTAIN = "`trainctl data fetch cifar10` (or data.download: true)"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NHWC uint8 images and int64 labels of one CIFAR-10 binary batch file."""
    data = read_bytes(path)
    if not data or len(data) % RECORD:
        raise DataError(
            f"{path}: {len(data)} bytes, expected a non-zero multiple of {RECORD} "
            "(1 label byte + 3072 image bytes per record): truncated or not a CIFAR-10 .bin file"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        index = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{path}: record {index} has label {labels[index]}, expected 0..{NUM_CLASSES - 1}"
        )
    images = records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, labels


def _dataset(paths: list[Path]) -> ArrayDataset:
    batches = [read_batch(path) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    inputs = images.astype(np.float32) / np.float32(255)
    return ArrayDataset(inputs, labels, "classification", NUM_CLASSES)


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    folder = require_folder(path, "the CIFAR-10 binary batches", CIFAR10_OBTAIN)
    if (folder / SUBFOLDER).is_dir():
        folder = folder / SUBFOLDER
    what = f"a CIFAR-10 batch (extract cifar-10-binary.tar.gz into {folder})"
    train_paths = [find_file(folder, (name,), what, CIFAR10_OBTAIN) for name in TRAIN_FILES]
    test_path = find_file(folder, (TEST_FILE,), what, CIFAR10_OBTAIN)
    source = f"{folder} (data_batch_1..5.bin, {TEST_FILE})"
    return Loaded(_dataset(train_paths), _dataset([test_path]), source)


ENTRY = DatasetEntry(
    name="cifar10",
    help=(
        "CIFAR-10 colour images, 32x32x3, 10 classes, own test split; path: the folder with "
        "data_batch_1..5.bin and test_batch.bin (or its cifar-10-batches-bin subfolder; "
        "null: its folder in the data cache)"
    ),
    load=load,
    needs_path=True,
    has_test_split=True,
    downloadable=True,
    obtain=CIFAR10_OBTAIN,
)
