"""How many BLAS threads a run uses, shared fairly with the other trainings on the machine.

OpenBLAS threads spin while they wait for work. Two processes that each run one thread per
core therefore do not share the CPUs: they steal each other's time slices, and a step that
takes 0.27 ms alone took 78 ms with a second training beside it (benchmarks/process_bench.py).
One thread per process avoids that but makes a lone run up to 1.8x slower.

`threads: auto` (the default) counts the trainings running on this machine and gives each an
equal share of the CPUs this process may use (`os.sched_getaffinity`); each rank of a
data-parallel run counts as one, and gets cores / ranks from its first step on. The count is taken
again every second, so a run gets the whole machine back when the other one ends. Each
training holds an `flock` on its own file in a per-user folder; the kernel drops it when the
process exits, however it exits, so a killed run never keeps its share. A number is applied
as given. Either way the limit goes to every BLAS and OpenMP pool through threadpoolctl.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECOUNT_EVERY_S = 1.0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_folder() -> Path:
    """Where running trainings register: per user, never shared with other users."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "trainctl" / "trainings"
    return Path(tempfile.gettempdir()) / f"trainctl-{os.getuid()}" / "trainings"


class Registration:
    """This process's entry among the running trainings: a file it holds locked.

    The file is locked under a temporary name and then renamed, so every `*.lock` file is
    locked from the moment it appears and a counter never mistakes a newcomer for stale."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder = folder
        name = f"{os.getpid()}-{time.monotonic_ns()}"
        self.path = folder / f"{name}.lock"
        pending = folder / f"{name}.new"
        self.fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(pending, self.path)

    def running(self) -> int:
        """How many trainings hold their file now, this one included; stale files go."""
        count = 1
        for other in self.folder.glob("*.lock"):
            if other != self.path and _held(other):
                count += 1
        return count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)


def _held(path: Path) -> bool:
    """Whether a live process holds `path` locked; a file nobody holds is removed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False  # removed meanwhile by its owner or another counter
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    finally:
        os.close(fd)


@dataclass
class ThreadControl:
    """Applies the `threads` setting for a run and keeps an `auto` share up to date.

    Call `check()` between steps: it recounts at most once a second and is otherwise a
    clock read."""

    setting: int | str
    peers: int = 1  # processes of this training on this machine (data-parallel ranks)
    cpus: int = field(default_factory=usable_cpus)
    registration: Registration | None = None
    threads: int = 0
    used: set[int] = field(default_factory=set)
    _controller: Any = None
    _first_limit: Any = None  # threadpoolctl's limiter that knows the original limits
    _checked_at: float = 0.0

    def start(self) -> None:
        from threadpoolctl import ThreadpoolController  # imported here: it scans loaded libraries

        self._controller = ThreadpoolController()
        if self.setting == "auto":
            with contextlib.suppress(OSError):  # no writable folder: run as if alone
                self.registration = Registration(share_folder())
        self._apply(self._wanted())

    def check(self) -> None:
        if self.registration is None:
            return
        now = time.monotonic()
        if now - self._checked_at >= RECOUNT_EVERY_S:
            self._apply(self._wanted())

    def stop(self) -> None:
        if self.registration is not None:
            self.registration.close()
            self.registration = None
        if self._first_limit is not None:
            self._first_limit.restore_original_limits()

    def report(self) -> dict[str, Any]:
        """What summary.json records: the setting, the CPUs usable, the counts used."""
        return {"setting": self.setting, "usable_cpus": self.cpus, "used": sorted(self.used)}

    def _wanted(self) -> int:
        self._checked_at = time.monotonic()
        if isinstance(self.setting, int):
            return self.setting
        running = self.registration.running() if self.registration else 1
        return max(1, self.cpus // max(running, self.peers))

    def _apply(self, threads: int) -> None:
        if threads != self.threads:
            limit = self._controller.limit(limits=threads)
            self._first_limit = self._first_limit or limit
            self.threads = threads
            self.used.add(threads)


@contextlib.contextmanager
def controlled_threads(setting: int | str) -> Iterator[ThreadControl]:
    """The thread limit of `setting` for the block; the machine's default after it."""
    control = ThreadControl(setting)
    control.start()
    try:
        yield control
    finally:
        control.stop()
