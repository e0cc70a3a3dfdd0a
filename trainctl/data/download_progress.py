"""The progress bar of a download: file name, bar, bytes so far and total, rate, time left."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class RichDownloadProgress:
    """One bar per file, on stderr (stdout stays for what a command prints)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.task = None

    def start(self, name: str, total: int, done: int) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        description = f"{name} (resumed)" if done else name
        self.task = self.bar.add_task(description, total=total or None, completed=done)
        self.bar.start()

    def waiting(self, name: str, folder: Path) -> None:
        self.console.print(f"waiting for another trainctl fetching {name} into {folder}")

    def advance(self, size: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, size)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
