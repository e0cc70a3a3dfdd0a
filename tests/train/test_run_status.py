"""What `runs` and `runs show` say about a run whose summary.json still says running."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.config import parse_config
from trainctl.train.progress import QuietReporter
from trainctl.train.run_status import current_summary
from trainctl.train.rundir import RunFolder
from trainctl.train.runlock import hold_run_lock
from trainctl.train.trainer import TrainOptions, train

CONFIG = """
name: status
data: {dataset: digits, batch_size: 64}
model: {layers: [flatten, {linear: {out: 10}}]}
optimizer: {name: sgd, lr: 0.1}
train: {max_steps: 30, log_every: 5, eval_every: 10}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = train(parse_config(CONFIG, "status.yaml"), TrainOptions(runs_root=runs),
                   QuietReporter())  # fmt: skip
    return result.run.path, result.summary


@pytest.fixture
def killed(finished, tmp_path):
    """A copy of the finished run whose summary.json is the one a run writes as it starts,
    which is all a SIGKILL leaves of it."""
    source, _ = finished
    run = tmp_path / source.name
    shutil.copytree(source, run)
    summary = json.loads((run / "summary.json").read_text())
    kept = ("name", "run_dir", "mode", "device", "dtype", "seed", "started_at", "command")
    starting = {"status": "running", **{key: summary[key] for key in kept if key in summary}}
    (run / "summary.json").write_text(json.dumps(starting))
    return RunFolder(run)


def test_a_run_nobody_trains_is_stopped_with_its_progress_and_resume_command(finished, killed):
    _, summary = finished
    shown = current_summary(killed)
    assert shown["status"] == "stopped"
    assert shown["steps"] == 30
    assert shown["best"] == summary["best"]  # the same metric, value and step
    assert shown["final"] == summary["final"]
    assert shown["resume_command"] == f"trainctl train --resume {killed.path}"


def test_a_run_being_trained_stays_running_and_shows_its_progress(killed):
    with hold_run_lock(killed.path):
        shown = current_summary(killed)
    assert shown["status"] == "running" and shown["steps"] == 30
    assert "resume_command" not in shown


def test_a_stopped_run_with_nothing_logged_yet(killed):
    killed.metrics_path.unlink()
    shown = current_summary(killed)
    assert shown["status"] == "stopped" and shown["steps"] == 0
    assert "best" not in shown


def test_finished_runs_are_as_their_summary_says(finished):
    run, summary = finished
    assert current_summary(RunFolder(run)) == json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"


def test_runs_and_runs_show_list_a_killed_run_as_stopped(killed):
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "--runs-root", str(killed.path.parent)],
                           env={"COLUMNS": "200"})  # fmt: skip
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if killed.path.name in line)
    _, status, steps, best, *_ = row.split("\t")  # not a terminal: tab-separated
    assert (status, steps) == ("stopped", "30") and "@ 30" in best
    shown = runner.invoke(app, ["runs", "show", str(killed.path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"trainctl train --resume {killed.path}" in shown.stdout
