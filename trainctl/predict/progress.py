"""The bar `predict` shows on stderr while it works through an input of several batches;
stdout may be carrying the predictions, so nothing is written there."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class PredictProgress:
    """Samples predicted so far out of `total`; shown only on a terminal, and only when the
    input takes more than one batch (a single batch is over before a bar would help)."""

    def __init__(self, total: int, batch_size: int, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.bar: Progress | None = None
        if console.is_terminal and total > batch_size:
            self.bar = Progress(
                TextColumn("predicting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("samples"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("predicting", total=total)
            self.bar.start()

    def advance(self, samples: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, samples)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
