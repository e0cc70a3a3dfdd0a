"""How a training run shows its progress: a Rich bar on a terminal, plain lines elsewhere.

The trainer calls the same `Reporter` methods whatever the output is; `make_reporter` picks a
live progress line per epoch when stdout is a terminal, one line per logged step and
evaluation when it is not (CI logs stay readable), and nothing but the final line with
`--quiet`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from trainctl.closed_stdout import StdoutConsole, silence_stdout
from trainctl.number_format import lr_text, metric_text, rate_text
from trainctl.train.progress_line import EpochLine


def format_record(record: dict[str, Any]) -> str:
    """One log line: `step 50 epoch 1.00 loss 0.4321 lr 0.01 samples/s 12350`."""
    skip = {"kind", "wall_time", "time"}
    parts = []
    for key, value in record.items():
        if key in skip or value is None:
            continue
        if key == "epoch":
            parts.append(f"epoch {value:.2f}")
        elif key == "lr":
            parts.append(f"lr {lr_text(value)}")
        elif key == "samples_per_s":
            parts.append(f"samples/s {rate_text(value)}")
        else:
            parts.append(f"{key} {metric_text(value)}")
    return " ".join(parts)


class _ProgressConsole(StdoutConsole):
    """stdout for a run's progress: once its reader went away the rest goes to /dev/null and
    the run stops as on SIGTERM (signals.py), with a checkpoint; it does not end at once."""

    closed = False

    def on_broken_pipe(self) -> None:
        self.quiet = self.closed = True
        silence_stdout()


class Reporter:
    """Plain lines: one per logged step and per evaluation."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or _ProgressConsole(highlight=False, soft_wrap=True)

    @property
    def output_closed(self) -> bool:
        """Whether the reader of stdout went away (`trainctl train c.yaml | head -3`)."""
        return isinstance(self.console, _ProgressConsole) and self.console.closed

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def notice(self, text: str) -> None:
        """What must be said even with --quiet (an interruption and how to resume)."""
        self.message(text)

    def epoch_started(self, epoch: int, epochs: int | None, batches: int, start: int) -> None:
        """Epoch `epoch` (from 0) of the `epochs` the run will have begins at batch `start`;
        it runs `batches` batches in all (fewer than a full epoch when max_steps ends it)."""

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        pass

    def logged(self, record: dict[str, Any]) -> None:
        self.message(f"train {format_record(record)}")

    def evaluated(self, record: dict[str, Any]) -> None:
        self.message(f"eval {format_record(record)}")

    def epoch_finished(self) -> None:
        pass

    def close(self) -> None:
        pass


class QuietReporter(Reporter):
    """Only notices (an interruption, the resume command); the CLI adds the final line."""

    def message(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        self.console.print(text, markup=False)

    def logged(self, record: dict[str, Any]) -> None:
        pass

    def evaluated(self, record: dict[str, Any]) -> None:
        pass


class SilentReporter(QuietReporter):
    """A rank other than 0 of a data-parallel run: rank 0 reports for all of them."""

    def notice(self, text: str) -> None:
        pass


class BarReporter(Reporter):
    """A live line per epoch (see progress_line); a finished epoch's line stays on screen,
    each evaluation prints a line of its own below it, and messages print above the bar."""

    REFRESH_S = 0.1  # redraw at most ten times a second: a step may take well under 1 ms

    def __init__(
        self, console: Console | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(console)
        self.clock = clock
        self.line: EpochLine | None = None
        self.drawn_at = -math.inf
        self.live = Live(Text(""), console=self.console, auto_refresh=False, transient=True)
        self.live.start()

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def epoch_started(self, epoch: int, epochs: int | None, batches: int, start: int) -> None:
        label = f"epoch {epoch + 1}/{epochs}" if epochs else f"epoch {epoch + 1}"
        self.line = EpochLine(label, batches, start, self.clock)
        self.live.update(self.line, refresh=True)
        self.drawn_at = self.clock()

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        if self.line is None:
            return
        self.line.advance(loss, lr, samples_per_s)
        now = self.clock()
        if now - self.drawn_at >= self.REFRESH_S:
            self.live.refresh()
            self.drawn_at = now

    def logged(self, record: dict[str, Any]) -> None:
        pass

    def evaluated(self, record: dict[str, Any]) -> None:
        scores = {k: v for k, v in record.items() if k not in ("kind", "split", "step", "epoch")}
        shown = ", ".join(f"{k} {metric_text(v)}" for k, v in scores.items())
        self.message(f"  {record['split']} at step {record['step']}: {shown}")

    def epoch_finished(self) -> None:
        """The epoch's final line goes above the live area, where it stays."""
        if self.line is None:
            return
        self.line.finish()
        self.live.update(Text(""), refresh=True)
        self.console.print(self.line)
        self.line = None

    def close(self) -> None:
        self.epoch_finished()  # an interrupted epoch keeps its line too
        self.live.stop()


def make_reporter(quiet: bool = False, console: Console | None = None) -> Reporter:
    if quiet:
        return QuietReporter(console)
    if console.is_terminal if console else sys.stdout.isatty():
        return BarReporter(console)
    return Reporter(console)
