"""Synthetic sets: a pure function of (seed, options), with the shapes and labels asked for."""

import numpy as np
import pytest

from trainctl.data import DataError, load_splits

SMALL = {
    "regression": {"samples": 40, "features": 3},
    "spirals": {"samples": 60, "classes": 4},
    "blobs": {"samples": 50, "classes": 5, "features": 3},
    "images": {"samples": 30, "classes": 3, "height": 6, "width": 9, "channels": 2},
}


def load(name, options, seed=0):
    return load_splits(name, options, None, val_split=0.0, test_split=0.0, seed=seed)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_data_other_seed_other_data(name):
    first, again, other = (load(name, SMALL[name], seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first.train.inputs, again.train.inputs)
    np.testing.assert_array_equal(first.train.targets, again.train.targets)
    assert not np.array_equal(first.train.inputs, other.train.inputs)
    assert first.source == "synthetic, seed 3"
    assert first.train.inputs.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "input_shape"),
    [("spirals", (2,)), ("blobs", (3,)), ("images", (6, 9, 2))],
)
def test_classification_sets_are_balanced(name, input_shape):
    splits = load(name, SMALL[name])
    classes = SMALL[name]["classes"]
    assert splits.input_shape == input_shape
    assert splits.num_classes == classes and splits.task == "classification"
    counts = np.bincount(splits.train.targets, minlength=classes)
    assert len(counts) == classes and counts.max() - counts.min() <= 1
    assert splits.train.targets.dtype == np.int64


def test_images_are_in_unit_range_and_class_conditional():
    splits = load("images", {"samples": 200, "classes": 2, "height": 8, "width": 8, "noise": 0.1})
    x, y = splits.train.inputs, splits.train.targets
    assert x.min() >= 0 and x.max() <= 1
    means = [x[y == label].mean(axis=0) for label in (0, 1)]
    spread_within = np.abs(x[y == 0] - means[0]).mean()
    assert np.abs(means[0] - means[1]).mean() > spread_within


def test_blobs_cluster_around_their_centres():
    splits = load("blobs", {"samples": 300, "classes": 3, "features": 2, "spread": 0.5})
    x, y = splits.train.inputs, splits.train.targets
    centres = np.stack([x[y == label].mean(axis=0) for label in range(3)])
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.95


def test_regression_with_given_weights_and_no_noise_is_exact():
    options = {"samples": 20, "features": 2, "weights": [2.0, -1.0], "bias": 0.5, "noise": 0}
    splits = load("regression", options)
    x, y = splits.train.inputs, splits.train.targets
    assert y.shape == (20, 1) and splits.task == "regression" and splits.num_classes is None
    np.testing.assert_allclose(y[:, 0], x @ np.array([2.0, -1.0]) + 0.5, rtol=1e-5, atol=1e-5)


def test_regression_noise_has_the_asked_scale():
    options = {"samples": 4000, "features": 1, "weights": [1.0], "noise": 0.3}
    splits = load("regression", options)
    residual = splits.train.targets[:, 0] - splits.train.inputs[:, 0]
    assert 0.27 < residual.std() < 0.33


def test_three_point_tutorial_example():
    splits = load("regression", {"x": [1, 2, 3], "y": [2, 4, 6]})
    np.testing.assert_array_equal(splits.train.inputs, [[1], [2], [3]])
    np.testing.assert_array_equal(splits.train.targets, [[2], [4], [6]])
    assert splits.train.targets.dtype == np.float32 and splits.source == "given x and y lists"
    assert splits.val is None and splits.test is None


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("regression", {"x": [1, 2]}, "regression options x and y go together: y is missing"),
        ("regression", {"x": [1, 2], "y": [1]}, "differ in length: 2 and 1"),
        ("regression", {"features": 3, "weights": [1, 2]}, "weights: 2 numbers for 3 features"),
        ("spirals", {"samples": 2, "classes": 3}, "spirals: samples 2 is fewer than classes 3"),
        ("blobs", {"samples": 0}, "option samples: expected an integer >= 1, found 0"),
        ("images", {"noise": -1}, "option noise: expected a number >= 0, found -1"),
        ("spirals", {"arms": 3}, "spirals takes no argument 'arms'"),
    ],
)
def test_bad_options(name, options, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(name, options)
