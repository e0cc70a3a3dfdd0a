"""One writer per run folder: an exclusive OS lock on `train.lock` while a run trains.

The lock is `flock` on a file inside the run folder. The kernel drops it when its holder
exits in any way, SIGKILL included, so it is never stale: a lock that is held means a live
process is training the run. While held, the file holds the holder's pid (for the message
a second writer gets); on release it is emptied, so a folder looks the same before and after
a command that held the lock and changed nothing. POSIX only (Windows is not a target).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from trainctl.errors import RunFolderError
from trainctl.train.atomic import describe_os_error

LOCK_NAME = "train.lock"
# `is_locked` holds a shared lock for a moment to test; a writer arriving just then retries.
_ATTEMPTS, _PAUSE_S = 50, 0.01


class RunLockedError(RunFolderError):
    """Another live process holds the run folder's lock (it is training that run)."""


@contextlib.contextmanager
def hold_run_lock(folder: Path | str) -> Iterator[None]:
    """Hold the lock of the run folder `folder` for the block; RunLockedError (exit 2)
    naming the holder's pid when another process holds it."""
    path = Path(folder) / LOCK_NAME
    try:
        # O_NOFOLLOW: a link planted in the folder never makes this truncate another file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise RunFolderError(f"cannot create {path}: {describe_os_error(exc)}") from exc
    try:
        _acquire(fd, Path(folder))
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid only names the holder; a full disk may refuse it
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # a folder that is gone: the close still unlocks
            os.ftruncate(fd, 0)
        os.close(fd)


def _acquire(fd: int, folder: Path) -> None:
    for attempt in range(_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunFolderError(
                    f"cannot lock {folder / LOCK_NAME}: {describe_os_error(exc)}"
                ) from exc
        if attempt + 1 < _ATTEMPTS:
            time.sleep(_PAUSE_S)
    holder = _holder_pid(fd)
    who = f"another process (pid {holder})" if holder else "another process"
    raise RunLockedError(
        f"{folder} is being trained by {who}: a run folder takes one writer at a time; "
        "wait for that process to finish, or stop it, then resume"
    )


def _holder_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


def is_locked(folder: Path | str) -> bool:
    """Whether a live process holds the lock of the run folder `folder` (it is training).

    Reads only: a folder without a lock file (a run from before locks) is not locked.
    """
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
