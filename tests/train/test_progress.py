"""Progress output: a live line per epoch on terminals, plain records elsewhere, silence with
--quiet. The live line is checked on a fixed-width terminal at 80, 120 and 200 columns."""

import io
import re

import pytest
from rich.console import Console

from trainctl.config import parse_config
from trainctl.train.progress import (
    BarReporter,
    QuietReporter,
    Reporter,
    format_record,
    make_reporter,
)
from trainctl.train.trainer import TrainOptions, train


def console(terminal: bool, width: int = 120) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    term = Console(file=out, force_terminal=terminal, width=width, color_system=None, record=True)
    return term, out


class Clock:
    """A clock the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def steps(bar: BarReporter, clock: Clock, count: int, loss: float, lr: float, speed: float):
    for _ in range(count):
        clock.now += 0.5
        bar.advanced(loss, lr, speed)


def screen(raw: str) -> list[str]:
    """The rows a terminal shows after `raw`: the few VT100 codes Rich's live display writes
    (carriage return, erase line, cursor up) applied, every other escape code dropped."""
    rows, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", raw):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif token == "\x1b[2K":
            rows[row] = ""
        elif token.startswith("\x1b[") and token.endswith("A"):
            row -= int(token[2:-1] or 1)
        elif not token.startswith("\x1b"):
            rows[row] = rows[row][:col].ljust(col) + token + rows[row][col + len(token) :]
            col += len(token)
    return [r.rstrip() for r in rows if r.strip()]


def test_reporter_choice_follows_the_output():
    assert type(make_reporter(console=console(False)[0])) is Reporter
    bar = make_reporter(console=console(True)[0])
    assert isinstance(bar, BarReporter)
    bar.close()
    assert isinstance(make_reporter(quiet=True, console=console(True)[0]), QuietReporter)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_live_line_keeps_step_count_loss_and_eta_whole(width):
    term, out = console(True, width)
    clock = Clock()
    bar = BarReporter(term, clock=clock)
    bar.epoch_started(0, 15, 450, 0)
    bar.evaluated({"kind": "eval", "split": "val", "step": 0, "epoch": 0.0, "loss": 0.5571,
                   "accuracy": 0.8556, "top_5_accuracy": 0.9944})  # fmt: skip
    steps(bar, clock, 230, 0.123456, 0.0475, 18699.9)  # half a second a step, 220 to go
    live = screen(out.getvalue())[-1]
    bar.close()
    assert len(live) <= width
    assert live.startswith("epoch 1/15 ━")  # the label and the bar
    for field in ("230/450", "loss 0.1235", "18700 samples/s", "ETA 1:50"):
        assert field in live, (field, live)
    assert "lr 0.0475" in live or width == 80
    assert "accuracy" not in live  # validation results have a line of their own
    assert "…" not in term.export_text()


def test_a_narrow_terminal_drops_the_rate_and_bar_before_the_essentials():
    term, out = console(True, 40)
    clock = Clock()
    bar = BarReporter(term, clock=clock)
    bar.epoch_started(9, 100, 60000, 12000)  # resumed mid-epoch
    steps(bar, clock, 345, 2.628e-06, 1e-4, 123456.0)  # 47655 steps of 0.5 s to go
    live = screen(out.getvalue())[-1]
    bar.close()
    assert live.split() == ["12345/60000", "loss", "2.628e-06", "ETA", "6:37:08"]
    assert len(live) <= 40 and "…" not in live


def test_each_evaluation_has_its_own_line_below_its_epoch():
    term, out = console(True, 80)
    clock = Clock()
    bar = BarReporter(term, clock=clock)
    bar.message("training x in runs/x (eager mode, cpu, 90 steps, 45 per epoch)")
    for epoch, accuracy in ((0, 0.8556), (1, 0.9111)):
        bar.epoch_started(epoch, 2, 45, 0)
        steps(bar, clock, 45, 0.25, 0.01, 1000.0)
        bar.epoch_finished()
        bar.evaluated({"kind": "eval", "split": "val", "step": 45 * (epoch + 1),
                       "epoch": epoch + 1.0, "loss": 0.5, "accuracy": accuracy})  # fmt: skip
    bar.close()
    rows = screen(out.getvalue())
    assert rows[0].startswith("training x")
    assert rows[1].startswith("epoch 1/2 ━") and "45/45" in rows[1] and "took 22.5s" in rows[1]
    assert rows[2] == "  val at step 45: loss 0.5000, accuracy 0.8556"
    assert rows[3].startswith("epoch 2/2 ━") and "accuracy" not in rows[3]
    assert rows[4] == "  val at step 90: loss 0.5000, accuracy 0.9111"
    assert len(rows) == 5


class EpochsSeen(QuietReporter):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[tuple[int, int | None, int, int]] = []

    def epoch_started(self, epoch: int, epochs: int | None, batches: int, start: int) -> None:
        self.epochs.append((epoch, epochs, batches, start))


def test_max_steps_shows_the_true_total(tmp_path):
    """digits: 1437 training samples in batches of 32 is 45 a epoch; max_steps 100 ends the
    run in its third epoch, after 10 batches, so the bar says 1/3 .. 3/3, not 1/30."""
    text = """
