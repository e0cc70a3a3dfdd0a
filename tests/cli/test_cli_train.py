"""train, eval and runs driven as a user drives them: the CLI, a run folder, exit codes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_files import stand_in_data
from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train.metrics_log import read_metrics

ROOT = Path(__file__).parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def only_run(runs_root: Path) -> Path:
    (run,) = list(runs_root.iterdir())
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=60",
                    "--runs-root", runs)  # fmt: skip
    assert result.exit_code == 0, result.output
    return only_run(runs)


def test_train_prints_plain_lines_and_the_final_result(digits_run):
    log = (digits_run / "train.log").read_text()
    assert "train step 20" in log and "eval split val" in log
    summary = json.loads((digits_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 60


def test_train_output_is_plain_text_without_a_terminal(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=40",
                    "--runs-root", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("training digits-mlp in ")
    assert any(line.startswith("train step 20 epoch ") for line in lines)
    assert lines[-1].startswith("completed: 40 steps in ")
    assert "\r" not in result.output  # no progress bar redraws in logs


def test_quiet_prints_only_the_result(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=5",
                    "--runs-root", tmp_path, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("completed: 5 steps")


def test_name_and_run_dir_choose_the_folder(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=2",
                    "--runs-root", tmp_path, "--name", "mine", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert only_run(tmp_path).name.startswith("mine-")
    target = tmp_path / "exact"
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=2",
                    "--run-dir", target, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (target / "checkpoints" / "last.safetensors").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "optimizer.lr=abc"], "optimizer.lr: expected a number > 0, found 'abc'"),
        (["--set", "model.layers[0]=lineer"], "did you mean 'linear'?"),
        (["--name", "../escape"], "name"),
    ],
)
def test_bad_input_is_one_message_and_exit_2_with_no_folder(tmp_path, args, message):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--runs-root", tmp_path, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_model_that_does_not_fit_the_data_names_the_layer(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--runs-root", tmp_path,
                    "--set", "model.layers[5].linear.out=7")  # fmt: skip
    assert result.exit_code == 2
    assert "10 classes needs a last layer with 10 outputs" in result.output


def test_eval_prints_scores_and_writes_a_report(digits_run):
    result = invoke("eval", digits_run, "--split", "test")
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "confusion matrix" in result.output
    report = json.loads((digits_run / "eval-test.json").read_text())
    assert report["split"] == "test" and report["samples"] == 180
    assert 0.5 < report["metrics"]["accuracy"] <= 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 180
    assert report["checkpoint"].endswith("best.safetensors")


def test_eval_json_last_checkpoint_and_val_split(digits_run):
    result = invoke("eval", digits_run, "--checkpoint", "last", "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["checkpoint_step"] == 60 and report["split"] == "val"
    val_records = [r for r in read_metrics(digits_run / "metrics.jsonl") if r["kind"] == "eval"]
    assert report["loss"] == pytest.approx(val_records[-1]["loss"], rel=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "holdout"], "unknown split 'holdout'"),
        (["--checkpoint", "nowhere.safetensors"], "checkpoint nowhere.safetensors does not exist"),
        (["--set", "model.layers[1].linear.out=99"], "shape"),
    ],
)
def test_eval_errors(digits_run, args, message):
    result = invoke("eval", digits_run, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_eval_of_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("eval", tmp_path)
    assert result.exit_code == 2 and "config.yaml" in result.output


def test_runs_lists_and_shows(digits_run):
    result = invoke("runs", "--runs-root", digits_run.parent)
    assert result.exit_code == 0, result.output
    assert digits_run.name in result.output and "completed" in result.output
    result = invoke("runs", "--runs-root", digits_run.parent, "show", digits_run.name)
    assert result.exit_code == 0, result.output
    assert "training loss" in result.output and "step 1 … 60" not in result.output
    assert "step 20 … 60" in result.output and "█" in result.output


def test_runs_in_a_pipe_prints_tab_separated_lines(digits_run):
    result = invoke("runs", "--runs-root", digits_run.parent)  # CliRunner's stdout is no tty
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split("\t")[:3] == ["run", "status", "steps"]
    completed = [row.split("\t") for row in rows if "completed" in row]  # runs | grep completed
    assert [row[:3] for row in completed] == [[digits_run.name, "completed", "60"]]


def test_runs_on_an_80_column_terminal_fits_without_cutting_cells(digits_run):
    terminal = {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "FORCE_COLOR": "1", "NO_COLOR": "1"}
    result = runner.invoke(app, ["runs", "--runs-root", str(digits_run.parent)], env=terminal)
    assert result.exit_code == 0, result.output
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)  # the header is bold
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines) and "…" not in text
    assert any(line.startswith(f"{digits_run.name}  completed") for line in lines), lines
    plain = runner.invoke(app, ["runs", "--runs-root", str(digits_run.parent), "--plain"],
                          env=terminal)  # fmt: skip
    assert f"{digits_run.name}\tcompleted\t60\t" in plain.output


def test_runs_on_an_empty_root(tmp_path):
    result = invoke("runs", "--runs-root", tmp_path)
    assert result.exit_code == 0 and "no runs" in result.output


def test_runs_on_a_missing_root_says_so(tmp_path):
    result = invoke("runs", "--runs-root", tmp_path / "runz")
    assert result.exit_code == 2
    assert result.stderr == (
        f"the runs folder {tmp_path / 'runz'} does not exist (trainctl train creates it with "
        "its first run)\n"
    )
    assert result.stdout == ""


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_example_config_trains_and_evaluates(config, tmp_path):
    """Shortened to a few steps; the file-based data sets get tiny files in the real formats."""
    overrides = ["train.max_steps=3", "train.eval_every=3", "data.batch_size=4"]
    overrides += stand_in_data(config.stem, tmp_path / "data")
    sets = [arg for o in overrides for arg in ("--set", o)]
    result = invoke("train", config, *sets, "--runs-root", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    split = "train" if "regression" in config.stem else "test"
    result = invoke("eval", run, "--split", split, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["samples"] > 0


def test_linear_regression_learns_y_equals_2x(tmp_path):
    result = invoke("train", ROOT / "configs/linear_regression.yaml", "--runs-root", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    from trainctl.train.checkpoint import load_checkpoint

    weights = load_checkpoint(only_run(tmp_path) / "checkpoints" / "last.safetensors").model_state
    assert weights["0.weight"][0, 0] == pytest.approx(2.0, abs=0.01)
    assert weights["0.bias"][0] == pytest.approx(0.0, abs=0.02)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_a_real_process_which_then_resumes(tmp_path, signum, code):
    command = [sys.executable, "-m", "trainctl", "train", str(ROOT / "configs/digits_mlp.yaml"),
               "--set", "train.max_steps=2000", "--set", "train.epochs=null",
               "--set", "train.log_every=1",
               "--runs-root", str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any(tmp_path.glob("*/metrics.jsonl")))
        metrics = next(tmp_path.glob("*/metrics.jsonl"))
        _wait_for(lambda: metrics.stat().st_size > 2000)
        os.kill(process.pid, signum)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code, err
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert f"trainctl train --resume {run}" in out
    stopped_at = summary["steps"]
    assert 0 < stopped_at < 2000
    resume = [sys.executable, "-m", "trainctl", "train", "--resume", str(run), "-q"]
    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 2001))


def test_resume_takes_set_for_what_the_run_has_not_computed_yet(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=4",
                    "--runs-root", tmp_path, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    result = invoke("train", "--resume", run, "--set", "train.max_steps=8", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("completed: 8 steps")
    assert "max_steps: 8" in (run / "config.yaml").read_text()
    result = invoke("train", "--resume", run, "--set", "data.batch_size=8", "-q")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"--set changes data.batch_size of the run {run}")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
