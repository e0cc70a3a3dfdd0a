"""Finding and reading data files, with one-line errors that say which file and what is wrong.

A missing file names where it was expected and where the data set can be downloaded; a file
that cannot be read or decompressed names the file and the reason. Readers never see an
OSError, EOFError or zlib error. Nothing is decompressed or allocated past the machine's
memory (`memory_bytes`): a gzip bomb is refused, not inflated.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from trainctl.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def require_folder(path: Path, what: str, obtain: str) -> Path:
    """`path` when it is a folder; else a DataError saying what belongs there."""
    if path.is_dir():
        return path
    found = "is a file, not a folder" if path.exists() else "does not exist"
    raise DataError(f"{path} {found}: expected a folder holding {what}; get it from {obtain}")


def require_file(path: Path, what: str) -> Path:
    """`path` when it is a file; else a DataError saying what was expected there."""
    if path.is_file():
        return path
    found = "is a folder, not a file" if path.exists() else "does not exist"
    raise DataError(f"{path} {found}: expected {what}")


def find_file(folder: Path, names: Sequence[str], what: str, obtain: str) -> Path:
    """The first of `names` present in `folder`, or a DataError naming them all."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    wanted = " or ".join(names)
    raise DataError(f"missing {what} in {folder}: expected {wanted}; get it from {obtain}")


def memory_bytes() -> int:
    """The machine's physical memory: no data file, decompressed, or array can be larger."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no limit known
        return sys.maxsize


def read_bytes(path: Path) -> bytes:
    """The bytes of `path`, gunzipped when its name ends in .gz."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix != ".gz":
        return raw
    limit, size, chunks = memory_bytes(), 0, []
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as file:
            while chunk := file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise DataError(
                        f"{path}: decompresses to more than this machine's memory "
                        f"({limit:,} bytes): not a data set trainctl can load"
                    )
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    return b"".join(chunks)


def read_text(path: Path) -> str:
    """The UTF-8 text of `path` (gunzipped when its name ends in .gz)."""
    try:
        return read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})"
        ) from None
