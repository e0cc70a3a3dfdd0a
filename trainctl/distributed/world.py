"""Which process of a data-parallel job this is: rank and size, from MPI when launched by one.

A process started by `mpiexec`/`mpirun` (MPICH, Intel MPI, Open MPI) or `srun` finds the job's
size in its environment; only when that size is above 1 is mpi4py imported, so a single
process never loads MPI (nor needs it installed).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainctl.distributed.collectives import CollectiveTimeoutError
from trainctl.errors import TrainctlError

# The job size each launcher puts in the environment of its processes.
_SIZE_VARIABLES = (
    "PMI_SIZE",  # MPICH's hydra, Intel MPI
    "OMPI_COMM_WORLD_SIZE",  # Open MPI
    "SLURM_STEP_NUM_TASKS",  # srun
)
INSTALL_HINT = "pip install 'trainctl[distributed]' (mpi4py and MPICH)"
FAILURE_WAIT_S = 5.0  # how long a failing rank waits for the others before aborting the job
# mpiexec relays a rank's stderr through its proxy in the background, and an abort tears the
# proxy down: without a pause the line naming the cause was lost now and then (seen in CI).
ABORT_GRACE_S = 0.5


class DistributedError(TrainctlError):
    """A data-parallel run that cannot start: no MPI, or a size that does not fit."""


def launched_size() -> int:
    """The number of processes the launcher started, 1 when none did."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


@dataclass(frozen=True)
class World:
    """This process's place in the job. `comm` is MPI.COMM_WORLD when size > 1, else None;
    `errors` is a duplicate of it on which failing ranks meet (see `fail`)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # ranks on this host
    comm: Any = None
    errors: Any = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def library(self) -> str | None:
        """The MPI library's name and version, e.g. 'MPICH 5.0.2'; None for one process."""
        if self.comm is None:
            return None
        from mpi4py import MPI

        first = MPI.Get_library_version().strip().splitlines()[0]
        return " ".join(first.replace("Version:", "").split())

    def fail(self, message: str, exit_code: int, meet: bool = True) -> None:
        """Called by a rank that stops with an error. When every rank fails alike (a NaN loss
        reduced across ranks, a bad config) they all meet here and exit on their own; a rank
        that fails alone aborts the job after FAILURE_WAIT_S, since its peers would wait in the
        next collective forever. The meeting runs on a communicator of its own, so it never
        mixes with a collective that a peer is blocked in. `meet` False: a peer is known to be
        lost (a collective timed out), abort at once."""
        if self.errors is None:
            return
        request = self.errors.Ibarrier()
        deadline = time.monotonic() + (FAILURE_WAIT_S if meet else 0.0)
        while time.monotonic() < deadline:
            if request.Test():
                return
            time.sleep(0.01)
        print(f"rank {self.rank}: {message}; aborting the job", file=sys.stderr, flush=True)
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(exit_code)


@contextlib.contextmanager
def failing_together(world: World) -> Iterator[None]:
    """Around a rank's work: an error meets the other ranks' (`World.fail`). Rank 0 reports an
    error that every rank had; the others leave with its exit code and say nothing. After a
    collective timed out there is no meeting: the job is aborted at once."""
    try:
        yield
    except BaseException as exc:
        if world.size == 1 or isinstance(exc, SystemExit):
            raise
        code = getattr(exc, "exit_code", 2) if isinstance(exc, TrainctlError) else 1
        world.fail(str(exc) or type(exc).__name__, code, meet=not _lost_a_peer(exc))
        if world.is_root:
            raise
        raise SystemExit(code) from None


def _lost_a_peer(exc: BaseException) -> bool:
    """Whether `exc` is (or was raised for) a collective that timed out."""
    return isinstance(exc, CollectiveTimeoutError) or isinstance(
        exc.__cause__, CollectiveTimeoutError
    )


@functools.cache
def current_world() -> World:
    """The world of this process; mpi4py is imported only for a launched job of several."""
    if launched_size() == 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(
            f"this process was started by an MPI launcher for {launched_size()} processes, "
            f"but mpi4py is not installed: {INSTALL_HINT}"
        ) from None
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    world = World(comm.Get_rank(), comm.Get_size(), local.Get_size(), comm, comm.Dup())
    local.Free()
    return world
