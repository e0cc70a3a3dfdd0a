"""Validation and test sets carved from training: sizes, disjointness, seeding, tiny sets."""

import numpy as np
import pytest

from trainctl.data import ArrayDataset, DataError, load_splits
from trainctl.data.dataset import Loaded
from trainctl.data.splits import carve_count, split


def numbered(n, test=None):
    """A data set whose inputs are the sample numbers, so splits can be traced back."""
    ids = np.arange(n, dtype=np.float32)[:, None]
    dataset = ArrayDataset(ids, np.arange(n) % 3, "classification", 3)
    return Loaded(dataset, test, "numbers")


def ids(dataset):
    return [] if dataset is None else dataset.inputs[:, 0].astype(int).tolist()


def test_sizes_disjointness_and_cover():
    splits = split(numbered(100), "numbers", val_split=0.1, test_split=0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (70, 10, 20)
    train, val, test = ids(splits.train), ids(splits.val), ids(splits.test)
    assert sorted(train + val + test) == list(range(100))
    # labels travel with their samples
    np.testing.assert_array_equal(splits.val.targets, np.array(val) % 3)
    assert splits.name == "numbers" and splits.source == "numbers"


def test_same_seed_same_split_other_seed_other_split():
    first, again, other = (split(numbered(50), "n", 0.2, 0.2, seed) for seed in (1, 1, 2))
    assert ids(first.val) == ids(again.val) and ids(first.test) == ids(again.test)
    assert ids(first.val) != ids(other.val)


def test_zero_fractions_leave_val_and_test_empty():
    loaded = numbered(10)
    splits = split(loaded, "n", 0.0, 0.0, seed=0)
    assert splits.val is None and splits.test is None
    assert ids(splits.train) == list(range(10))


def test_own_test_split_is_kept_and_test_split_ignored():
    own_test = numbered(4).train
    splits = split(numbered(20, test=own_test), "n", val_split=0.25, test_split=0.5, seed=0)
    assert splits.test is own_test
    assert len(splits.val) == 5 and len(splits.train) == 15


def test_tiny_data_sets():
    splits = load_splits("regression", {"x": [1, 2, 3], "y": [2, 4, 6]}, None, 0.0, 0.0, seed=0)
    assert len(splits.train) == 3 and splits.val is None and splits.test is None
    # a fraction above zero carves at least one sample, while training keeps the rest
    splits = split(numbered(3), "n", val_split=0.1, test_split=0.1, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1, 1, 1)


def test_carving_everything_is_an_error():
    with pytest.raises(DataError, match=r"has 2 training sample\(s\); val_split 0.5 \(1\) and "):
        split(numbered(2), "n", val_split=0.5, test_split=0.5, seed=0)
    with pytest.raises(DataError, match="leave none to train on"):
        split(numbered(10), "n", val_split=0.6, test_split=0.4, seed=0)


@pytest.mark.parametrize(
    ("total", "fraction", "count"), [(100, 0.1, 10), (7, 0.5, 4), (9, 0.01, 1)]
)
def test_carve_count(total, fraction, count):
    assert carve_count(total, fraction) == count


@pytest.mark.parametrize(
    ("val_split", "test_split", "message"),
    [
        (1.0, 0.0, "val_split must be a number in [0, 1), found 1.0"),
        (-0.1, 0.0, "val_split must be a number in [0, 1), found -0.1"),
        (0.1, "0.2", "test_split must be a number in [0, 1), found '0.2'"),
    ],
)
def test_fractions_are_checked(val_split, test_split, message):
    with pytest.raises(DataError) as caught:
        load_splits("spirals", {}, None, val_split, test_split, seed=0)
    assert str(caught.value) == message


def test_splits_are_copies():
    loaded = numbered(10)
    splits = split(loaded, "n", 0.2, 0.0, seed=0)
    splits.train.inputs[:] = -1
    assert loaded.train.inputs.min() == 0
