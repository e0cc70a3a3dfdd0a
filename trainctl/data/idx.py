"""MNIST and Fashion-MNIST: four IDX files (gzipped or not) in one folder.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values. Both sets store unsigned
bytes: 28x28 images (magic 0x00000803) and labels 0..9 (magic 0x00000801).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, Loaded, LoadFn
from trainctl.data.files import GZIP_MAGIC, find_file, read_bytes, require_folder
from trainctl.errors import DataError

_UBYTE = 0x08
IMAGE_SIZE = 28
NUM_CLASSES = 10
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_OBTAIN = "`trainctl data fetch mnist` (or data.download: true)"
FASHION_MNIST_OBTAIN = "`trainctl data fetch fashion_mnist` (or data.download: true)"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in IDX file `path`, which must have `ndim` dimensions."""
    data = read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX header")
    magic = int.from_bytes(data[:4], "big")
    expected = (_UBYTE << 8) | ndim
    if magic != expected:
        hint = " (the data is gzipped: name the file .gz)" if data[:2] == GZIP_MAGIC else ""
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(IDX, unsigned bytes, {ndim} dimension(s)){hint}"
        )
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than an IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != size:
        problem = "truncated" if len(data) < size else "trailing bytes"
        raise DataError(
            f"{path}: {len(data)} bytes, expected {size} for shape "
            f"{'x'.join(map(str, shape))} ({problem})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_split(folder: Path, split: str, what: str, obtain: str) -> tuple[ArrayDataset, list[str]]:
    image_name, label_name = SPLIT_FILES[split]
    image_path = find_file(
        folder, (image_name, image_name + ".gz"), f"{what} {split} images", obtain
    )
    label_path = find_file(
        folder, (label_name, label_name + ".gz"), f"{what} {split} labels", obtain
    )
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{image_path}: images of {images.shape[1]}x{images.shape[2]} pixels, "
            f"expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{label_path}: {len(labels)} labels for the {len(images)} images in {image_path.name}"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        index = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{label_path}: label {labels[index]} at index {index}, expected 0..{NUM_CLASSES - 1}"
        )
    inputs = images.astype(np.float32)[..., None] / np.float32(255)
    dataset = ArrayDataset(inputs, labels.astype(np.int64), "classification", NUM_CLASSES)
    return dataset, [image_path.name, label_path.name]


def _loader(what: str, obtain: str) -> LoadFn:
    def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
        folder = require_folder(path, f"the {what} IDX files", obtain)
        train, train_names = _read_split(folder, "train", what, obtain)
        test, test_names = _read_split(folder, "test", what, obtain)
        return Loaded(train, test, f"{folder} ({', '.join(train_names + test_names)})")

    return load


_FILES_HELP = (
    "path: a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each gzipped (.gz) or not "
    "(null: its folder in the data cache)"
)

MNIST = DatasetEntry(
    name="mnist",
    help=f"MNIST handwritten digits, 28x28x1, 10 classes, own test split; {_FILES_HELP}",
    load=_loader("MNIST", MNIST_OBTAIN),
    needs_path=True,
    has_test_split=True,
    downloadable=True,
    obtain=MNIST_OBTAIN,
)

FASHION_MNIST = DatasetEntry(
    name="fashion_mnist",
    help=f"Fashion-MNIST clothing images, 28x28x1, 10 classes, own test split; {_FILES_HELP}",
    load=_loader("Fashion-MNIST", FASHION_MNIST_OBTAIN),
    needs_path=True,
    has_test_split=True,
    downloadable=True,
    obtain=FASHION_MNIST_OBTAIN,
)
