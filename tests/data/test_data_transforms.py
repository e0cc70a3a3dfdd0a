"""Transforms: what each computes, that they leave their input alone, and misfits."""

import numpy as np
import pytest

from trainctl.data import TRANSFORMS, ArrayDataset, DataError, Loader


def images(n=6, h=5, w=4, c=3, seed=0):
    return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def apply(name, x, y=None, num_classes=None, seed=0, **args):
    y = np.zeros(len(x), np.int64) if y is None else y
    entry = TRANSFORMS[name]
    x_before, y_before = x.copy(), y.copy()
    out = entry.apply(x, y, args, np.random.default_rng(seed), num_classes)
    np.testing.assert_array_equal(x, x_before)  # never written in place
    np.testing.assert_array_equal(y, y_before)
    return out


def test_registry_flags():
    assert {name: entry.random for name, entry in TRANSFORMS.items()} == {
        "normalize": False,
        "random_flip": True,
        "random_crop": True,
        "one_hot": False,
    }


def test_normalize_scalar_and_per_channel():
    x = images()
    out, _ = apply("normalize", x, mean=0.5, std=0.25)
    np.testing.assert_allclose(out, (x - 0.5) / 0.25, rtol=1e-6)
    out, _ = apply("normalize", x, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 4.0])
    np.testing.assert_allclose(out[..., 2], (x[..., 2] - 0.3) / 4.0, rtol=1e-6)
    assert out.dtype == np.float32
    features = np.arange(6, dtype=np.float32).reshape(3, 2)
    out, _ = apply("normalize", features, mean=[0.0, 1.0], std=[1.0, 1.0])
    np.testing.assert_array_equal(out, features - [0, 1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"mean": [0.1, 0.2], "std": 1.0}, "mean has 2 values, but the samples have 3 channels"),
        ({"mean": 0.0, "std": [1.0] * 4}, "std has 4 values, but the samples have 3 channels"),
        ({"mean": 0.0, "std": 0.0}, "std must be > 0, found 0.0"),
        ({"mean": 0.0, "std": [1.0, 0.0, 1.0]}, "std must be > 0"),
    ],
)
def test_normalize_misfits(args, message):
    with pytest.raises(DataError, match=message):
        apply("normalize", images(), **args)


def test_random_flip_mirrors_left_right_with_probability_p():
    x = images(n=400)
    np.testing.assert_array_equal(apply("random_flip", x, p=0.0)[0], x)
    np.testing.assert_array_equal(apply("random_flip", x, p=1.0)[0], x[:, :, ::-1, :])
    out, _ = apply("random_flip", x, p=0.5)
    flipped = np.array([np.array_equal(o, s[:, ::-1]) for o, s in zip(out, x, strict=True)])
    kept = np.array([np.array_equal(o, s) for o, s in zip(out, x, strict=True)])
    assert (flipped ^ kept).all()  # every image is either mirrored or untouched
    assert 0.4 < flipped.mean() < 0.6


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = images(n=50, h=6, w=5, c=2)
    np.testing.assert_array_equal(apply("random_crop", x, padding=0)[0], x)
    out, _ = apply("random_crop", x, padding=2)
    assert out.shape == x.shape
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for o, p in zip(out, padded, strict=True):
        matches = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if np.array_equal(o, p[top : top + 6, left : left + 5])
        ]
        assert matches, "a crop must be a window of the padded image"
        offsets.update(matches)
    assert len(offsets) > 5  # offsets vary between images


def test_one_hot():
    y = np.array([2, 0, 1, 2])
    _, out = apply("one_hot", np.zeros((4, 1), np.float32), y, num_classes=4)
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[y])
    assert out.dtype == np.float32 and out.shape == (4, 4)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "random_flip",
            {"p": 0.5},
            r"random_flip needs NHWC images, but the samples have shape \(2,\)",
        ),
        ("random_crop", {"padding": 1}, "random_crop needs NHWC images"),
        ("one_hot", {}, r"one_hot needs class labels, but the targets have shape \(1,\)"),
    ],
)
def test_transforms_that_do_not_fit_the_data_fail_when_the_loader_is_built(name, args, message):
    features = ArrayDataset(
        np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), "regression", None
    )
    with pytest.raises(DataError, match=message):
        Loader(features, 2, shuffle=False, drop_last=False, seed=0, transforms=[(name, args)])


@pytest.mark.parametrize(
    ("transforms", "message"),
    [
        ([("mirror", {})], "unknown transform 'mirror'; expected one of normalize, one_hot"),
        (
            [("random_flip", {"p": 2})],
            r"transform random_flip: option p: expected a number in \[0, 1\], found 2",
        ),
        ([("normalize", {"mean": 0})], "transform normalize needs the argument 'std'"),
        ([("one_hot", {"depth": 3})], "transform one_hot takes no argument 'depth'"),
    ],
)
def test_bad_transform_configs(transforms, message):
    dataset = ArrayDataset(images(), np.zeros(6, np.int64), "classification", 2)
    with pytest.raises(DataError, match=message):
        Loader(dataset, 2, shuffle=False, drop_last=False, seed=0, transforms=transforms)


def test_random_transforms_run_only_when_augmenting():
    x = images(n=8)
    dataset = ArrayDataset(x, np.arange(8) % 2, "classification", 2)
    transforms = [("normalize", {"mean": 0.5, "std": 0.5}), ("random_flip", {"p": 1.0})]
    for augment, expected in ((False, x), (True, x[:, :, ::-1])):
        loader = Loader(
            dataset, 8, shuffle=False, drop_last=False, seed=0, transforms=transforms,
            augment=augment, prefetch=0,
        )  # fmt: skip
        ((batch, _),) = loader.epoch(0)
        np.testing.assert_allclose(batch, (expected - 0.5) / 0.5, rtol=1e-6)
