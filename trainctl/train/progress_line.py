"""One epoch's progress as one terminal line, laid out for the width it gets.

What Keras's one-line progress and tqdm show, in this order:

    epoch 3/15 ━━━━━━━━━━━━━━━━━━━━━━━━  23/45 loss 0.1235 lr 0.0475 18700 samples/s ETA 0:03

The loss is the epoch's running mean, as Keras shows it. The step count, the loss and the
ETA always stay whole. When the line is too wide the bar narrows (down to 10 cells), then
the learning rate goes, then the rate, then the bar, then the epoch label; no field is ever
cut to '…'.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.text import Text

from trainctl.number_format import clock_text, duration, lr_text, metric_text, rate_text

BAR_WIDTH = (10, 40)  # narrowest and widest bar, in cells
# The fields that may go when the line is too wide, the first to go first.
_DROPPABLE = ("lr", "rate", "bar", "label")


class EpochLine:
    """The state of one epoch's bar; Rich renders it to fit the console's width."""

    def __init__(self, label: str, total: int, start: int, clock: Callable[[], float]) -> None:
        self.label, self.total, self.done = label, total, start
        self._first, self._clock = start, clock
        self._started = clock()
        self._finished: float | None = None
        self._bar_width: int | None = None
        self._loss_sum = 0.0
        self.loss: float | None = None  # the epoch's mean so far: one batch's loss is noise
        self.lr: float | None = None
        self.rate: float | None = None

    def advance(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.done += 1
        self._loss_sum += loss
        self.loss = self._loss_sum / (self.done - self._first)
        self.lr, self.rate = lr, samples_per_s

    def finish(self) -> None:
        self._finished = self._clock()

    def time_text(self) -> str:
        """'ETA 0:03' from this epoch's pace so far; 'took 9.2s' once the epoch is over."""
        if self._finished is not None:
            return f"took {duration(self._finished - self._started)}"
        steps = self.done - self._first
        if steps == 0:
            return "ETA -:--"
        per_step = (self._clock() - self._started) / steps
        return f"ETA {clock_text(per_step * max(0, self.total - self.done))}"

    def fields(self) -> dict[str, str]:
        """Every text field of the line, in display order ('bar' stands for the bar)."""
        count = f"{self.done}/{self.total}".rjust(2 * len(str(self.total)) + 1)
        fields = {"label": self.label, "bar": "", "count": count,
                  "loss": f"loss {metric_text(self.loss)}"}  # fmt: skip
        if self.lr is not None:
            fields["lr"] = f"lr {lr_text(self.lr)}"
        if self.rate:
            fields["rate"] = f"{rate_text(self.rate)} samples/s"
        fields["time"] = self.time_text()
        return fields

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        fields, bar_width = fit(self.fields(), options.max_width)
        if self.loss is not None and "bar" in fields:  # from the first step on the bar only
            bar_width = min(bar_width, self._bar_width or bar_width)  # narrows: as numbers
            self._bar_width = bar_width  # grow and shrink, the line keeps still
        parts = []
        for key, text in fields.items():
            if key != "bar":
                parts.append(Text(text))
                continue
            bar = ProgressBar(total=self.total, completed=self.done, width=bar_width)
            drawn = Text.assemble(*((s.text, s.style) for s in console.render(bar, options)))
            drawn.pad_right(bar_width - drawn.cell_len)  # a bar drawn without colour stops short
            parts.append(drawn)
        yield Text(" ").join(parts)


def fit(fields: dict[str, str], width: int) -> tuple[dict[str, str], int]:
    """The fields that fit in `width` cells (one space between two) and the bar's width."""
    kept = dict(fields)
    for key in (None, *_DROPPABLE):
        kept.pop(key, None)
        room = width - sum(len(text) for k, text in kept.items() if k != "bar") - (len(kept) - 1)
        if room >= (BAR_WIDTH[0] if "bar" in kept else 0):
            break
    return kept, min(room, BAR_WIDTH[1]) if "bar" in kept else 0
