"""`trainctl data fetch` and `data.download: true`: the classic data sets, fetched once.

A data set is present when every file its reader needs is in its folder; fetching downloads
only what is missing (see `download.py` for mirrors, resume, checksums and atomic placement)
and unpacks an archive member by member, each written under a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trainctl.data.cache import dataset_folder
from trainctl.data.catalog import REMOTE_DATASETS, RemoteDataset
from trainctl.data.download import DownloadFailed, NoProgress, Progress, download
from trainctl.errors import DataError


def remote_dataset(name: str) -> RemoteDataset:
    """The catalog entry of `name`, or a DataError naming the data sets trainctl fetches."""
    if name in REMOTE_DATASETS:
        return REMOTE_DATASETS[name]
    known = ", ".join(REMOTE_DATASETS)
    raise DataError(f"trainctl cannot fetch a data set called {name!r}; it fetches {known}")


def _has(folder: Path, name: str) -> bool:
    return (folder / name).is_file() or (
        name.endswith(".gz") and (folder / name.removesuffix(".gz")).is_file()
    )


def missing_files(remote: RemoteDataset, folder: Path) -> list[str]:
    """The files the reader needs that are not in `folder` (nor all in its subfolder)."""
    missing = [name for name in remote.needed if not _has(folder, name)]
    if missing and remote.subfolder:
        return [name for name in remote.needed if not _has(folder / remote.subfolder, name)]
    return missing


@dataclass(frozen=True)
class FetchResult:
    folder: Path
    fetched: list[str]  # the files downloaded; empty when the data set was already there


def fetch_dataset(
    name: str, folder: Path | None = None, progress: Progress | None = None
) -> FetchResult:
    """Make data set `name` present in `folder` (default: its folder in the data cache, where
    `load_splits` reads it when given no path)."""
    remote = remote_dataset(name)
    folder = dataset_folder(name) if folder is None else folder
    if not missing_files(remote, folder):
        return FetchResult(folder, [])
    progress = progress or NoProgress()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _only_fetch_into(folder, name, progress):
            fetched = _fetch_missing(remote, folder, progress)
    except DownloadFailed as exc:
        raise DataError(_failure_message(remote, folder, exc)) from None
    except OSError as exc:
        where = exc.filename or folder
        raise DataError(f"cannot write {name} into {where}: {exc.strerror or exc}") from None
    missing = missing_files(remote, folder)
    if missing:
        raise DataError(f"{name}: fetched, but {folder} still lacks {', '.join(missing)}")
    return FetchResult(folder, fetched)


@contextmanager
def _only_fetch_into(folder: Path, name: str, progress: Progress) -> Iterator[None]:
    """Hold an exclusive lock on `folder` while fetching into it. Two trainings that start
    at once on the same data set would otherwise append to the same `.part` file; the
    second waits here and then finds the files the first placed."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.waiting(name, folder)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _fetch_missing(remote: RemoteDataset, folder: Path, progress: Progress) -> list[str]:
    """Download (and unpack) what `folder` still lacks; the names of the files downloaded."""
    if not missing_files(remote, folder):  # placed by the fetch this one waited for
        return []
    fetched = []
    for file in remote.files:
        if not _has(folder, file.name):  # an archive there is whole and checked
            download(file, remote.mirrors, folder, progress)
            fetched.append(file.name)
    if remote.unpack:  # an archive is removed once unpacked: one still there is not
        for file in remote.files:
            if (folder / file.name).is_file():
                _unpack(folder / file.name, folder, remote)
    return fetched


def _failure_message(remote: RemoteDataset, folder: Path, exc: DownloadFailed) -> str:
    if exc.offline:
        files = ", ".join(file.name for file in remote.files if not (folder / file.name).is_file())
        return (
            f"cannot reach any mirror of {remote.name} (offline?): place {files} in {folder} "
            f"by hand (from {remote.mirrors[0]}) and run again"
        )
    part = folder / f"{exc.file.name}.part"
    kept = ""
    if part.is_file():
        kept = (
            f"; the {part.stat().st_size:,} bytes fetched so far are kept in {part} "
            "and the next fetch resumes from there"
        )
    return f"cannot fetch {remote.name}'s {exc.file.name} into {folder}: {exc}{kept}"


def _unpack(archive: Path, folder: Path, remote: RemoteDataset) -> None:
    """Write the members of `archive` the reader needs into folder/subfolder, each atomically,
    then remove the archive. Members are matched by name and never extracted by their own
    path, so an archive cannot write outside the folder."""
    target = folder / remote.subfolder
    target.mkdir(exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name in remote.needed:
                    source = tar.extractfile(member)
                    final = target / Path(member.name).name
                    temporary = final.with_name(final.name + ".part")
                    with source, open(temporary, "wb") as out:
                        while chunk := source.read(1 << 20):
                            out.write(chunk)
                    os.replace(temporary, final)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: not a readable .tar.gz archive ({exc})") from None
    archive.unlink()


@dataclass(frozen=True)
class DatasetStatus:
    name: str
    folder: Path
    present: bool
    size: int  # bytes on disk under the folder (0 when there is none)


def dataset_status(root: Path | None = None) -> list[DatasetStatus]:
    """Each fetchable data set: whether it is in its folder under `root`, and its size."""
    statuses = []
    for name, remote in REMOTE_DATASETS.items():
        folder = dataset_folder(name, root)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        statuses.append(DatasetStatus(name, folder, not missing_files(remote, folder), size))
    return statuses
