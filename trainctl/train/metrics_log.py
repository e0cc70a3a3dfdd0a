"""metrics.jsonl: one JSON object per line, appended as training goes, never rewritten in place.

Durability: each record goes to the file in a single `os.write` as soon as it is appended
(no user-space buffer), so a killed process (SIGKILL, a crash of Python) loses nothing it
appended. `os.fsync` runs every `fsync_every` records and on `close()`: a power loss or kernel
crash can take at most the last `fsync_every - 1` lines, and a step does not pay for an fsync
(milliseconds on some disks). A crash in the middle of a write leaves a torn last line
without its newline: `read_metrics` skips it, `repair_metrics` cuts it off, and `MetricsLog`
cuts it off before its first append so that a new line never glues onto a torn one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainctl.errors import RunFolderError
from trainctl.train.atomic import (
    atomic_write_bytes,
    describe_os_error,
    finite_or_null,
    json_default,
    write_all,
)

DEFAULT_FSYNC_EVERY = 10


class MetricsLog:
    """Appends records to a metrics.jsonl file; opens (and repairs) it on the first append.

    Opening lazily lets a resume rewrite the file (`truncate_after_step` replaces it) after
    the log object exists. NaN and infinite numbers are written as null.
    """

    def __init__(self, path: Path | str, fsync_every: int = DEFAULT_FSYNC_EVERY) -> None:
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        self.path = Path(path)
        self.fsync_every = fsync_every
        self._fd: int | None = None
        self._unsynced = 0

    def append(self, record: Mapping[str, Any]) -> None:
        """Write `record` as one line; it is in the file (the OS's cache) when this returns."""
        if not isinstance(record, Mapping):
            raise TypeError(f"a metrics record is a mapping, got {type(record).__name__}")
        line = json.dumps(finite_or_null(record), allow_nan=False, default=json_default) + "\n"
        try:
            if self._fd is None:
                repair_metrics(self.path)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            write_all(self._fd, line.encode("utf-8"))
            self._unsynced += 1
            if self._unsynced >= self.fsync_every:
                self._sync()
        except OSError as exc:
            raise RunFolderError(f"cannot write {self.path}: {describe_os_error(exc)}") from exc

    def _sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
        self._unsynced = 0

    def close(self) -> None:
        """fsync what is left and close the file; appending afterwards opens it again."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._unsynced:
                os.fsync(fd)
        except OSError as exc:
            raise RunFolderError(f"cannot write {self.path}: {describe_os_error(exc)}") from exc
        finally:
            self._unsynced = 0
            os.close(fd)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_lines(path: Path) -> tuple[list[bytes], int]:
    """The complete lines of `path` (each with its newline) and the torn tail's length."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {describe_os_error(exc)}") from exc
    complete = data.rfind(b"\n") + 1
    lines = [line + b"\n" for line in data[:complete].split(b"\n")[:-1]]
    return lines, len(data) - complete


def _parse(path: Path, number: int, line: bytes) -> dict[str, Any] | None:
    """The record on line `number`, None for a blank line; a RunFolderError if corrupt."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} line {number} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise RunFolderError(
            f"{path} line {number}: expected a JSON object, found {type(record).__name__}"
        )
    return record


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """Every record of a metrics.jsonl file, skipping a torn last line (from a crash).

    A corrupt complete line anywhere is an error naming the file and the line.
    """
    path = Path(path)
    lines, _ = _read_lines(path)
    records = (_parse(path, number, line) for number, line in enumerate(lines, start=1))
    return [record for record in records if record is not None]


def repair_metrics(path: Path | str) -> int:
    """Cut a torn last line (bytes after the last newline) off `path`; the bytes removed.

    A missing file has nothing to repair (0). The truncation is one `ftruncate`: a crash
    leaves the file before or after it, both readable.
    """
    path = Path(path)
    try:
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            keep = _end_of_last_line(file, size)
            if keep == size:
                return 0
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
            return size - keep
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise RunFolderError(f"cannot repair {path}: {describe_os_error(exc)}") from exc


def _end_of_last_line(file: Any, size: int, chunk: int = 1 << 16) -> int:
    """The offset just past the last newline of `file` (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        file.seek(start)
        found = file.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def truncate_after_step(path: Path | str, step: int) -> int:
    """Drop every record with "step" > `step` (and a torn last line); the records dropped.

    A resume from the checkpoint of `step` rewrites history to what it was then: the kept
    lines are copied byte for byte and the file is replaced atomically. Records without a
    "step" are kept; a missing file has nothing to drop (0). Call it before a `MetricsLog`
    on the file first appends.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines, torn = _read_lines(path)
    kept = []
    for number, line in enumerate(lines, start=1):
        record = _parse(path, number, line)
        if record is None or "step" not in record:
            kept.append(line)
            continue
        record_step = record["step"]
        if isinstance(record_step, bool) or not isinstance(record_step, int):
            raise RunFolderError(
                f'{path} line {number}: "step" must be an integer, found {record_step!r}'
            )
        if record_step <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped or torn:
        atomic_write_bytes(path, b"".join(kept))
    return dropped
