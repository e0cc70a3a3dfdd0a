"""The embedded digits set: its contents, its provenance note, and where it is looked for."""

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from trainctl.data import DataError, digits, load_splits

REPO = Path(__file__).resolve().parents[2]


def test_digits_are_1797_images_of_ten_classes_in_unit_range():
    splits = load_splits("digits", {}, None, val_split=0.0, test_split=0.0, seed=0)
    train = splits.train
    assert len(train) == 1797 and splits.val is None and splits.test is None
    assert train.inputs.shape == (1797, 8, 8, 1) and train.inputs.dtype == np.float32
    assert train.inputs.min() == 0.0 and train.inputs.max() == 1.0
    np.testing.assert_array_equal(train.inputs * 16, np.round(train.inputs * 16))
    assert train.targets.dtype == np.int64
    counts = np.bincount(train.targets)
    assert len(counts) == 10 and counts.min() >= 170
    assert splits.num_classes == 10 and splits.task == "classification"
    assert splits.source.endswith("digits.csv.gz")


def test_first_image_is_a_zero():
    # The first row of the UCI file: a 0 whose top row is 0,0,5,13,9,1,0,0.
    first = load_splits("digits", {}, None, 0.0, 0.0, 0).train
    assert first.targets[0] == 0
    np.testing.assert_allclose(first.inputs[0, 0, :, 0] * 16, [0, 0, 5, 13, 9, 1, 0, 0])


def test_readme_sha256_matches_the_shipped_file():
    readme = (REPO / "datasets" / "README.md").read_text()
    recorded = re.search(r"^([0-9a-f]{64})  datasets/digits\.csv\.gz$", readme, re.MULTILINE)
    assert recorded, "datasets/README.md must record the sha256 of digits.csv.gz"
    actual = hashlib.sha256((REPO / "datasets" / "digits.csv.gz").read_bytes()).hexdigest()
    assert recorded.group(1) == actual


def test_wheel_force_include_puts_the_file_where_the_loader_looks_first():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    packaged = mapping["datasets/digits.csv.gz"]
    package_root = Path(digits.__file__).resolve().parents[2]
    assert package_root / packaged == digits.CANDIDATES[0].resolve()
    assert digits.CANDIDATES[1] == REPO / "datasets" / "digits.csv.gz"


def test_packaged_copy_is_preferred_and_missing_copies_are_reported(tmp_path, monkeypatch):
    packaged, checkout = tmp_path / "embedded.csv.gz", tmp_path / "checkout.csv.gz"
    checkout.write_bytes(b"")
    monkeypatch.setattr(digits, "CANDIDATES", (packaged, checkout))
    assert digits.digits_file() == checkout
    packaged.write_bytes(b"")
    assert digits.digits_file() == packaged
    monkeypatch.setattr(digits, "CANDIDATES", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(DataError, match="the embedded digits file is missing: looked for"):
        load_splits("digits", {}, None, 0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([0] * 64, "64 columns, expected 65"),
        ([17] + [0] * 63 + [3], "pixel values outside 0..16"),
        ([0] * 64 + [10], "labels outside 0..9"),
    ],
)
def test_corrupt_digits_file(tmp_path, row, message):
    path = tmp_path / "digits.csv.gz"
    path.write_bytes(gzip.compress((",".join(map(str, row)) + "\n").encode()))
    with pytest.raises(DataError, match=message):
        digits.read_digits(path)
