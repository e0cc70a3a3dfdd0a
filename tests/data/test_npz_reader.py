"""npz archives: configurable keys, task detection, image layouts, and broken archives."""

import numpy as np
import pytest

from trainctl.data import DataError, load_splits


def load(path, **options):
    return load_splits("npz", options, str(path), val_split=0.0, test_split=0.0, seed=0)


def save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_features_and_integer_labels_are_classification(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3))
    y = np.array([0, 1, 4, 1, 0, 2, 2, 1])
    splits = load(save(tmp_path, x=x, y=y))
    assert splits.task == "classification" and splits.num_classes == 5
    np.testing.assert_allclose(splits.train.inputs, x.astype(np.float32))
    np.testing.assert_array_equal(splits.train.targets, y)
    assert splits.train.targets.dtype == np.int64 and splits.train.inputs.dtype == np.float32
    assert splits.test is None and splits.source == str(tmp_path / "data.npz")


def test_integer_valued_floats_are_labels_and_fractions_are_regression(tmp_path):
    x = np.zeros((3, 2))
    assert load(save(tmp_path, x=x, y=np.array([0.0, 2.0, 1.0]))).num_classes == 3
    splits = load(save(tmp_path, x=x, y=np.array([0.5, 2.0, 1.0])))
    assert splits.task == "regression" and splits.num_classes is None
    assert splits.train.targets.shape == (3, 1) and splits.train.targets.dtype == np.float32


def test_explicit_task_overrides_detection(tmp_path):
    path = save(tmp_path, x=np.zeros((3, 2)), y=np.array([0, 2, 1]))
    splits = load(path, task="regression")
    assert splits.task == "regression"
    np.testing.assert_array_equal(splits.train.targets[:, 0], [0, 2, 1])
    path = save(tmp_path, x=np.zeros((3, 2)), y=np.array([0.5, 2, 1]))
    with pytest.raises(DataError, match="task classification needs one integer label per sample"):
        load(path, task="classification")


def test_multi_column_targets_are_regression(tmp_path):
    y = np.arange(12.0).reshape(4, 3)
    splits = load(save(tmp_path, x=np.zeros((4, 2)), y=y))
    assert splits.task == "regression" and splits.train.targets.shape == (4, 3)


def test_custom_keys_and_test_split(tmp_path):
    path = save(
        tmp_path,
        features=np.ones((5, 2)),
        labels=np.array([0, 1, 0, 1, 0]),
        tf=np.zeros((2, 2)),
        tl=np.array([3, 1]),
    )
    splits = load(path, x="features", y="labels", x_test="tf", y_test="tl")
    assert len(splits.train) == 5 and len(splits.test) == 2
    assert splits.num_classes == 4  # the test labels count too
    np.testing.assert_array_equal(splits.test.targets, [3, 1])


def test_default_test_keys_are_used_when_present(tmp_path):
    path = save(
        tmp_path, x=np.ones((5, 2)), y=np.arange(5), x_test=np.zeros((2, 2)), y_test=np.arange(2)
    )
    splits = load_splits("npz", {}, str(path), val_split=0.2, test_split=0.4, seed=0)
    assert len(splits.test) == 2 and len(splits.val) == 1 and len(splits.train) == 4


def test_images_layouts_and_uint8_scaling(tmp_path):
    nhwc = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    splits = load(save(tmp_path, x=nhwc, y=np.arange(4)))
    assert splits.input_shape == (5, 6, 3)
    np.testing.assert_allclose(splits.train.inputs * 255, nhwc, atol=1e-4)
    nchw = nhwc.transpose(0, 3, 1, 2)
    splits = load(save(tmp_path, x=nchw, y=np.arange(4)), layout="nchw")
    np.testing.assert_allclose(splits.train.inputs * 255, nhwc, atol=1e-4)
    gray = nhwc[..., 0]
    assert load(save(tmp_path, x=gray, y=np.arange(4))).input_shape == (5, 6, 1)
    floats = load(save(tmp_path, x=np.full((2, 3), 7.0), y=np.arange(2))).train.inputs
    np.testing.assert_array_equal(floats, 7.0)  # only uint8 images are rescaled


def test_pickled_objects_are_refused(tmp_path):
    path = save(tmp_path, x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match=r"array 'x' cannot be read \(Object arrays cannot be"):
        load(path)


@pytest.mark.parametrize(
    ("arrays", "options", "message"),
    [
        ({"x": np.zeros((3, 2))}, {}, "no array 'y' (option y); the archive holds 'x'"),
        ({"a": np.zeros((3, 2)), "y": np.arange(3)}, {}, "no array 'x' (option x)"),
        ({"x": np.zeros((3, 2)), "y": np.arange(4)}, {}, "'x' has 3 samples but 'y' has 4"),
        (
            {"x": np.zeros((3, 2)), "y": np.arange(3), "x_test": np.zeros((1, 2))},
            {},
            "has 'x_test' but not its partner",
        ),
        (
            {"x": np.zeros((3, 2)), "y": np.arange(3), "x_test": np.zeros((1, 5)), "y_test": [1]},
            {},
            "test samples of shape (5,) do not match the training samples' (2,)",
        ),
        ({"x": np.array([[1.0, np.nan]]), "y": [1]}, {}, "expected finite numbers, found nan"),
        ({"x": np.array([["a", "b"]]), "y": [1]}, {}, "expected numbers, found dtype <U1"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, {}, "array 'x' holds no samples"),
        ({"x": np.float64(3.0), "y": np.arange(1)}, {}, "array 'x' holds no samples"),
        (
            {"x": np.zeros((2, 2)), "y": [-1, 0]},
            {"task": "classification"},
            "class labels must be >= 0, found -1",
        ),
        ({"x": np.zeros((2, 2, 2, 2, 2)), "y": [0, 1]}, {}, "found shape (2, 2, 2, 2, 2)"),
        ({"x": np.zeros((2, 2)), "y": [0, 1]}, {"layout": "nchw"}, "layout nchw needs 4-d"),
    ],
)
def test_bad_archives_name_the_array_and_the_problem(tmp_path, arrays, options, message):
    path = save(tmp_path, **arrays)
    with pytest.raises(DataError) as caught:
        load(path, **options)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x80\x04 a pickle, or anything else", "not an .npz archive (found no zip header)"),
        (None, "not an .npz archive (found a single .npy array)"),
        ("truncated", "not a readable .npz archive"),
    ],
)
def test_files_that_are_not_npz_archives(tmp_path, content, message):
    path = tmp_path / "data.npz"
    if content is None:
        with path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    elif content == "truncated":
        np.savez(path, x=np.zeros((50, 4)), y=np.arange(50))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"does not exist: expected an \.npz archive"):
        load(tmp_path / "absent.npz")
