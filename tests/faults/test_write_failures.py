"""Write failures: a full disk or an unusable folder in the middle of a run.

The run stops with one line naming the file, the OS's reason and the step, its summary says
failed with that error, the previous checkpoint is still there and loads, and the command
exits 1 (a run that failed; 2 is for bad input).
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from faults_helpers import CONFIG, REPORT, config, only_run, run_train
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train import atomic
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.progress import QuietReporter
from trainctl.train.trainer import TrainingError

FAILURES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def closing_note():
    yield
    if FAILURES:
        REPORT.append(
            f"write failures: {len(FAILURES)} ({'; '.join(FAILURES)}), each failed "
            "cleanly with the previous checkpoint intact"
        )


def full_disk_at(monkeypatch, nth: int, target: str) -> None:
    """The `nth` atomic write whose target is in `target` (a folder name) fails half way
    with ENOSPC, as a full disk does."""
    real = atomic.write_all
    calls = {"n": 0}

    def write_all(fd: int, data: bytes) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(os.path.dirname(path)) == target:
            calls["n"] += 1
            if calls["n"] == nth:
                os.write(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(atomic, "write_all", write_all)


def summary_of(runs_root):
    return json.loads((only_run(runs_root) / "summary.json").read_text())


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_full_disk_on_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, mode):
    # checkpoint writes: last@4, last@8, best@10 (first evaluation), last@12 <- fails
    full_disk_at(monkeypatch, 4, "checkpoints")
    with pytest.raises(TrainingError) as caught:
        run_train(config(f"mode={mode}"), tmp_path / "runs")
    message = str(caught.value)
    run = only_run(tmp_path / "runs")
    assert "\n" not in message
    assert message.startswith(f"step 12: cannot write {run}/checkpoints/last.safetensors: ")
    assert "No space left on device" in message
    assert message.endswith("checkpoints/last (step 8) is kept")
    summary = summary_of(tmp_path / "runs")
    assert summary["status"] == "failed" and summary["error"] == message
    assert summary["steps"] == 12
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.trainer_state["trainer"]["step"] == 8
    assert (
        load_checkpoint(run / "checkpoints" / "best.safetensors").trainer_state["trainer"]["step"]
        == 10
    )
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the half-written file is gone
    FAILURES.append(f"ENOSPC on the 4th checkpoint write ({mode})")


def test_full_disk_exits_1_with_one_line_and_the_run_resumes_later(tmp_path, monkeypatch):
    full_disk_at(monkeypatch, 2, "checkpoints")
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(app, ["train", str(cfg), "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if "No space left" in line]
    assert len(errors) == 1 and errors[0].startswith("step 8: cannot write ")
    assert "Traceback" not in result.output
    monkeypatch.undo()  # the disk has room again: the run continues from step 4
    run = only_run(tmp_path / "runs")
    resumed = CliRunner().invoke(app, ["train", "--resume", str(run), "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert summary_of(tmp_path / "runs")["resumed_from_step"] == 4
    FAILURES.append("ENOSPC through the CLI, then resumed")


def test_full_disk_on_the_metrics_log_fails_the_run(tmp_path, monkeypatch):
    real = os.write
    calls = {"n": 0}

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            calls["n"] += 1
            if calls["n"] == 7:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(TrainingError, match=r"^step 7: cannot write .*metrics\.jsonl: No space"):
        run_train(config(), tmp_path / "runs")
    monkeypatch.undo()
    summary = summary_of(tmp_path / "runs")
    assert summary["status"] == "failed" and "metrics.jsonl" in summary["error"]
    run = only_run(tmp_path / "runs")
    assert (
        load_checkpoint(run / "checkpoints" / "last.safetensors").trainer_state["trainer"]["step"]
        == 4
    )
    FAILURES.append("ENOSPC on metrics.jsonl")


class ReplaceCheckpointsFolder(QuietReporter):
    """At a given step, the checkpoints folder is moved away and a plain file put there."""

    def __init__(self, run_parent, step: int) -> None:
        super().__init__()
        self.run_parent, self.step, self.count = run_parent, step, 0

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.count += 1
        if self.count == self.step:
            folder = next(self.run_parent.iterdir()) / "checkpoints"
            shutil.move(folder, folder.with_name("moved-checkpoints"))
            folder.write_text("not a folder")


def test_a_checkpoints_path_that_is_no_folder_fails_the_run(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(TrainingError) as caught:
        run_train(config(), runs, ReplaceCheckpointsFolder(runs, 6))
    run = only_run(runs)
    assert str(caught.value).startswith(f"step 8: cannot write {run}/checkpoints/last.safetensors")
    assert "Not a directory" in str(caught.value)
    assert summary_of(runs)["status"] == "failed"
    moved = run / "moved-checkpoints" / "last.safetensors"
    assert load_checkpoint(moved).trainer_state["trainer"]["step"] == 4
    FAILURES.append("checkpoints/ replaced by a file (ENOTDIR)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoints_folder_fails_the_run(tmp_path):
    class ReadOnlyAt(QuietReporter):
        def advanced(self, loss, lr, samples_per_s):
            for folder in (tmp_path / "runs").glob("*/checkpoints"):
                folder.chmod(0o555)

    try:
        with pytest.raises(TrainingError, match="Permission denied"):
            run_train(config(), tmp_path / "runs", ReadOnlyAt())
    finally:
        for folder in (tmp_path / "runs").glob("*/checkpoints"):
            folder.chmod(0o755)
    assert summary_of(tmp_path / "runs")["status"] == "failed"
