"""Stop signals of a training run: SIGINT/SIGTERM end it cleanly after the current step, and
so does SIGPIPE, which comes when the reader of stdout went away (`trainctl train c.yaml |
head -3`; the progress output then goes to /dev/null, see closed_stdout.py).

A signal sets a flag that the loop checks after each step (and evaluation before each batch,
so a long validation split does not keep a Ctrl-C waiting); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from trainctl.train.step import Step

# Python ignores SIGPIPE (a write to a closed pipe fails instead); Windows has none.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *filter(None, [getattr(signal, "SIGPIPE", None)]))


class EvaluationInterrupted(Exception):
    """Raised between evaluation batches once a stop signal came: the evaluation is dropped."""


class Interruptible:
    """The step as evaluation sees it: before each batch it checks for a stop signal, so a
    long validation split does not keep a Ctrl-C waiting."""

    def __init__(self, step: Step, stop: StopFlag) -> None:
        self.step, self.stop = step, stop

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        if self.stop:
            raise EvaluationInterrupted
        return self.step.evaluate(inputs)


class StopFlag:
    """Set by SIGINT/SIGTERM/SIGPIPE: the loop finishes the current step, checkpoints and stops.

    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint stays intact).
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.signal_name = name


@contextlib.contextmanager
def trapped_signals() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag.handle) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
