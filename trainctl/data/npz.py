"""Arrays from a NumPy .npz archive: inputs, targets and optionally a test split.

Loaded with allow_pickle=False, so an archive holding Python objects is refused rather than
executed. Before NumPy reads an array, its .npy header is checked against the archive: an
array of objects, one that declares more bytes than it holds, or more than the machine's
memory (a zip bomb), is refused before anything is allocated. Images may be (N, H, W) or
NHWC (or NCHW with `layout: nchw`); uint8 images are scaled to [0, 1].
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data import files
from trainctl.data.dataset import DatasetEntry, Loaded
from trainctl.data.files import require_file
from trainctl.data.targets import TASK_CHOICES, build, check_numeric, decide_task, to_float32
from trainctl.errors import DataError
from trainctl.spec import Arg

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# What zipfile and NumPy raise on damaged archives: NotImplementedError and RuntimeError
# for compression methods and encryption flags a flipped bit can announce.
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError, struct.error)  # fmt: skip
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head not in _ZIP_MAGIC:
        found = "a single .npy array" if head.startswith(b"\x93NUM") else "no zip header"
        raise DataError(f"{path}: not an .npz archive (found {found}); write it with np.savez")
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None


def _member(archive: np.lib.npyio.NpzFile, path: Path, key: str, option: str) -> np.ndarray:
    if key not in archive.files:
        raise DataError(
            f"{path}: no array {key!r} (option {option}); the archive holds "
            f"{', '.join(map(repr, archive.files)) or 'nothing'}"
        )
    try:
        _check_header(archive, path, key)
        array = archive[key]
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: array {key!r} cannot be read ({exc})") from None
    if array.ndim == 0 or len(array) == 0:
        raise DataError(f"{path}: array {key!r} holds no samples (shape {array.shape})")
    check_numeric(array, f"{path}: array {key!r}")
    return array


def _check_header(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> None:
    """Refuse the array `key` on its .npy header alone: objects, or a size it cannot have."""
    info = archive.zip.getinfo(key + ".npy" if key + ".npy" in archive.zip.namelist() else key)
    with archive.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _HEADER_READERS:
            raise DataError(f"{path}: array {key!r} is in .npy format {version}, not 1.0 or 2.0")
        shape, _, dtype = _HEADER_READERS[version](member)
        held = info.file_size - member.tell()
    where = f"{path}: array {key!r}"
    if dtype.hasobject:
        raise DataError(
            f"{where} cannot be read (Object arrays cannot be loaded when allow_pickle=False): "
            "it holds Python objects, which trainctl never unpickles; save arrays of numbers"
        )
    declared = math.prod(shape) * dtype.itemsize
    if declared != held:
        raise DataError(
            f"{where} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
            f"{held:,} bytes: the archive is damaged"
        )
    if declared > files.memory_bytes():
        raise DataError(
            f"{where} needs {declared:,} bytes, more than this machine's memory "
            f"({files.memory_bytes():,} bytes)"
        )


def _inputs(array: np.ndarray, where: str, layout: str) -> np.ndarray:
    """Inputs as (N, F) features or NHWC images; uint8 images scaled to [0, 1]."""
    if layout == "nchw" and array.ndim != 4:
        raise DataError(f"{where}: layout nchw needs 4-d images, found shape {array.shape}")
    if array.ndim > 4:
        raise DataError(
            f"{where}: expected (N, F) features or (N, H, W[, C]) images, found shape {array.shape}"
        )
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 3:
        array = array[..., None]
    elif array.ndim == 4 and layout == "nchw":
        array = array.transpose(0, 2, 3, 1)
    if array.ndim == 4 and array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    return to_float32(array, where)


def _pair(
    archive: np.lib.npyio.NpzFile, path: Path, options: dict[str, Any], split: str
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The (inputs, targets) arrays of `split` ('' or '_test') and the target array's key."""
    x_key, y_key = options["x" + split], options["y" + split]
    x = _member(archive, path, x_key, "x" + split)
    y = _member(archive, path, y_key, "y" + split)
    if len(x) != len(y):
        raise DataError(f"{path}: {x_key!r} has {len(x)} samples but {y_key!r} has {len(y)}")
    return x, y, x_key, y_key


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    file = require_file(path, "an .npz archive of arrays")
    with _open(file) as archive:
        test_keys = [key for key in (options["x_test"], options["y_test"]) if key in archive.files]
        if len(test_keys) == 1:
            raise DataError(
                f"{file}: has {test_keys[0]!r} but not its partner of "
                f"{options['x_test']!r} / {options['y_test']!r}; a test split needs both"
            )
        splits = ("", "_test") if test_keys else ("",)
        pairs = [_pair(archive, file, options, split) for split in splits]
    task, num_classes = decide_task(
        [(y, f"{file}: array {y_key!r}") for _, y, _, y_key in pairs], options["task"]
    )
    datasets = [
        build(
            _inputs(x, f"{file}: array {x_key!r}", options["layout"]),
            y,
            task,
            num_classes,
            f"{file}: arrays {x_key!r}, {y_key!r}",
        )  # fmt: skip
        for x, y, x_key, y_key in pairs
    ]
    train, test = datasets[0], datasets[1] if len(datasets) > 1 else None
    if test is not None and test.inputs.shape[1:] != train.inputs.shape[1:]:
        raise DataError(
            f"{file}: test samples of shape {test.inputs.shape[1:]} do not match the training "
            f"samples' {train.inputs.shape[1:]}"
        )
    return Loaded(train, test, str(file))


def read_inputs(path: Path, key: str | None = None, layout: str = "nhwc") -> np.ndarray:
    """The array `key` of archive `path` as inputs, checked and converted as `load` reads
    its inputs; no key: "x", or the archive's only array."""
    file = require_file(path, "an .npz archive of arrays")
    with _open(file) as archive:
        if key is None:
            key = archive.files[0] if len(archive.files) == 1 else "x"
        array = _member(archive, file, key, "--key")
    return _inputs(array, f"{file}: array {key!r}", layout)


ENTRY = DatasetEntry(
    name="npz",
    help=(
        "arrays from a NumPy .npz archive (path: the file): inputs (N, F) or images "
        "(N, H, W[, C]), targets (N,) labels or (N, T) values; a test split when the "
        "x_test and y_test arrays are present"
    ),
    args={
        "x": Arg("str", "x", help="name of the input array"),
        "y": Arg("str", "y", help="name of the target array"),
        "x_test": Arg("str", "x_test", help="name of the test inputs, used when present"),
        "y_test": Arg("str", "y_test", help="name of the test targets, used when present"),
        "task": Arg(
            "str",
            "auto",
            choices=TASK_CHOICES,
            help="auto: integer-valued targets are class labels (classes = max + 1)",
        ),
        "layout": Arg(
            "str", "nhwc", choices=("nhwc", "nchw"), help="axis order of 4-d image arrays"
        ),
    },
    load=load,
    needs_path=True,
)
