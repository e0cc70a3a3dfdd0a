"""`trainctl train CONFIG --nproc N`: start the N ranks under MPI's `mpiexec`.

The launcher runs `mpiexec -n N python -m trainctl <the same arguments>`, so a rank parses
the command line a user would have typed under `mpiexec` themselves. `mpiexec` runs in a
session of its own, so a Ctrl-C at the terminal reaches it once, through the launcher, which
forwards SIGINT and SIGTERM; `mpiexec` hands them on to every rank, and the ranks agree on the
step after which they stop (see `parallel.AgreedStop`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from trainctl.distributed.world import INSTALL_HINT, DistributedError


def find_mpiexec(nproc: int) -> str:
    """The `mpiexec` next to this Python (a virtual environment's, from the mpich wheel), else
    the first on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise DistributedError(
            f"--nproc {nproc} starts its processes with MPI's mpiexec, found neither next to "
            f"{sys.executable} nor on PATH: {INSTALL_HINT}"
        )
    return found


def launch(nproc: int, arguments: Sequence[str]) -> int:
    """Run `trainctl <arguments>` as `nproc` MPI ranks on this machine; the job's exit code."""
    command = [find_mpiexec(nproc), "-n", str(nproc), sys.executable, "-m", "trainctl"]
    process = subprocess.Popen([*command, *arguments], start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        return process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
