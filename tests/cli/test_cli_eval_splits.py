"""`eval RUN --set ...` never scores samples the run trained on as held out: overrides that
re-draw the splits are refused with exit code 2 naming the key, and a data file changed
under the run's path is caught by the split identity the run recorded (splits.json)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trainctl.cli import app

runner = CliRunner()

TABLE = """\
name: table
data: {{dataset: csv, path: {path}, val_split: 0.2, test_split: 0.2}}
model:
  layers: [linear: {{out: 3}}]
train: {{max_steps: 4}}
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_table(path: Path, seed: int = 0) -> None:
    generator = np.random.default_rng(seed)
    rows = np.column_stack([generator.normal(size=(60, 2)), np.arange(60) % 3])
    np.savetxt(path, rows, delimiter=",", fmt="%.6f")


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    """A run on a CSV file, which the tests may change under it (each on its own copy)."""
    folder = tmp_path_factory.mktemp("table")
    write_table(folder / "table.csv")
    (folder / "c.yaml").write_text(TABLE.format(path=folder / "table.csv"))
    result = invoke("train", folder / "c.yaml", "--runs-root", folder / "runs", "-q")
    assert result.exit_code == 0, result.output
    (run,) = (folder / "runs").iterdir()
    return run


@pytest.fixture
def run(table_run, tmp_path) -> Path:
    """A copy of the run, reading its own copy of the data file."""
    shutil.copy(table_run.parent.parent / "table.csv", tmp_path / "table.csv")
    copy = tmp_path / table_run.name
    shutil.copytree(table_run, copy)
    config = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(config.replace(str(table_run.parent.parent), str(tmp_path)))
    return copy


@pytest.mark.parametrize(
    "override",
    [
        "seed=2",
        "data.test_split=0.5",
        "data.val_split=0.5",
        "data={dataset: spirals}",
        "data.options.target_index=0",
        "data.options={header: false, target_index: -1, delimiter: ','}",
        "data={dataset: csv, path: elsewhere.csv}",
    ],
)
def test_an_override_that_redraws_the_splits_is_refused(run, override):
    result = invoke("eval", run, "--set", override)
    assert result.exit_code == 2, result.output
    key = override.split("=", 1)[0]
    assert result.output.startswith(f"--set {override}: {key}"), result.output
    assert "expected the run's own value" in result.output
    assert "Traceback" not in result.output
    assert not (run / "eval-test.json").exists()


def test_a_data_path_override_is_refused_even_for_identical_data(run, tmp_path):
    shutil.copy(tmp_path / "table.csv", tmp_path / "same.csv")
    result = invoke("eval", run, "--set", f"data.path={tmp_path / 'same.csv'}")
    assert result.exit_code == 2
    assert result.output.startswith(f"--set data.path={tmp_path / 'same.csv'}: data.path: ")


@pytest.mark.parametrize(
    "overrides", [[], ["data.eval_batch_size=7"], ["device=cpu", "mode=graph", "seed=0"]]
)
def test_overrides_that_keep_the_splits_score_the_same(run, overrides):
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("eval", run, "--json", *sets)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 12
    reference = json.loads(invoke("eval", run, "--json").output)
    assert report["loss"] == pytest.approx(reference["loss"], rel=1e-6)


def test_a_data_file_changed_under_the_same_path_is_caught(run, tmp_path):
    assert json.loads((run / "splits.json").read_text())["splits"]["test"]["samples"] == 12
    write_table(tmp_path / "table.csv", seed=1)
    result = invoke("eval", run)
    assert result.exit_code == 2
    assert result.output.startswith(f"{run / 'splits.json'}: the data loaded now ")
    assert "not split as when the run trained" in result.output
    assert not (run / "eval-test.json").exists()


def test_a_run_without_splits_json_still_evaluates_and_still_refuses_overrides(run):
    """Runs made before splits.json existed: scored without the identity check."""
    (run / "splits.json").unlink()
    assert invoke("eval", run).exit_code == 0
    assert invoke("eval", run, "--set", "seed=2").exit_code == 2


def train_beside(run: Path, *overrides: str) -> Path:
    """Another run on the same data file as `run`, changed by `overrides`."""
    runs = run.parent / "other-runs"
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = invoke("train", run / "config.yaml", "--runs-root", runs, "-q", *sets)
    assert result.exit_code == 0, result.output
    (other,) = runs.iterdir()
    return other


def test_a_checkpoint_of_a_run_split_otherwise_is_refused(run):
    other = train_beside(run, "seed=5")
    checkpoint = other / "checkpoints" / "last.safetensors"
    result = invoke("eval", run, "--checkpoint", checkpoint)
    assert result.exit_code == 2
    assert result.output.startswith(f"{checkpoint}: trained by the run {other}, which split ")
    assert "test: 12 samples, sha256" in result.output and len(result.output.splitlines()) == 1
    assert not (run / "eval-test.json").exists()


def test_a_checkpoint_of_a_run_split_the_same_way_is_scored(run):
    other = train_beside(run, "optimizer.lr=0.05")
    checkpoint = other / "checkpoints" / "last.safetensors"
    result = invoke("eval", run, "--checkpoint", checkpoint, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["checkpoint"] == str(checkpoint)
