"""configs/fruit_table.yaml end to end: a table with text columns, string labels, missing
values and a separate test file, trained in both modes (graph equals eager bit for bit),
resumed, evaluated and predicted on, always with the encoding the run stored."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app
from trainctl.config import load_config
from trainctl.data.table_encoder import TableEncoder
from trainctl.train.components import build_components, load_data

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "fruit_table.yaml"
NAMES = ["apple", "banana", "grape", "lemon", "orange"]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def train(tmp_path, *overrides):
    sets = [part for item in overrides for part in ("--set", item)]
    result = invoke("train", CONFIG, "--runs-root", tmp_path / "runs", "-q", *sets)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    return run, result


@pytest.fixture(scope="module")
def fruit_run(tmp_path_factory):
    run, result = train(tmp_path_factory.mktemp("fruit"), "train.epochs=4")
    assert "test: 8 value(s) of column 'color' not seen in training" in result.output
    return run


def test_relative_test_path_is_read_from_the_config_folder():
    options = load_config(CONFIG).data.options
    assert options["test_path"] == str(ROOT / "datasets" / "fruit_test.csv")


def test_graph_mode_equals_eager_mode_bit_for_bit_on_the_table():
    runs = {}
    for mode in ("eager", "graph"):
        components = build_components(load_config(CONFIG, [f"mode={mode}"]))
        step = components.make_step()
        losses = [step.train(x, y) for epoch in range(2)
                  for x, y in components.loader("train", training=True).epoch(epoch)]  # fmt: skip
        runs[mode] = losses, components.model.state_dict()
    (eager_losses, eager_params), (graph_losses, graph_params) = runs["eager"], runs["graph"]
    assert len(eager_losses) == 22 and eager_losses == graph_losses
    for name, value in eager_params.items():
        assert np.array_equal(value, graph_params[name]), name


def test_the_run_stores_its_encoding_and_class_names(fruit_run):
    stored = json.loads((fruit_run / "preprocessing.json").read_text())
    assert stored["labels"] == NAMES and stored["missing"] == "mean" and stored["standardize"]
    assert stored["columns"][2]["categories"] == ["green", "orange", "purple", "red", "yellow"]
    summary = json.loads((fruit_run / "summary.json").read_text())
    assert summary["class_names"] == NAMES
    assert summary["data_notes"] == [
        "test: 8 value(s) of column 'color' not seen in training, encoded as its '<other>' slot"
    ]


def test_eval_confusion_matrix_shows_the_class_names(fruit_run):
    result = invoke("eval", fruit_run)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "apple" in line)
    assert [name for name in NAMES if name in header] == NAMES
    report = json.loads((fruit_run / "eval-test.json").read_text())
    assert report["class_names"] == NAMES and report["samples"] == 100


def rows_of(result):
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sample,class,probability"
    return [line.split(",") for line in lines[1:]]


def test_predict_with_and_without_the_target_column_prints_class_names(fruit_run, tmp_path):
    test = ROOT / "datasets" / "fruit_test.csv"
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("".join(line.rsplit(",", 1)[0] + "\n"
                                  for line in test.read_text().splitlines()))  # fmt: skip
    with_target = rows_of(invoke("predict", fruit_run, test))
    without = rows_of(invoke("predict", fruit_run, unlabelled))
    assert with_target == without and len(without) == 100
    assert {row[1] for row in without} <= set(NAMES)
    # exactly the training-time encoding: the run's own encoded test split gives the same
    model = trainctl.load(fruit_run)
    stored = json.loads((fruit_run / "preprocessing.json").read_text())
    test_split = load_data(model.restored.config, stored).test
    expected = model.predict(test_split.inputs).argmax(axis=1)
    assert [row[1] for row in without] == [NAMES[i] for i in expected]


def test_predict_refuses_a_table_of_other_columns(fruit_run, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("weight_g,diameter_cm,color,skin\n1,2,red,rough\n")
    result = invoke("predict", fruit_run, table)
    assert result.exit_code == 2
    assert (f"{table}: 4 columns, expected the run's 5 input columns (or one more: the target "
            "column 'fruit', which is left out)") in result.stderr  # fmt: skip
    table.write_text("weight_g,diameter_cm\n1,2\n")
    result = invoke("predict", fruit_run, table)
    assert result.exit_code == 2
    assert f"{table}: option categorical names no column 'color'" in result.stderr


def test_a_run_that_drops_missing_rows_refuses_them_in_predict(tmp_path):
    run, result = train(tmp_path, "train.max_steps=2", "data.options.missing=drop")
    assert "train: dropped" in result.output and "test: dropped" in result.output
    table = tmp_path / "gap.csv"
    table.write_text("weight_g,diameter_cm,color,skin,sweetness\n100,5,red,smooth,3\n"
                     "NA,5,red,smooth,3\n")  # fmt: skip
    result = invoke("predict", run, table)
    assert result.exit_code == 2
    assert (
        f"{table}: line 3, column 1: a missing value in column 'weight_g'; the run left "
        "such rows out (missing: drop) and has no value to fill in"
    ) in result.stderr


def test_resume_reuses_the_stored_encoding(tmp_path, monkeypatch):
    run, _ = train(tmp_path, "train.max_steps=3")
    stored = (run / "preprocessing.json").read_text()

    def refit(*args, **kwargs):
        raise AssertionError("the encoder was fitted again")

    monkeypatch.setattr(TableEncoder, "fit", refit)
    result = invoke("train", "--resume", run, "--set", "train.max_steps=6", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (run / "preprocessing.json").read_text() == stored


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.options.categorical=color",
         "data.options.categorical: expected a list of strings, found 'color'"),
        ("data.options.missing=zero",
         "data.options.missing: expected one of error, mean, drop, found 'zero'"),
        ("data.options.categorical=[colour]",
         f"{ROOT / 'datasets' / 'fruit_train.csv'}: option categorical names no column 'colour'"),
        ("data.options.missing=error",
         f"{ROOT / 'datasets' / 'fruit_train.csv'}: line 4, column 3: a missing value in column "
         "'color' (data.options.missing is error"),
    ],
)  # fmt: skip
def test_bad_table_options_stop_validate_build_with_one_line(override, message):
    result = invoke("validate", CONFIG, "--build", "--set", override)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_run_from_before_preprocessing_json_fits_its_encoder_again(fruit_run, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(fruit_run, old)
    (old / "preprocessing.json").unlink()
    test = ROOT / "datasets" / "fruit_test.csv"
    assert rows_of(invoke("predict", old, test)) == rows_of(invoke("predict", fruit_run, test))
