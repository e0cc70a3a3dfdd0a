"""A run records what its model takes (`model_input.json`), so predict, export and serve
work where its training data is not: the data file deleted, the run moved elsewhere."""

import json
import shutil

import numpy as np
import pytest
from predict_files import NPZ_CONFIG, train
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app


@pytest.fixture
def run_without_data(tmp_path):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(40, 5)).astype(np.float32)
    np.savez(tmp_path / "features.npz", x=x, y=(x[:, 0] > 0) + 2 * (x[:, 1] > 0))
    run = train(tmp_path, NPZ_CONFIG)
    samples = generator.normal(size=(6, 5)).astype(np.float32)
    before = trainctl.load(run).predict(samples)
    moved = tmp_path / "elsewhere" / run.name
    shutil.move(run, moved)
    (tmp_path / "features.npz").unlink()
    return moved, samples, before


def test_the_record_describes_the_training_data(npz_run):
    record = json.loads((npz_run / "model_input.json").read_text())
    assert record["input_shape"] == [5] and record["input_dtype"] == "float32"
    assert record["task"] == "classification" and record["num_classes"] == 4
    assert record["target_shape"] == [] and record["target_dtype"] == "int64"


def test_predict_needs_no_training_data(run_without_data):
    run, samples, before = run_without_data
    model = trainctl.load(run)
    np.testing.assert_array_equal(model.predict(samples), before)
    assert model.input.class_names == ("0", "1", "2", "3")
    np.savez(run.parent / "new.npz", x=samples)
    result = CliRunner().invoke(app, ["predict", str(run), str(run.parent / "new.npz")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "sample,class,probability"


def test_eval_still_reads_the_data_and_says_it_is_gone(run_without_data):
    run, _, _ = run_without_data
    result = CliRunner().invoke(app, ["eval", str(run)])
    assert result.exit_code == 2
    assert "features.npz" in result.output


def test_a_damaged_record_is_named(run_without_data):
    run, samples, _ = run_without_data
    (run / "model_input.json").write_text('{"format": 1}')
    result = CliRunner().invoke(app, ["predict", str(run), "x.npz"])
    assert result.exit_code != 0
    assert "model_input.json is damaged: no 'input_shape'" in result.output
