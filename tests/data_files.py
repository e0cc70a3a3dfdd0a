"""Writers of small files in the real on-disk formats (IDX, CIFAR-10 binary, image folders),
for the tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

MNIST_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000080N, big-endian dimensions, the values."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    """`data` at `path` (plus .gz, gzipped, when `gz`)."""
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(folder: Path, sizes=(6, 4), gz: bool = False, seed: int = 0) -> dict:
    """Four IDX files of random 28x28 images and labels; returns the arrays written."""
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, size in zip(("train", "test"), sizes, strict=True):
        images = generator.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = generator.integers(0, 10, size=size, dtype=np.uint8)
        image_name, label_name = MNIST_NAMES[split]
        write(folder / image_name, idx_bytes(images), gz)
        write(folder / label_name, idx_bytes(labels), gz)
        arrays[split] = (images, labels)
    return arrays


def cifar_bytes(images_chw: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: a label byte, then the 3x32x32 image in CHW order."""
    records = np.concatenate(
        [np.asarray(labels, np.uint8)[:, None], images_chw.reshape(len(labels), -1)], axis=1
    )
    return records.astype(np.uint8).tobytes()


def write_cifar(folder: Path, per_batch: int = 2, test_size: int = 3, seed: int = 0) -> dict:
    """data_batch_1..5.bin and test_batch.bin of random records; returns the arrays written."""
    generator = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train": [], "test": []}
    names = [(f"data_batch_{i}.bin", "train", per_batch) for i in range(1, 6)]
    for name, split, size in [*names, ("test_batch.bin", "test", test_size)]:
        images = generator.integers(0, 256, size=(size, 3, 32, 32), dtype=np.uint8)
        labels = generator.integers(0, 10, size=size, dtype=np.uint8)
        (folder / name).write_bytes(cifar_bytes(images, labels))
        arrays[split].append((images, labels))
    return {
        split: (np.concatenate([i for i, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in arrays.items()
    }


IMAGE_FORMATS = (".png", ".jpg", ".jpeg")
CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 40, 200), "owl": (40, 200, 40)}


def write_image_folder(
    folder: Path, classes=("dog", "cat", "owl"), per_class: int = 4, seed: int = 0
) -> dict[str, list[Path]]:
    """A folder per class of small images, PNG and JPEG in turn, of several sizes, each
    mostly its class's colour; the paths written, by class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(per_class):
            height, width = 6 + 2 * i, 8 + i
            noise = rng.integers(0, 30, (height, width, 3))
            pixels = (np.array(CLASS_COLOURS[name]) + noise).astype(np.uint8)
            path = folder / name / f"img{i}{IMAGE_FORMATS[i % len(IMAGE_FORMATS)]}"
            Image.fromarray(pixels).save(path)
            written[name].append(path)
    return written


def stand_in_data(config_name: str, folder: Path) -> list[str]:
    """For an example config on a downloaded set (MNIST, Fashion-MNIST, CIFAR-10): tiny files
    in its real format under `folder`, and the override that points the config at them."""
    if "mnist" in config_name:
        write_mnist(folder, sizes=(40, 10))
    elif "cifar" in config_name:
        write_cifar(folder, per_batch=8, test_size=6)
    else:
        return []
    return [f"data.path={folder}"]
