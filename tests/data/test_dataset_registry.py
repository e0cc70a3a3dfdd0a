"""The data set registry as the config loader and the trainer see it, and load_splits' checks."""

import numpy as np
import pytest

from trainctl.data import DATASETS, TRANSFORMS, DataError, DatasetEntry, load_splits
from trainctl.errors import TrainctlError
from trainctl.spec import Entry


def test_registry_names_and_flags():
    flags = {name: (e.needs_path, e.has_test_split) for name, e in DATASETS.items()}
    assert flags == {
        "digits": (False, False),
        "regression": (False, False),
        "spirals": (False, False),
        "blobs": (False, False),
        "images": (False, False),
        "mnist": (True, True),
        "fashion_mnist": (True, True),
        "cifar10": (True, True),
        "npz": (True, False),
        "csv": (True, False),
        "image_folder": (True, False),
    }


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_entries_are_spec_entries_whose_defaults_pass_their_own_checks(name):
    entry = DATASETS[name]
    assert isinstance(entry, DatasetEntry) and isinstance(entry, Entry)
    assert entry.name == name and entry.help
    for arg in entry.args.values():
        if not arg.required:
            assert arg.check(arg.default) == arg.default


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_defaults_pass_their_own_checks(name):
    for arg in TRANSFORMS[name].args.values():
        if not arg.required:
            assert arg.check(arg.default) == arg.default


def test_unknown_data_set_suggests_the_closest_name():
    with pytest.raises(DataError) as caught:
        load_splits("mnsit", {}, None, 0.0, 0.0, 0)
    assert str(caught.value).startswith("unknown data set 'mnsit' (did you mean 'mnist'?); ")
    assert "expected one of blobs, cifar10, csv, digits" in str(caught.value)


def test_data_error_is_a_trainctl_error():
    assert issubclass(DataError, TrainctlError)


@pytest.mark.parametrize(
    ("dataset", "path", "message"),
    [
        (
            "mnist",
            None,
            "mnist does not exist: expected a folder holding the MNIST IDX files; "
            "get it from `trainctl data fetch mnist` (or data.download: true)",
        ),
        ("cifar10", None, "get it from `trainctl data fetch cifar10`"),
        ("csv", None, "data set 'csv' needs a path (a table from a CSV file"),
        ("digits", "datasets/mnist", "data set 'digits' reads no files, but a path was given"),
    ],
)
def test_a_missing_path_or_folder_says_how_to_get_the_data(dataset, path, message):
    with pytest.raises(DataError) as caught:
        load_splits(dataset, {}, path, 0.0, 0.0, 0)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"samples": "many"}, "data set spirals: option samples: expected an integer >= 1"),
        ({"noise": None}, "option noise: expected a number >= 0, found null"),
        ({"colour": 1}, "data set spirals takes no argument 'colour'"),
    ],
)
def test_options_are_checked_against_the_entry(options, message):
    with pytest.raises(DataError, match=message):
        load_splits("spirals", options, None, 0.0, 0.0, 0)


def test_negative_seed_is_a_data_error():
    with pytest.raises(DataError, match="seed must be an integer >= 0, found -1"):
        load_splits("spirals", {}, None, 0.0, 0.0, -1)


def test_data_splits_convenience_properties(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 3, 2, 1)), y=np.array([0.5, 1.5, 2.5, 3.5]))
    splits = load_splits("npz", {}, str(path), 0.25, 0.0, 0)
    assert splits.input_shape == (3, 2, 1)
    assert splits.task == "regression" and splits.num_classes is None
    assert splits.name == "npz" and len(splits.val) == 1 and len(splits.train) == 3


def test_home_directory_in_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 1)), y=np.array([0, 1]))
    assert len(load_splits("npz", {}, "~/data.npz", 0.0, 0.0, 0).train) == 2
