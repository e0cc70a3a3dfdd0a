"""Downloading one file from a list of mirrors: resumable, checksummed, placed atomically.

The bytes go to `NAME.part` next to the final file; a `.part` left by a dropped connection
is continued with an HTTP Range request. Only once the whole file's SHA-256 matches is it
renamed (`os.replace`) to its final name, so a killed or failed download never leaves a
partial or wrong file where the reader looks. Standard library only (urllib): one GET per
file, no sessions or retries beyond trying the next mirror, nothing a library does better.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainctl import __version__
from trainctl.data.catalog import RemoteFile

# Short, so that a machine without a network fails at once; a mirror that stalls this long
# mid-file leaves its bytes in the .part file for the next mirror, or the next run.
TIMEOUT_S = 10.0
CHUNK = 1 << 16


class Progress(Protocol):
    """What a download reports while it runs (a progress bar, or nothing)."""

    def start(self, name: str, total: int, done: int) -> None: ...

    def waiting(self, name: str, folder: Path) -> None: ...

    def advance(self, size: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, name: str, total: int, done: int) -> None:
        pass

    def waiting(self, name: str, folder: Path) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class MirrorFailure:
    """Why one mirror did not deliver a file; `unreachable` when no connection was made."""

    url: str
    reason: str
    unreachable: bool


class DownloadFailed(Exception):
    """Every mirror failed for one file (the caller words the user's error)."""

    def __init__(self, file: RemoteFile, failures: list[MirrorFailure]) -> None:
        self.file, self.failures = file, failures
        super().__init__("; ".join(f"{f.url}: {f.reason}" for f in failures))

    @property
    def offline(self) -> bool:
        return all(failure.unreachable for failure in self.failures)


def download(file: RemoteFile, mirrors: tuple[str, ...], folder: Path, progress: Progress) -> Path:
    """`folder/file.name`, fetched from the first mirror that delivers it with the right
    SHA-256; raises DownloadFailed listing each mirror's failure."""
    target = folder / file.name
    part = folder / f"{file.name}.part"
    failures = []
    for base in mirrors:
        url = base + file.name
        failure = _fetch_into(url, part, file.size, progress)
        if failure is None:
            digest = _sha256(part)
            if digest == file.sha256:
                os.replace(part, target)
                return target
            part.unlink()
            failure = MirrorFailure(
                url, f"SHA-256 {digest}, expected {file.sha256} (file discarded)", False
            )
        failures.append(failure)
    raise DownloadFailed(file, failures)


def _fetch_into(url: str, part: Path, size: int, progress: Progress) -> MirrorFailure | None:
    """Append `url`'s bytes to `part` (from where it ends); None when the body was complete."""
    done = part.stat().st_size if part.exists() else 0
    if done > size:  # not a prefix of this file
        part.unlink()
        done = 0
    if done == size:  # complete, stopped before it was checked: the checksum decides
        return None
    headers = {"User-Agent": f"trainctl/{__version__}"}
    if done:
        headers["Range"] = f"bytes={done}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError as exc:
        return MirrorFailure(url, f"HTTP {exc.code} {exc.reason}", False)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return MirrorFailure(url, f"cannot connect ({reason})", True)
    with response:
        resumed = response.status == 206
        progress.start(part.name.removesuffix(".part"), size, done if resumed else 0)
        try:
            lost = _copy_body(response, part, resumed, progress)
        finally:
            progress.finish()
    kept = part.stat().st_size
    if lost is None and kept >= size:
        return None
    # urllib reports a body cut short as a plain end of data: the size tells.
    lost = lost or "the server closed the connection"
    return MirrorFailure(url, f"connection lost at byte {kept:,} of {size:,} ({lost})", False)


def _copy_body(
    response: http.client.HTTPResponse, part: Path, append: bool, progress: Progress
) -> str | None:
    """Write the response body to `part`; why the connection broke off, or None."""
    lost = None
    with open(part, "ab" if append else "wb") as out:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                lost = f"{type(exc).__name__}: {exc}"
                break
            if not chunk:
                break
            out.write(chunk)
            progress.advance(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return lost


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
