"""The identity of a run's splits: which samples train, validation and test hold.

A fingerprint of the samples themselves rather than of the settings that drew them, so that
it changes with anything that moves one sample from one split to another or changes one:
the seed, the split fractions, the data set and its options, and the data files.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DataSplits, LazyInputs

SPLIT_NAMES = ("train", "val", "test")


def split_identity(splits: DataSplits) -> dict[str, dict[str, Any] | None]:
    """Per split, its sample count and the SHA-256 of its inputs and targets (dtype, shape
    and bytes; inputs decoded from files by their `identity`); None for a split the data has
    not got."""
    return {name: _fingerprint(getattr(splits, name)) for name in SPLIT_NAMES}


def _fingerprint(dataset: ArrayDataset | None) -> dict[str, Any] | None:
    if dataset is None:
        return None
    digest = hashlib.sha256()
    arrays = [dataset.inputs, dataset.targets]
    if isinstance(dataset.inputs, LazyInputs):  # its files, not their decoded pixels
        digest.update(dataset.inputs.identity())
        arrays.pop(0)
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return {"samples": len(dataset), "sha256": digest.hexdigest()}
