"""`trainctl.load(RUN)` in a notebook: the input description, `.predict(array)`, and inputs
it cannot take refused with an InputError naming the expected input."""

import numpy as np
import pytest

import trainctl
from trainctl.errors import RunFolderError
from trainctl.predict import InputError
from trainctl.predict.output import class_scores, prediction_records


def test_load_by_name_describes_the_input(image_run):
    model = trainctl.load(image_run.name, runs_root=image_run.parent)
    assert model.run.path == image_run and model.mode == "graph"
    assert model.input.as_dict() == {
        "shape": [6, 6, 3], "dtype": "float32", "layout": "NHWC", "task": "classification",
        "class_names": ["cat", "dog", "owl"], "output_shape": [3],
    }  # fmt: skip
    assert str(model.input) == (
        "float32 images of 6x6 pixels with 3 channel(s), NHWC in [0, 1]: an array of shape "
        "(N, 6, 6, 3)"
    )


def test_predict_takes_arrays_lists_and_other_number_types(npz_run, table_run):
    model = trainctl.load(npz_run)
    x = np.random.default_rng(0).normal(size=(9, 5))
    logits = model.predict(x.astype(np.float32))
    assert logits.shape == (9, 4) and logits.dtype == np.float32
    np.testing.assert_allclose(model.predict(x), logits, rtol=1e-6)  # float64 is cast
    np.testing.assert_allclose(model.predict(x.astype(np.float32).tolist()), logits)
    assert model.predict(np.empty((0, 5), np.float32)).shape == (0, 4)
    regression = trainctl.load(table_run, "last")
    assert regression.input.class_names is None and regression.input.layout == "features"
    assert regression.predict(np.arange(6).reshape(2, 3)).shape == (2, 1)  # integers are cast


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (np.zeros((2, 6, 6), np.float32), "found shape (2, 6, 6)"),
        (np.zeros((6, 6, 3), np.float32), "found shape (6, 6, 3)"),
        (np.zeros((2, 6, 6, 3), np.uint8), "found uint8 pixels (divide by 255"),
        (np.zeros((2, 6, 6, 3), np.complex64), "found dtype complex64"),
        (np.full((2, 6, 6, 3), np.nan, np.float32), "sample 0 holds nan at 0, 0, 0"),
    ],
)
def test_inputs_it_cannot_take(image_run, inputs, message):
    model = trainctl.load(image_run)
    with pytest.raises(InputError) as caught:
        model.predict(inputs)
    assert message in str(caught.value)
    assert "expected float32 images of 6x6 pixels" in str(caught.value) or "nan" in message


def test_load_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(RunFolderError, match="is not a run folder"):
        trainctl.load(tmp_path)


def test_class_scores_per_loss():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], np.float32)
    softmax, kind = class_scores(logits, "cross_entropy")
    assert kind == "probability" and np.allclose(softmax.sum(axis=1), 1)
    assert softmax[1].tolist() == [0.5, 0.5]
    binary, kind = class_scores(np.array([[0.0], [100.0]], np.float32), "bce_with_logits")
    assert kind == "probability" and binary.tolist() == [[0.5, 0.5], [0.0, 1.0]]
    scores, kind = class_scores(np.array([[0.25, 0.75]], np.float32), "mse")
    assert kind == "score" and scores.tolist() == [[0.25, 0.75]]


def test_records_write_numbers_that_read_back_exactly(npz_run):
    model = trainctl.load(npz_run)
    outputs = np.array([[1.0, 0.1, 0.2, 0.3]], np.float32)
    (record,) = prediction_records(model.input, "cross_entropy", outputs, ["a"], top_k=4)
    assert record["class"] == "0" and [r["class"] for r in record["top_k"]] == ["0", "3", "2", "1"]
    expected = class_scores(outputs, "cross_entropy")[0][0].astype(np.float32)
    got = np.array([r["probability"] for r in record["top_k"]], np.float32)
    np.testing.assert_array_equal(got, expected[[0, 3, 2, 1]])
    assert len(repr(record["probability"])) <= 11  # the shortest float32 form, not 17 digits
