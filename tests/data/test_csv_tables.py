"""CSV tables as users have them: text columns one-hot encoded, string class labels, missing
values under each rule, standardisation, a separate test file. Every statistic comes from the
training split alone, and a run's stored fit encodes the data again without refitting."""

import json

import numpy as np
import pytest

from trainctl.data import DataError, load_splits
from trainctl.data.table_encoder import OTHER, TableEncoder

HEADER = "weight,color,fruit\n"
TRAIN = HEADER + "1,red,apple\n2,green,pear\n3,red,apple\n4,yellow,pear\n"


def write(tmp_path, text, name="train.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(path, val_split=0.0, test_split=0.0, preprocessing=None, **options):
    return load_splits("csv", options, str(path), val_split, test_split, 0, preprocessing)


def test_categorical_columns_are_one_hot_over_the_training_vocabulary(tmp_path):
    test = write(tmp_path, HEADER + "5,red,pear\n6,blue,apple\n7,purple,pear\n", "test.csv")
    splits = load(write(tmp_path, TRAIN), categorical=["color"], test_path=str(test))
    stored = splits.preprocessing
    assert stored["columns"][1]["categories"] == ["green", "red", "yellow"]
    assert stored["features"] == ["weight", "color=green", "color=red", "color=yellow",
                                  f"color={OTHER}"]  # fmt: skip
    np.testing.assert_array_equal(splits.train.inputs[:, 1:], np.eye(4)[[1, 0, 1, 2]])
    # blue and purple never occur in training: both go to the "other" slot, counted
    np.testing.assert_array_equal(splits.test.inputs[:, 1:], np.eye(4)[[1, 3, 3]])
    assert splits.notes == (
        f"test: 2 value(s) of column 'color' not seen in training, encoded as its {OTHER!r} slot",
    )


def test_string_labels_become_sorted_class_indices_with_their_names(tmp_path):
    splits = load(write(tmp_path, TRAIN), categorical=["color"])
    assert splits.class_names == ("apple", "pear")
    assert splits.task == "classification" and splits.num_classes == 2
    np.testing.assert_array_equal(splits.train.targets, [0, 1, 0, 1])
    assert splits.train.targets.dtype == np.int64


def test_a_label_the_training_split_never_saw_is_an_error(tmp_path):
    test = write(tmp_path, HEADER + "5,red,apple\n6,red,plum\n", "test.csv")
    with pytest.raises(DataError) as caught:
        load(write(tmp_path, TRAIN), categorical=["color"], test_path=str(test))
    assert str(caught.value) == (
        f"{test}: line 3: label 'plum' in target column 'fruit' is not one of the 2 labels of "
        "the training split (apple, pear): a model cannot be scored on a class it never saw"
    )


def test_vocabularies_and_labels_come_from_the_carved_training_split_only(tmp_path):
    rows = "".join(f"{i},c{i},{'ab'[i % 2]}\n" for i in range(20))
    splits = load(write(tmp_path, HEADER + rows), val_split=0.25, test_split=0.25,
                  categorical=["color"])  # fmt: skip
    weights = splits.train.inputs[:, 0]
    categories = splits.preprocessing["columns"][1]["categories"]
    assert sorted(categories) == sorted(f"c{int(w)}" for w in weights) and len(categories) == 10
    assert len(splits.val) + len(splits.test) == 10
    unseen = "value(s) of column 'color' not seen in training, encoded as its '<other>' slot"
    assert splits.notes == (f"val: 5 {unseen}", f"test: 5 {unseen}")


def test_standardize_uses_the_training_split_statistics_alone(tmp_path):
    rows = "".join(f"{i},{i * i % 7},{i % 3}\n" for i in range(30))
    path = write(tmp_path, "a,b,y\n" + rows)
    test = write(tmp_path, "a,b,y\n1000,-500,1\n2000,900,2\n", "test.csv")
    splits = load(path, val_split=0.3, standardize=True, test_path=str(test))
    raw = np.loadtxt(path, delimiter=",", skiprows=1)
    columns = splits.preprocessing["columns"]
    # the raw training rows: undo the scaling with the stored statistics, then check them
    means = np.array([c["mean"] for c in columns])
    stds = np.array([c["std"] for c in columns])
    train_raw = splits.train.inputs.astype(np.float64) * stds + means
    assert np.isin(np.round(train_raw[:, 0]), raw[:, 0]).all() and len(train_raw) == 21
    np.testing.assert_allclose(means, train_raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stds, train_raw.std(axis=0), rtol=1e-6)
    # neither the carved validation rows nor the test file moved the statistics
    assert not np.allclose(means, raw[:, :2].mean(axis=0))
    assert abs(means[0]) < 30 and stds[0] < 30
    np.testing.assert_allclose(splits.train.inputs.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(splits.train.inputs.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(splits.test.inputs[:, 0], (np.array([1000, 2000]) - means[0])
                               / stds[0], rtol=1e-6)  # fmt: skip


def test_missing_value_under_the_error_rule_names_file_line_and_column(tmp_path):
    path = write(tmp_path, HEADER + "1,red,apple\nNA,green,pear\n")
    with pytest.raises(DataError) as caught:
        load(path, categorical=["color"])
    assert str(caught.value) == (
        f"{path}: line 3, column 1: a missing value in column 'weight' (data.options.missing "
        "is error: use mean to fill it with the training mean, or drop to leave the row out)"
    )


def test_missing_values_filled_with_the_training_mean(tmp_path):
    path = write(tmp_path, HEADER + "1,red,apple\n,green,pear\n3,,apple\n5,red,pear\n")
    test = write(tmp_path, HEADER + "NA,red,apple\n100,red,pear\n", "test.csv")
    splits = load(path, categorical=["color"], missing="mean", test_path=str(test))
    assert splits.preprocessing["columns"][0]["mean"] == 3.0  # (1 + 3 + 5) / 3, not the test's
    np.testing.assert_array_equal(splits.train.inputs[:, 0], [1, 3, 3, 5])
    assert splits.test.inputs[0, 0] == 3.0
    # a missing category is encoded as the training shares of each value (its mean one-hot)
    np.testing.assert_allclose(splits.train.inputs[2, 1:], [1 / 3, 2 / 3, 0], rtol=1e-6)


def test_missing_values_dropped_and_counted(tmp_path):
    path = write(tmp_path, HEADER + "1,red,apple\n?,green,pear\n3,,apple\n5,red,pear\n")
    test = write(tmp_path, HEADER + "?,red,apple\n100,red,pear\n", "test.csv")
    splits = load(path, categorical=["color"], missing="drop", missing_values=["?", ""],
                  test_path=str(test))  # fmt: skip
    np.testing.assert_array_equal(splits.train.inputs[:, 0], [1, 5])
    np.testing.assert_array_equal(splits.test.inputs[:, 0], [100])
    assert splits.notes == (
        "train: dropped 2 row(s) with a missing value (data.options.missing: drop)",
        "test: dropped 1 row(s) with a missing value (data.options.missing: drop)",
    )


def test_a_missing_target_cannot_be_filled(tmp_path):
    path = write(tmp_path, HEADER + "1,red,apple\n2,green,NA\n")
    with pytest.raises(
        DataError,
        match=r"line 3, column 3: a missing value in the target "
        r"column 'fruit', which missing: mean cannot fill \(use missing: drop\)",
    ):
        load(path, categorical=["color"], missing="mean")


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        (TRAIN, {"categorical": ["colour"]},
         "option categorical names no column 'colour'; the header has 'weight', 'color', "
         "'fruit'"),
        (TRAIN, {"categorical": ["fruit"]}, "option categorical names 'fruit', the target column"),
        ("1,red,0\n2,green,1\n", {"categorical": ["color"], "header": False},
         "option categorical names columns, but the file has no header row"),
        (TRAIN, {}, "line 2, column 2: 'red' is not a number (column 'color' is read as "
         "numbers: list it in option categorical to one-hot encode it)"),
        (TRAIN, {"categorical": ["color"], "task": "regression"},
         "target column 'fruit' holds text ('apple'), expected numbers for task regression"),
        (HEADER + "NA,red,apple\n,red,pear\n", {"categorical": ["color"], "missing": "mean"},
         "column 'weight' has no value in the training split to learn from"),
    ],
)  # fmt: skip
def test_bad_table_options_name_the_file_and_the_problem(tmp_path, text, options, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        load(path, **options)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_a_stored_fit_encodes_without_refitting(tmp_path, monkeypatch):
    first = load(write(tmp_path, TRAIN), categorical=["color"], standardize=True)
    stored = json.loads(json.dumps(first.preprocessing))

    def refit(*args, **kwargs):
        raise AssertionError("refitted")

    monkeypatch.setattr(TableEncoder, "fit", refit)
    again = load(tmp_path / "train.csv", preprocessing=stored, categorical=["color"],
                 standardize=True)  # fmt: skip
    np.testing.assert_array_equal(again.train.inputs, first.train.inputs)
    assert again.class_names == first.class_names and again.preprocessing == stored
    # a different file under the stored fit: encoded with the old statistics
    other = write(tmp_path, HEADER + "10,red,pear\n", "other.csv")
    encoded = load(other, preprocessing=stored, categorical=["color"], standardize=True)
    column = stored["columns"][0]
    assert encoded.train.inputs[0, 0] == np.float32((10 - column["mean"]) / column["std"])


def test_a_damaged_stored_fit_is_refused(tmp_path):
    with pytest.raises(DataError, match="the run's preprocessing.json: not a table "
                       "preprocessing trainctl wrote"):  # fmt: skip
        load(write(tmp_path, TRAIN), preprocessing={"format": 1}, categorical=["color"])


def test_numeric_tables_read_as_before(tmp_path):
    splits = load(write(tmp_path, "a,b,label\n1,2,0\n3.5,4,2\n"))
    assert splits.num_classes == 3 and splits.class_names is None
    assert splits.preprocessing["features"] == ["a", "b"] and splits.notes == ()
    np.testing.assert_array_equal(splits.train.inputs, [[1, 2], [3.5, 4]])
