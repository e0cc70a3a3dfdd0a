"""The job's collectives with a deadline: a rank that stops without dying cannot hang the rest.

MPI notices a rank that dies (its launcher ends the job), but a blocking collective waits
forever for one that is alive and never comes: stuck in user code, stopped by SIGSTOP, its
machine swapped out. So every collective of a run is started non-blocking and polled until
`distributed.timeout_s` has passed; then the rank raises `CollectiveTimeoutError`, naming the
ranks that never reached the collective, and the job is aborted (`world.failing_together`).

To name them, a rank entering a collective first posts a zero-byte arrival note to rank 0,
and rank 0 one to every rank, on a communicator of their own (so a note never matches another
message). At its deadline rank 0 knows which ranks never arrived; another rank knows whether
rank 0 did, and when it did, waits one more timeout for rank 0 to report, so the message comes
from the rank that knows most. Object collectives (pickled values) have no non-blocking form:
a watched barrier goes first, after which every rank is there and the collective completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainctl.errors import TrainctlError

# Poll without pause for SPIN_S, as MPI's blocking calls do (a sleep, even time.sleep(0),
# cost ~0.35 ms per Allreduce on a busy machine); after that the wait is long anyway, and a
# sleep of SLEEP_S between polls leaves the cores to the ranks still working.
SPIN_S = 0.05
SLEEP_S = 0.001


class CollectiveTimeoutError(TrainctlError):
    """A collective that did not complete within distributed.timeout_s: the job cannot go on."""

    exit_code = 1


class Collectives:
    """Sums, gathers and broadcasts over the ranks of `comm`, each given up after `timeout_s`."""

    def __init__(self, comm: Any, timeout_s: float) -> None:
        self.comm, self.timeout_s = comm, timeout_s
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.notes = comm.Dup()
        self._nothing = np.empty(0, np.uint8)  # the arrival notes carry no bytes

    def __repr__(self) -> str:  # shown by `trainctl graph`
        return f"Collectives(ranks={self.size}, timeout_s={self.timeout_s:g})"

    def allreduce_sum(
        self, send: np.ndarray, received: np.ndarray, what: str, per_message: int | None = None
    ) -> None:
        """`received` = the sum over the ranks of `send`, in messages of at most `per_message`
        items (large buffers in buckets), all in flight at once."""
        step = max(per_message or send.size, 1)

        def start() -> list[Any]:
            return [
                self.comm.Iallreduce(send[i : i + step], received[i : i + step])
                for i in range(0, send.size, step)
            ]

        self.watch(start, what)

    def allgather(self, value: Any, what: str) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        self.watch(lambda: [self.comm.Ibarrier()], what)
        return self.comm.allgather(value)

    def bcast(self, value: Any, what: str) -> Any:
        """Rank 0's `value` on every rank."""
        self.watch(lambda: [self.comm.Ibarrier()], what)
        return self.comm.bcast(value, root=0)

    def watch(self, start: Callable[[], Sequence[Any]], what: str) -> None:
        """Post this rank's arrival notes, start the collective's requests and poll them all
        until they complete; past the deadline, raise CollectiveTimeoutError."""
        arrivals, sent = self._post_notes()
        pending = [*arrivals.values(), *sent, *start()]
        begun = time.monotonic()
        deadline, extended = begun + self.timeout_s, False
        while True:
            pending = [request for request in pending if not request.Test()]
            if not pending:
                return
            now = time.monotonic()
            if now > deadline:
                if self.rank != 0 and arrivals[0].Test() and not extended:
                    deadline, extended = now + self.timeout_s, True  # rank 0 will report
                else:
                    raise CollectiveTimeoutError(self._overdue(arrivals, what))
            if now - begun > SPIN_S:
                time.sleep(SLEEP_S)

    def _post_notes(self) -> tuple[dict[int, Any], list[Any]]:
        """Send this rank's arrival notes; the requests of the notes it receives (by rank) and
        of those it sends."""
        others = range(1, self.size) if self.rank == 0 else [0]
        sent = [self.notes.Isend(self._nothing, dest=rank) for rank in others]
        return {rank: self.notes.Irecv(self._nothing, source=rank) for rank in others}, sent

    def _overdue(self, arrivals: dict[int, Any], what: str) -> str:
        missing = [rank for rank, request in arrivals.items() if not request.Test()]
        where = f"rank {self.rank} waited {self.timeout_s:g} s (distributed.timeout_s) in {what}"
        if missing:
            ranks = ", ".join(map(str, missing))
            return (
                f"{where} for rank{'s' if len(missing) > 1 else ''} {ranks}, which never "
                "reached it: stopped (SIGSTOP) or stuck outside MPI"
            )
        if self.rank == 0:
            return f"{where}: every rank reached it, but it did not complete (a rank stopped in it)"
        return f"{where}: rank 0 reached it but neither completed it nor reported who did not"