name: capped
data: {dataset: digits, batch_size: 32}
model: {layers: [flatten, {linear: {out: 10}}]}
train: {epochs: 30, max_steps: 100}
"""
    seen = EpochsSeen()
    train(parse_config(text, "capped.yaml"), TrainOptions(runs_root=tmp_path), seen)
    assert seen.epochs == [(0, 3, 45, 0), (1, 3, 45, 0), (2, 3, 10, 0)]


def test_plain_records_and_quiet_notices():
    plain, out = console(False)
    reporter = Reporter(plain)
    reporter.logged({"kind": "train", "step": 50, "epoch": 1.5, "loss": 0.123456, "lr": 1e-4,
                     "samples_per_s": 2000.0, "wall_time": 1.0})  # fmt: skip
    assert out.getvalue() == "train step 50 epoch 1.50 loss 0.1235 lr 0.0001 samples/s 2000\n"
    quiet_console, quiet_out = console(False)
    quiet = QuietReporter(quiet_console)
    quiet.message("training ...")
    quiet.logged({"step": 1, "loss": 1.0})
    quiet.notice("resume with: trainctl train --resume runs/x")
    assert quiet_out.getvalue() == "resume with: trainctl train --resume runs/x\n"


def test_format_record_skips_bookkeeping_fields():
    text = format_record({"kind": "eval", "split": "val", "step": 3, "wall_time": 9.0,
                          "samples_per_s": None, "accuracy": 1.0})  # fmt: skip
    assert text == "split val step 3 accuracy 1.000"


def test_rates_and_tiny_losses_keep_their_significant_digits():
    slow = format_record({"step": 1, "loss": 2.628e-06, "samples_per_s": 57.3})
    fast = format_record({"step": 2, "loss": 0.5, "samples_per_s": 109.4})
    assert slow == "step 1 loss 2.628e-06 samples/s 57.30"
    assert fast == "step 2 loss 0.5000 samples/s 109.4"


def test_the_bar_does_not_jump_back_and_forth_as_numbers_change_length():
    """The bar narrows when a number needs the room, then stays narrow for the epoch."""
    term, out = console(True, 80)
    clock = Clock()
    bar = BarReporter(term, clock=clock)
    bar.epoch_started(0, 1, 100, 0)
    steps(bar, clock, 10, 0.09876, 9.328e-06, 123456.0)
    first = screen(out.getvalue())[-1]
    steps(bar, clock, 10, 0.5, 0.0475, 1000.0)  # every number shorter
    later = screen(out.getvalue())[-1]
    bar.close()
    assert first.index(" 10/100 ") == later.index(" 20/100 ")


def test_the_loss_shown_is_the_epochs_running_mean():
    term, out = console(True, 120)
    clock = Clock()
    bar = BarReporter(term, clock=clock)
    bar.epoch_started(0, 1, 10, 0)
    for loss in (1.0, 0.5, 0.3):
        steps(bar, clock, 1, loss, 0.01, 100.0)
    assert "loss 0.6000" in screen(out.getvalue())[-1]
    bar.close()
