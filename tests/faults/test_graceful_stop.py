"""Graceful stop: SIGINT and SIGTERM in eager and graph mode, while training and while evaluating.

Every stop writes a checkpoint, marks the run interrupted, prints the resume command and exits
130/143; the resumed run then logs exactly what the uninterrupted one did (an evaluation cut
short by the signal runs again on resume, once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from faults_helpers import CONFIG, REPORT, ROOT, config, only_run, records, resume, run_train
from signals import SignalAtStep
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train import step as step_module
from trainctl.train.checkpoint import load_checkpoint

SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
STOPS: list[str] = []


def signal_in_evaluation(monkeypatch, batch: int, signum: int) -> None:
    """Send `signum` to this process while the `batch`th evaluation batch is computed."""
    calls = {"n": 0}
    for cls in (step_module.EagerStep, step_module.GraphStep):
        real = cls.evaluate

        def evaluate(self, inputs, _real=real):
            calls["n"] += 1
            if calls["n"] == batch:
                os.kill(os.getpid(), signum)
            return _real(self, inputs)

        monkeypatch.setattr(cls, "evaluate", evaluate)


@pytest.fixture(scope="module", autouse=True)
def closing_note():
    yield
    if STOPS:
        REPORT.append(f"graceful stops: {len(STOPS)} ({', '.join(STOPS)}), all resumed exactly")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    runs = tmp_path_factory.mktemp("reference")
    found = {}
    for mode in ("eager", "graph"):
        run = run_train(config(f"mode={mode}"), runs / mode).run.path
        found[mode] = (records(run, "train"), records(run, "eval"))
    return found


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("name", list(SIGNALS))
@pytest.mark.parametrize("during", ["training", "evaluation"])
def test_stop_checkpoints_and_resumes_exactly(
    tmp_path, monkeypatch, references, mode, name, during
):
    signum, code = SIGNALS[name]
    reporter = None
    if during == "training":
        reporter = SignalAtStep(13, signum)
        stop_step = 13
    else:  # the third batch of the evaluation at step 20 (17 batches each; 10 is the first)
        signal_in_evaluation(monkeypatch, 17 + 3, signum)
        stop_step = 20
    stopped = run_train(config(f"mode={mode}"), tmp_path, reporter)
    run = stopped.run.path
    assert stopped.status == "interrupted" and stopped.exit_code == code
    assert stopped.resume_command == f"trainctl train --resume {run}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == name
    assert summary["steps"] == stop_step
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.trainer_state["trainer"]["step"] == stop_step
    log = (run / "train.log").read_text()
    assert f"interrupted by {name} at step {stop_step}; resume with:" in log
    evaluated = [r["step"] for r in records(run, "eval")]
    if during == "evaluation":
        assert evaluated == [10]  # the one at 20 was cut short, not logged half done
        assert "the evaluation at step 20 was cut short; it runs on resume" in log
    monkeypatch.undo()

    resumed = resume(run)
    assert resumed.status == "completed" and resumed.exit_code == 0
    expected_train, expected_eval = references[mode]
    assert records(run, "train") == expected_train
    assert records(run, "eval") == expected_eval  # the interrupted one made up for, once
    assert resumed.summary["final"]["val"] == {
        k: v for k, v in expected_eval[-1].items() if k not in ("kind", "split", "step", "epoch")
    }
    STOPS.append(f"{mode}/{name}/{during}")


def test_stop_during_evaluation_through_the_cli(tmp_path, monkeypatch):
    signal_in_evaluation(monkeypatch, 5, signal.SIGTERM)
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(
        app, ["train", str(cfg), "--set", "mode=graph", "--runs-root", str(tmp_path / "runs")]
    )
    run = only_run(tmp_path / "runs")
    assert result.exit_code == 143, result.output
    assert f"interrupted by SIGTERM at step 10; resume with:\n  trainctl train --resume {run}" in (
        result.output
    )
    assert result.output.rstrip().splitlines()[-1].startswith("interrupted: 10 steps")


def test_a_real_process_stopped_in_an_evaluation_resumes(tmp_path):
    """SIGINT to a graph-mode process held in its second evaluation (killpoint_site)."""
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(CONFIG)
    marker, release = tmp_path / "held", tmp_path / "go"
    env = {
        **os.environ,
        # The site imports trainctl (eval-batch) before Python puts the working folder on
        # sys.path: the trainctl under test must come from PYTHONPATH, as for the resume below.
        "PYTHONPATH": os.pathsep.join(
            filter(
                None,
                [str(ROOT / "tests" / "faults" / "killpoint_site"), os.environ.get("PYTHONPATH")],
            )
        ),
        "TRAINCTL_KILLPOINT": "eval-batch:20",
        "TRAINCTL_KILLPOINT_MARKER": str(marker),
        "TRAINCTL_KILLPOINT_RELEASE": str(release),
    }
    command = [
        sys.executable,
        "-m",
        "trainctl",
        "train",
        str(cfg),
        "--set",
        "mode=graph",
        "--runs-root",
        str(tmp_path / "runs"),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)  # the handler runs in the held process before it goes on
        release.touch()
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    run = only_run(tmp_path / "runs")
    assert process.returncode == 130, err
    assert f"trainctl train --resume {run}" in out
    assert [r["step"] for r in records(run, "eval")] == [10]
    resumed = subprocess.run(
        [sys.executable, "-m", "trainctl", "train", "--resume", str(run), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in records(run, "eval")] == [10, 20, 30, 40]
    assert [r["step"] for r in records(run, "train")] == list(range(1, 41))
