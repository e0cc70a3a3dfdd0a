"""A run folder has one writer: a real `trainctl train` held mid-run keeps a second writer out,
and once it is SIGKILLed the run is listed as stopped, with its progress, and resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from faults_helpers import CONFIG
from typer.testing import CliRunner

from trainctl.cli import app

SITE = Path(__file__).parent / "killpoint_site"
TIMEOUT = 60.0


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def start_held(tmp_path: Path, runs: Path, point: str) -> subprocess.Popen:
    """`trainctl train` in a real process, held at the kill point `point` until killed."""
    config = tmp_path / "faults.yaml"
    config.write_text(CONFIG)
    marker = tmp_path / "marker"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])),
        "TRAINCTL_KILLPOINT": point,
        "TRAINCTL_KILLPOINT_MARKER": str(marker),
    }
    command = [sys.executable, "-m", "trainctl", "train", config, "--runs-root", runs, "-q"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        assert process.poll() is None, "the run ended before its kill point"
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.01)
    return process


def test_a_second_writer_is_refused_and_a_killed_run_is_stopped_not_running(tmp_path):
    runs = tmp_path / "runs"
    # Renames of checkpoints: last at 4 and 8, best at 10 (the first evaluation), last at 12.
    process = start_held(tmp_path, runs, "checkpoint-rename:4")
    try:
        (run,) = runs.iterdir()
        second = invoke("train", "--resume", run, "-q")
        assert second.exit_code == 2, second.output
        lines = second.stderr.strip().splitlines()
        assert lines == [
            f"{run} is being trained by another process (pid {process.pid}): a run folder "
            "takes one writer at a time; wait for that process to finish, or stop it, then "
            "resume"
        ]
        assert " resuming " not in (run / "train.log").read_text()
        assert len(list((run / "tensorboard").iterdir())) == 1
        listed = invoke("runs", "--runs-root", runs)
        assert (
            listed.exit_code == 0 and "running" in listed.stdout and "stopped" not in listed.stdout
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT)

    listed = invoke("runs", "--runs-root", runs)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if run.name in line)
    assert "stopped" in row and "running" not in row
    _, status, steps, best, *_ = row.split("\t")  # not a terminal: tab-separated
    assert (status, steps) == ("stopped", "12") and "accuracy" in best and "@ 10" in best
    shown = invoke("runs", "show", run.name, "--runs-root", runs)
    assert shown.exit_code == 0, shown.output
    assert f"trainctl train --resume {run}" in shown.stdout
    assert "stopped" in shown.stdout

    resumed = invoke("train", "--resume", run, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith("completed: 40 steps")
    listed = invoke("runs", "--runs-root", runs)
    assert "completed" in listed.stdout and "stopped" not in listed.stdout
