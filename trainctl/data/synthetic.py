"""Synthetic data sets drawn from the run seed: the same seed and options give the same data.

They need no files, so tutorials, tests and benchmarks run anywhere: `regression` (a noisy
linear map, or explicit x/y lists such as the 3-point x = [1, 2, 3], y = [2, 4, 6]),
`spirals` and `blobs` (2-d and n-d classification), `images` (class-conditional NHWC
patterns with noise, for benchmarking convolutional models at any size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, Loaded
from trainctl.data.files import memory_bytes
from trainctl.data.seeding import rng
from trainctl.errors import DataError
from trainctl.spec import Arg

_PATTERN_BLOCK = 4  # image templates are random on a grid of 4x4-pixel blocks
_WORKING_COPIES = 4  # arrays of the data set's size alive at once while it is drawn


def _source(seed: int) -> str:
    return f"synthetic, seed {seed}"


def _balanced_labels(generator: np.random.Generator, samples: int, classes: int) -> np.ndarray:
    """Labels with every class equally often (up to one), in random order."""
    return generator.permutation(np.arange(samples) % classes).astype(np.int64)


def _check_classes(name: str, samples: int, classes: int) -> None:
    if samples < classes:
        raise DataError(f"{name}: samples {samples} is fewer than classes {classes}")


def _check_size(name: str, samples: int, values: int) -> None:
    """Refuse, before drawing anything, a data set that cannot fit in memory: `values` per
    sample, float64 while drawn, with a few temporary copies (_WORKING_COPIES) on the way."""
    needed = samples * values * 8 * _WORKING_COPIES
    if needed > memory_bytes():
        raise DataError(
            f"{name}: {samples:,} samples of {values:,} values need about {needed:,} bytes "
            f"to draw, more than this machine's memory ({memory_bytes():,} bytes)"
        )


def _given_xy(options: dict[str, Any]) -> Loaded:
    x, y = options["x"], options["y"]
    if x is None or y is None:
        missing = "y" if y is None else "x"
        raise DataError(f"regression options x and y go together: {missing} is missing")
    if len(x) != len(y):
        raise DataError(f"regression options x and y differ in length: {len(x)} and {len(y)}")
    inputs = np.asarray(x, dtype=np.float32)[:, None]
    targets = np.asarray(y, dtype=np.float32)[:, None]
    return Loaded(ArrayDataset(inputs, targets, "regression", None), None, "given x and y lists")


def load_regression(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    if options["x"] is not None or options["y"] is not None:
        return _given_xy(options)
    samples, features, weights = options["samples"], options["features"], options["weights"]
    _check_size("regression", samples, features + 1)
    generator = rng(seed, "synthetic")
    if weights is None:
        weights = generator.standard_normal(features)
    elif len(weights) != features:
        raise DataError(
            f"regression option weights: {len(weights)} numbers for {features} features; "
            "give one per feature, or null for random weights"
        )
    inputs = generator.standard_normal((samples, features))
    noise = options["noise"] * generator.standard_normal(samples)
    targets = inputs @ np.asarray(weights) + options["bias"] + noise
    dataset = ArrayDataset(
        inputs.astype(np.float32), targets[:, None].astype(np.float32), "regression", None
    )
    return Loaded(dataset, None, _source(seed))


def load_spirals(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    samples, classes = options["samples"], options["classes"]
    _check_classes("spirals", samples, classes)
    _check_size("spirals", samples, 3)
    generator = rng(seed, "synthetic")
    labels = _balanced_labels(generator, samples, classes)
    radius = generator.random(samples)
    # Each arm makes one full turn from the centre; arms start 2*pi/classes apart.
    angle = 2 * np.pi * (labels / classes + radius)
    angle += options["noise"] * generator.standard_normal(samples)
    inputs = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    dataset = ArrayDataset(inputs.astype(np.float32), labels, "classification", classes)
    return Loaded(dataset, None, _source(seed))


def load_blobs(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    samples, classes, features = options["samples"], options["classes"], options["features"]
    _check_classes("blobs", samples, classes)
    _check_size("blobs", samples, features + 1)
    generator = rng(seed, "synthetic")
    centres = generator.uniform(-10, 10, size=(classes, features))
    labels = _balanced_labels(generator, samples, classes)
    inputs = centres[labels] + options["spread"] * generator.standard_normal((samples, features))
    dataset = ArrayDataset(inputs.astype(np.float32), labels, "classification", classes)
    return Loaded(dataset, None, _source(seed))


def load_images(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    samples, classes = options["samples"], options["classes"]
    height, width, channels = options["height"], options["width"], options["channels"]
    _check_classes("images", samples, classes)
    _check_size("images", samples + classes, height * width * channels)
    generator = rng(seed, "synthetic")
    grid = (classes, -(-height // _PATTERN_BLOCK), -(-width // _PATTERN_BLOCK), channels)
    coarse = generator.random(grid, dtype=np.float32)
    templates = coarse.repeat(_PATTERN_BLOCK, axis=1).repeat(_PATTERN_BLOCK, axis=2)
    templates = templates[:, :height, :width]
    labels = _balanced_labels(generator, samples, classes)
    noise = generator.standard_normal((samples, height, width, channels), dtype=np.float32)
    inputs = templates[labels] + np.float32(options["noise"]) * noise
    np.clip(inputs, 0, 1, out=inputs)
    dataset = ArrayDataset(inputs, labels, "classification", classes)
    return Loaded(dataset, None, _source(seed))


def _samples(default: int) -> Arg:
    return Arg("int", default, low=1, help="number of samples")


def _classes(default: int) -> Arg:
    return Arg("int", default, low=2, help="number of classes")


ENTRIES = (
    DatasetEntry(
        name="regression",
        help=(
            "synthetic y = x w + bias + noise, targets (N, 1); or explicit x and y lists "
            "(one feature), which then replace the generated data"
        ),
        args={
            "samples": _samples(100),
            "features": Arg("int", 1, low=1, help="number of input features"),
            "weights": Arg(
                "floats", None, nullable=True, help="one weight per feature; null: random"
            ),
            "bias": Arg("float", 0.0, help="added to every target"),
            "noise": Arg("float", 0.1, low=0, help="standard deviation of the target noise"),
            "x": Arg("floats", None, nullable=True, help="explicit inputs, e.g. [1, 2, 3]"),
            "y": Arg("floats", None, nullable=True, help="explicit targets, e.g. [2, 4, 6]"),
        },
        load=load_regression,
        obtain="generated from the run seed",
    ),
    DatasetEntry(
        name="spirals",
        help="synthetic 2-d spirals, one arm per class",
        args={
            "samples": _samples(300),
            "classes": _classes(3),
            "noise": Arg("float", 0.2, low=0, help="standard deviation of the angle, radians"),
        },
        load=load_spirals,
        obtain="generated from the run seed",
    ),
    DatasetEntry(
        name="blobs",
        help="synthetic Gaussian blobs, one per class, centres uniform in [-10, 10]",
        args={
            "samples": _samples(300),
            "classes": _classes(3),
            "features": Arg("int", 2, low=1, help="number of input features"),
            "spread": Arg("float", 1.0, low=0, help="standard deviation around each centre"),
        },
        load=load_blobs,
        obtain="generated from the run seed",
    ),
    DatasetEntry(
        name="images",
        help="synthetic NHWC images in [0, 1]: a random pattern per class plus noise",
        args={
            "samples": _samples(1024),
            "classes": _classes(10),
            "height": Arg("int", 28, low=1, help="image height in pixels"),
            "width": Arg("int", 28, low=1, help="image width in pixels"),
            "channels": Arg("int", 1, low=1, help="channels per pixel"),
            "noise": Arg("float", 0.25, low=0, help="standard deviation of the pixel noise"),
        },
        load=load_images,
        obtain="generated from the run seed",
    ),
)
