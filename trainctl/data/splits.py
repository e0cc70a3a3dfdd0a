"""Carving validation and test sets out of a data set's training samples.

Both fractions are of the loaded training set, and one seeded permutation assigns the
samples: the first ones to test (only when the data set has no test split of its own), the
next to validation (likewise), the rest to training. A fraction above zero always carves at
least one sample, and carving never leaves training empty.
"""

from __future__ import annotations

import math

import numpy as np

from trainctl.data.dataset import ArrayDataset, DataSplits, Loaded
from trainctl.data.seeding import rng
from trainctl.errors import DataError


def check_fraction(name: str, value: object) -> float:
    """`value` as a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DataError(f"{name} must be a number in [0, 1), found {value!r}")
    return float(value)


def carve_count(total: int, fraction: float) -> int:
    """How many of `total` samples a fraction takes: rounded, and at least 1 when > 0."""
    if fraction == 0:
        return 0
    return max(1, math.floor(total * fraction + 0.5))


def split(loaded: Loaded, name: str, val_split: float, test_split: float, seed: int) -> DataSplits:
    """The train/val/test splits of `loaded`, carved with the split stream of `seed`."""
    train = loaded.train
    total = len(train)
    n_test = 0 if loaded.test is not None else carve_count(total, test_split)
    n_val = 0 if loaded.val is not None else carve_count(total, val_split)
    if n_test + n_val >= total:
        raise DataError(
            f"data set {name!r} has {total} training sample(s); val_split {val_split:g} "
            f"({n_val}) and test_split {test_split:g} ({n_test}) leave none to train on"
        )
    order = rng(seed, "split").permutation(total)
    test_part, val_part, train_part = np.split(order, [n_test, n_test + n_val])
    carved: list[ArrayDataset | None] = [
        train.subset(np.sort(part)) if len(part) else None for part in (test_part, val_part)
    ]
    return DataSplits(
        train=train.subset(np.sort(train_part)) if n_test + n_val else train,
        val=loaded.val if loaded.val is not None else carved[1],
        test=loaded.test if loaded.test is not None else carved[0],
        name=name,
        source=loaded.source,
        class_names=loaded.class_names,
        skipped_files=loaded.skipped_files,
    )
