"""Random streams of the data package, each a pure function of the run seed and counters.

Every use (synthetic data, splits, epoch shuffles, augmentation) gets its own stream tag, so
no two uses ever draw the same bits: NumPy's SeedSequence treats `[s, e]` and `[s, e, 0]`
alike, and the trainer's own generator seeds with `(seed, counter)`.
"""

from __future__ import annotations

import numpy as np

from trainctl.errors import DataError

_DATA_TAG = 0xDA7A
STREAMS = {"synthetic": 1, "split": 2, "shuffle": 3, "augment": 4}


def check_seed(seed: object) -> int:
    """The seed as an int; NumPy would reject a negative one with a message about entropy."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, found {seed!r}")
    return int(seed)


def rng(seed: int, stream: str, *counters: int) -> np.random.Generator:
    """The generator for `stream` at `counters` (e.g. epoch, batch) under `seed`."""
    return np.random.default_rng([seed, _DATA_TAG, STREAMS[stream], *counters])
