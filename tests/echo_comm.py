"""A stand-in for an MPI communicator, for tests of the gradient Allreduce without MPI."""

import numpy as np


class EchoComm:
    """An MPI communicator stand-in whose `size` ranks all hold the same array, so their sum is
    `size` times this one's and their mean is this one's."""

    def __init__(self, size: int) -> None:
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 (mpi4py's name)
        return self.size

    def Allreduce(self, send: np.ndarray, received: np.ndarray) -> None:  # noqa: N802
        np.multiply(send, self.size, out=received)
