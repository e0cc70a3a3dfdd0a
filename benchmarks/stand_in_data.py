"""Write small random stand-ins for MNIST, Fashion-MNIST and CIFAR-10 in their real formats.

For machines that cannot download the real sets (the lent GPU machine, CI): every example
config then runs end to end through the real readers, with `--set data.path=FOLDER/NAME`.
The numbers are random, so accuracy means nothing; shapes, dtypes and files are the real ones.

    python benchmarks/stand_in_data.py OUT_FOLDER [--train 1024 --test 256]
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped (as the mirrors serve them)."""
    header = struct.pack(">I", (0x08 << 8) | array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def write_mnist_like(folder: Path, train: int, test: int, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))


def write_cifar10(folder: Path, train: int, test: int, rng: np.random.Generator) -> None:
    """Five training batches and one test batch: records of 1 label byte + 3072 CHW bytes."""
    folder.mkdir(parents=True, exist_ok=True)

    def batch(count: int) -> bytes:
        records = rng.integers(0, 256, (count, 1 + 3072), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, count)
        return records.tobytes()

    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(batch(max(1, train // 5)))
    (folder / "test_batch.bin").write_bytes(batch(test))


def write_all(root: Path, train: int = 1024, test: int = 256, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_mnist_like(root / "mnist", train, test, rng)
    write_mnist_like(root / "fashion_mnist", train, test, rng)
    write_cifar10(root / "cifar10", train, test, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--test", type=int, default=256)
    args = parser.parse_args()
    write_all(args.root, args.train, args.test)
    print(f"stand-ins for mnist, fashion_mnist and cifar10 written under {args.root}")


if __name__ == "__main__":
    main()
