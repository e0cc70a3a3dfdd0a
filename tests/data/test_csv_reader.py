"""CSV tables: header detection, target column by name or index, delimiters, broken tables."""

import gzip

import numpy as np
import pytest

from trainctl.data import DataError, load_splits


def load(path, **options):
    return load_splits("csv", options, str(path), val_split=0.0, test_split=0.0, seed=0)


def write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_header_detected_and_last_column_is_the_target(tmp_path):
    path = write(tmp_path, "a,b,label\n1,2,0\n3.5,4,2\n\n5,6,1\n")
    splits = load(path)
    np.testing.assert_allclose(splits.train.inputs, [[1, 2], [3.5, 4], [5, 6]])
    np.testing.assert_array_equal(splits.train.targets, [0, 2, 1])
    assert splits.task == "classification" and splits.num_classes == 3
    assert splits.source == str(path)


def test_no_header_when_every_field_of_the_first_row_is_a_number(tmp_path):
    splits = load(write(tmp_path, "1,2,0\n3,4,1\n"))
    assert len(splits.train) == 2
    splits = load(write(tmp_path, "1,2,0\n3,4,1\n"), header=True)
    assert len(splits.train) == 1  # the first row taken as names on request


def test_target_by_name_and_by_index(tmp_path):
    path = write(tmp_path, "y,x1,x2\n0.5,1,2\n1.5,3,4\n")
    by_name = load(path, target="y")
    by_index = load(path, target_index=0)
    for splits in (by_name, by_index):
        assert splits.task == "regression"
        np.testing.assert_allclose(splits.train.targets, [[0.5], [1.5]])
        np.testing.assert_allclose(splits.train.inputs, [[1, 2], [3, 4]])
    middle = load(path, target_index=-2)
    np.testing.assert_allclose(middle.train.inputs, [[0.5, 2], [1.5, 4]])


@pytest.mark.parametrize(("delimiter", "separator"), [(";", ";"), ("tab", "\t"), ("\t", "\t")])
def test_delimiters(tmp_path, delimiter, separator):
    path = write(tmp_path, separator.join(["p", "q", "c"]) + "\n" + separator.join("123") + "\n")
    splits = load(path, delimiter=delimiter)
    np.testing.assert_allclose(splits.train.inputs, [[1, 2]])


def test_gzipped_csv_and_quoted_fields(tmp_path):
    path = tmp_path / "table.csv.gz"
    path.write_bytes(gzip.compress(b'"x","y"\n"1.5",2\n2.5,"3"\n'))
    splits = load(path, task="regression")
    np.testing.assert_allclose(splits.train.inputs, [[1.5], [2.5]])
    np.testing.assert_allclose(splits.train.targets, [[2], [3]])


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("a,b\n1,2\n3\n", {}, "line 3 has 1 fields, expected 2 (ragged rows"),
        ("1,2,3\n4,5,6\n7,8\n", {}, "line 3 has 2 fields, expected 3"),
        ("a,b,c\n1,2\n3,4\n", {}, "rows of 2 fields, expected 3 like the first line"),
        ("a,b,c\n1,2,0\n3,abc,1\n", {}, "line 3, column 2: 'abc' is not a number"),
        ("a,b\n1,\n", {}, "line 2, column 2: a missing value in column 'b'"),
        ("a,b\n1,nan\n", {}, "line 2, column 2: nan is not a finite number"),
        ("", {}, "empty, expected rows of numbers"),
        ("a,b\n", {}, "a header row and no data rows"),
        ("a\n1\n", {}, "1 column (delimiter ','), expected at least 2"),
        (
            "a,b\n1,2\n",
            {"target": "label"},
            "no column 'label' (option target); the header has 'a'",
        ),
        ("1,2\n", {"target": "label"}, "names a column, but the file has no header row"),
        ("a,b\n1,2\n", {"target_index": 2}, "target_index 2 is out of range for 2 columns"),
        ("a,b\n1,-2\n", {"task": "classification"}, "class labels must be >= 0, found -2"),
    ],
)
def test_broken_tables_name_the_line_and_the_problem(tmp_path, text, options, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as caught:
        load(path, **options)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_bad_delimiter_option_and_missing_file(tmp_path):
    path = write(tmp_path, "1,2\n")
    with pytest.raises(DataError, match="delimiter: expected one character or 'tab', found ';;'"):
        load(path, delimiter=";;")
    with pytest.raises(DataError, match="does not exist: expected a CSV file"):
        load(tmp_path / "absent.csv")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 6 is 0xff\)"):
        load(path)


def test_negative_integer_targets_are_regression_under_auto(tmp_path):
    splits = load(write(tmp_path, "a,b\n1,-2\n2,3\n"))
    assert splits.task == "regression"
    np.testing.assert_allclose(splits.train.targets, [[-2], [3]])
