"""Atomic file replacement: a reader (or a crash) sees the old file or the new one, never half.

Every write goes to a temporary file in the target's directory, is flushed and fsynced, and
is renamed over the target with `os.replace` (atomic on POSIX within one file system); then
the directory is fsynced so the rename itself survives a power loss. Any OS failure (full
disk, permission denied, a missing directory) becomes a `RunFolderError` naming the file,
and the temporary file is removed, so the previous version stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.errors import RunFolderError


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(directory: Path | str) -> None:
    """Make the entries of `directory` (a new file, a rename) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def describe_os_error(exc: OSError) -> str:
    """The OS reason alone ('No space left on device'), without the path Python appends."""
    return exc.strerror or str(exc)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    created = False
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        created = True
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        created = False
        fsync_directory(path.parent)
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {describe_os_error(exc)}") from exc
    finally:
        if created:
            with contextlib.suppress(OSError):
                temp.unlink()


def atomic_write_text(path: Path | str, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Replace `path` with `obj` as indented, strictly valid JSON (NaN and infinity refused).

    NumPy scalars and arrays are written as the numbers and lists they hold.
    """
    bad = non_finite_path(obj)
    if bad is not None:
        raise RunFolderError(
            f"cannot write {path}: {bad} is NaN or infinite, which JSON cannot hold "
            "(write null instead; see finite_or_null)"
        )
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as exc:
        raise RunFolderError(f"cannot write {path}: {exc}") from exc
    atomic_write_text(path, text + "\n")


def json_default(value: Any) -> Any:
    """`default=` for json.dumps: NumPy scalars and arrays as plain numbers and lists."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} is not JSON serializable")


def finite_or_null(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (NumPy ones too) replaced by None."""
    if isinstance(obj, Mapping):
        return {key: finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def non_finite_path(obj: Any, where: str = "the value") -> str | None:
    """Where in `obj` the first NaN or infinite float sits ('key metrics.loss'), or None."""
    if isinstance(obj, np.ndarray):
        return non_finite_path(obj.tolist(), where)
    if isinstance(obj, Mapping):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        return where
    else:
        return None
    prefix = "key " if where == "the value" else f"{where}."
    for key, value in items:
        found = non_finite_path(value, f"{prefix}{key}")
        if found is not None:
            return found
    return None
