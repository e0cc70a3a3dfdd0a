"""`predict` computes what `eval` computes: on a run's own test samples, written to a new
.npz, .csv or image folder, its outputs equal eval's forward exactly (same model, same eval
mode, same transforms, same batches), in the run's own mode; eager and graph mode agree."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app
from trainctl.predict.inputs import read_inputs
from trainctl.predict.output import class_scores
from trainctl.train.restore import restore_run
from trainctl.train.rundir import RunFolder
from trainctl.train.scoring import score_run

runner = CliRunner()


def eval_outputs(run):
    """eval's outputs on the test split, and the raw test samples they came from."""
    score = score_run(run, "best", "test")
    folder = RunFolder.open(run)
    return score.result.outputs, restore_run(
        folder, folder.read_config()
    ).components.data.test.inputs


def predict_json(run, path, *args):
    result = runner.invoke(app, ["predict", str(run), str(path), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_npz_predictions_equal_evals_forward(npz_run, tmp_path):
    expected, inputs = eval_outputs(npz_run)
    np.savez(tmp_path / "new.npz", x=inputs)
    predictor = trainctl.load(npz_run)
    assert predictor.mode == "graph"
    array, samples = read_inputs(predictor, tmp_path / "new.npz")
    np.testing.assert_array_equal(predictor.predict(array), expected)
    records = predict_json(npz_run, tmp_path / "new.npz", "--top-k", "2")
    probabilities, _ = class_scores(expected, "cross_entropy")
    assert [r["sample"] for r in records] == samples == list(range(len(expected)))
    assert [r["class"] for r in records] == [str(i) for i in probabilities.argmax(axis=1)]
    got = np.array([r["probability"] for r in records], np.float32)
    np.testing.assert_array_equal(got, probabilities.max(axis=1).astype(np.float32))
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["class"] == r["class"] for r in records)


@pytest.mark.parametrize("with_target", [True, False])
def test_csv_predictions_equal_evals_forward(table_run, tmp_path, with_target):
    expected, inputs = eval_outputs(table_run)
    columns = np.asarray(inputs, np.float64)
    header = "size,rooms,age"
    if with_target:  # the target column in its place; predict leaves it out
        columns = np.insert(columns, 1, 123.0, axis=1)
        header = "size,price,rooms,age"
    np.savetxt(tmp_path / "new.csv", columns, delimiter=",", fmt="%.17g", header=header,
               comments="")  # fmt: skip
    predictor = trainctl.load(table_run)
    array, _ = read_inputs(predictor, tmp_path / "new.csv")
    np.testing.assert_array_equal(predictor.predict(array), expected)
    records = predict_json(table_run, tmp_path / "new.csv")
    got = np.array([r["value"] for r in records], np.float32)
    np.testing.assert_array_equal(got, expected[:, 0])


def test_image_predictions_equal_evals_forward(image_run, tmp_path):
    expected, inputs = eval_outputs(image_run)
    folder = tmp_path / "new"
    folder.mkdir()
    for index, file in enumerate(inputs.files):  # named so that sorting keeps eval's order
        shutil.copy(file, folder / f"{index:03d}-{file.name}")
    predictor = trainctl.load(image_run)
    array, samples = read_inputs(predictor, folder)
    np.testing.assert_array_equal(predictor.predict(array), expected)
    records = predict_json(image_run, folder)
    names = ("cat", "dog", "owl")
    assert [r["class"] for r in records] == [names[i] for i in expected.argmax(axis=1)]
    assert [r["sample"] for r in records] == samples == sorted(p.name for p in folder.iterdir())
    one = predict_json(image_run, folder / samples[0])  # a batch of one: the GEMM may round
    assert one[0]["class"] == records[0]["class"]  # differently in the last bit
    assert one[0]["probability"] == pytest.approx(records[0]["probability"], rel=1e-6)


@pytest.mark.parametrize("fixture", ["npz_run", "table_run", "image_run"])
def test_eager_and_graph_mode_agree(fixture, request):
    run = request.getfixturevalue(fixture)
    _, inputs = eval_outputs(run)
    eager = trainctl.load(run, overrides=["mode=eager"])
    graph = trainctl.load(run, overrides=["mode=graph"])
    assert (eager.mode, graph.mode) == ("eager", "graph")
    batch = np.asarray(inputs[: len(inputs)])
    np.testing.assert_allclose(eager.predict(batch), graph.predict(batch), rtol=1e-5, atol=1e-6)
