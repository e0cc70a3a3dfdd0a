"""How a training run shows its progress: a Rich bar on a terminal, plain lines elsewhere.

The trainer calls the same `Reporter` methods whatever the output is; `make_reporter` picks a
live progress bar when stdout is a terminal, one line per logged step and evaluation when it
is not (CI logs stay readable), and nothing but the final line with `--quiet`.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_record(record: dict[str, Any]) -> str:
    """One log line: `step 50 epoch 1 loss 0.4321 lr 0.01 samples/s 12345`."""
    skip = {"kind", "wall_time", "time"}
    parts = []
    for key, value in record.items():
        if key in skip or value is None:
            continue
        label = "samples/s" if key == "samples_per_s" else key
        text = f"{value:.2f}" if key == "epoch" else _format_value(value)
        parts.append(f"{label} {text}")
    return " ".join(parts)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


class Reporter:
    """Plain lines: one per logged step and per evaluation."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def notice(self, text: str) -> None:
        """What must be said even with --quiet (an interruption and how to resume)."""
        self.message(text)

    def epoch_started(self, epoch: int, epochs: int | None, batches: int, start: int) -> None:
        pass

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


class BarReporter(Reporter):
    """A Rich progress bar per epoch with loss, last validation metric, lr, samples/s, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(console)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[metric]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]} samples/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.metric = ""
        self.progress.start()

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def epoch_started(self, epoch: int, epochs: int | None, batches: int, start: int) -> None:
        label = f"{epoch + 1}/{epochs}" if epochs else str(epoch + 1)
        self.task = self.progress.add_task(
            "train", total=batches, completed=start, epoch=label, loss="-", metric=self.metric,
            lr="-", speed="-",
        )  # fmt: skip

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        if self.task is not None:
            self.progress.update(
                self.task, advance=1, loss=_format_value(loss), lr=f"{lr:.3g}",
                speed=f"{samples_per_s:,.0f}", metric=self.metric,
            )  # fmt: skip

    def logged(self, record: dict[str, Any]) -> None:
        pass

    def evaluated(self, record: dict[str, Any]) -> None:
        shown = {k: v for k, v in record.items() if k not in ("step", "epoch", "kind")}
        self.metric = " ".join(f"{k} {_format_value(v)}" for k, v in shown.items())
        if self.task is not None:
            self.progress.update(self.task, metric=self.metric)
        else:
            self.message(f"eval {format_record(record)}")

    def epoch_finished(self) -> None:
        self.task = None

    def close(self) -> None:
        self.progress.stop()


def make_reporter(quiet: bool = False, console: Console | None = None) -> Reporter:
    if quiet:
        return QuietReporter(console)
    if console.is_terminal if console else sys.stdout.isatty():
        return BarReporter(console)
    return Reporter(console)
