"""Progress output: a live bar on terminals, plain records elsewhere, silence with --quiet."""

import io

from rich.console import Console

from trainctl.train.progress import (
    BarReporter,
    QuietReporter,
    Reporter,
    format_record,
    make_reporter,
)


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_reporter_choice_follows_the_output():
    assert type(make_reporter(console=console(False)[0])) is Reporter
    bar = make_reporter(console=console(True)[0])
    assert isinstance(bar, BarReporter)
    bar.close()
    assert isinstance(make_reporter(quiet=True, console=console(True)[0]), QuietReporter)


def test_bar_shows_epoch_loss_metric_lr_and_speed():
    term, out = console(True)
    bar = BarReporter(term)
    bar.epoch_started(0, 3, 10, 0)
    bar.evaluated({"kind": "eval", "step": 0, "epoch": 0.0, "loss": 0.5, "accuracy": 0.75})
    for _ in range(4):
        bar.advanced(0.25, 0.01, 1234.0)
    bar.progress.refresh()
    bar.close()
    text = out.getvalue()
    assert "epoch 1/3" in text and "4/10" in text
    assert "loss 0.2500" in text and "accuracy 0.7500" in text
    assert "lr 0.01" in text and "1,234 samples/s" in text


def test_plain_records_and_quiet_notices():
    plain, out = console(False)
    reporter = Reporter(plain)
    reporter.logged({"kind": "train", "step": 50, "epoch": 1.5, "loss": 0.123456, "lr": 1e-4,
                     "samples_per_s": 2000.0, "wall_time": 1.0})  # fmt: skip
    assert out.getvalue() == "train step 50 epoch 1.50 loss 0.1235 lr 1.000e-04 samples/s 2000.0\n"
    quiet_console, quiet_out = console(False)
    quiet = QuietReporter(quiet_console)
    quiet.message("training ...")
    quiet.logged({"step": 1, "loss": 1.0})
    quiet.notice("resume with: trainctl train --resume runs/x")
    assert quiet_out.getvalue() == "resume with: trainctl train --resume runs/x\n"


def test_format_record_skips_bookkeeping_fields():
    text = format_record({"kind": "eval", "split": "val", "step": 3, "wall_time": 9.0,
                          "samples_per_s": None, "accuracy": 1.0})  # fmt: skip
    assert text == "split val step 3 accuracy 1.0000"
