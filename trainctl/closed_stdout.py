"""A reader of stdout that goes away (`trainctl runs | head -3`) ends trainctl quietly with exit
status 141, that of a process SIGPIPE ended (as git and coreutils end), instead of Python's
BrokenPipeError traceback or Rich's exit status 1, which trainctl keeps for a failed run. The
CLI turns a BrokenPipeError into that exit status; a training run stops as on SIGTERM, with a
checkpoint (train/signals.py)."""

import errno
import os
import sys

from rich.console import Console

EXIT_CLOSED_STDOUT = 128 + 13  # 128 + SIGPIPE


def silence_stdout() -> None:
    """Point stdout at /dev/null: what is still to be written (Python's own flush at exit
    included) then goes nowhere instead of failing again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file: a test runner's buffer
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class StdoutConsole(Console):
    """A Rich console that leaves a closed stdout to the CLI, as a BrokenPipeError, where
    Rich itself would exit with status 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")
