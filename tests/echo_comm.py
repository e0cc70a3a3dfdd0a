"""A stand-in for an MPI communicator, for tests of the gradient Allreduce without MPI."""

import numpy as np

from trainctl.distributed.collectives import Collectives


class Done:
    """A non-blocking request that has completed."""

    def Test(self) -> bool:  # noqa: N802 (mpi4py's name)
        return True


class EchoComm:
    """An MPI communicator stand-in whose `size` ranks all hold the same array, so their sum is
    `size` times this one's and their mean is this one's. This is rank 0, and every other
    rank is always there: each request completes at once."""

    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's names from here on)
        return self.size

    def Get_rank(self) -> int:  # noqa: N802
        return 0

    def Dup(self) -> "EchoComm":  # noqa: N802
        return self

    def Iallreduce(self, send: np.ndarray, received: np.ndarray) -> Done:  # noqa: N802
        np.multiply(send, self.size, out=received)
        return Done()

    def Ibarrier(self) -> Done:  # noqa: N802
        return Done()

    def Isend(self, buffer: np.ndarray, dest: int) -> Done:  # noqa: N802
        return Done()

    def Irecv(self, buffer: np.ndarray, source: int) -> Done:  # noqa: N802
        return Done()


def echo_collectives(size: int) -> Collectives:
    """The collectives of `size` identical ranks."""
    return Collectives(EchoComm(size), timeout_s=60.0)
