"""`trainctl train CONFIG --nproc N`: start the N ranks under MPI's `mpiexec`.

The launcher runs `mpiexec -n N python -m trainctl <the same arguments>`, so a rank parses
the command line a user would have typed under `mpiexec` themselves. `mpiexec` runs in a
session of its own, so a Ctrl-C at the terminal reaches it once, through the launcher, which
forwards SIGINT and SIGTERM; `mpiexec` hands them on to every rank, and the ranks agree on the
step after which they stop (see `parallel.AgreedStop`).

The job's standard output passes through the launcher. When the reader goes away
(`trainctl train ... --nproc 2 | head`), the launcher stops the job as a SIGTERM would (every
rank after a checkpoint, the run interrupted and resumable) and exits with 141, as a
single-process run whose output is closed does; left to itself, `mpiexec` would kill the
ranks mid-step and leave the run saying it is running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from trainctl.closed_stdout import EXIT_CLOSED_STDOUT, silence_stdout
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
    process = subprocess.Popen(
        [*command, *arguments], start_new_session=True, stdout=subprocess.PIPE
    )

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        if _relay(process.stdout, sys.stdout.buffer):
            return process.wait()
        process.send_signal(signal.SIGTERM)
        _drain(process.stdout)
        process.wait()
        silence_stdout()
        return EXIT_CLOSED_STDOUT
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _chunks(source: BinaryIO):
    return iter(lambda: source.read1(1 << 16), b"")


def _relay(source: BinaryIO, sink: BinaryIO) -> bool:
    """Copy the job's output to ours as it comes, to its end; False as soon as ours is closed."""
    for chunk in _chunks(source):
        try:
            sink.write(chunk)
            sink.flush()
        except BrokenPipeError:
            return False
    return True


def _drain(source: BinaryIO) -> None:
    """Read and drop the rest of the job's output, so that no rank blocks on a full pipe."""
    for _ in _chunks(source):
        pass
