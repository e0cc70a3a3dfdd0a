"""In-memory data sets, the train/val/test bundle, and the registry entry a data set is.

Every reader ends in the same place: float32 inputs (features `(N, F)` or NHWC images in
[0, 1]) and either int64 class labels `(N,)` or float32 regression targets `(N, T)`. The
trainer, the splits and the loader only ever see this form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trainctl.spec import Entry

TASKS = ("classification", "regression")


@dataclass
class ArrayDataset:
    """Inputs and targets held in host memory, one row per sample."""

    inputs: np.ndarray
    targets: np.ndarray
    task: str
    num_classes: int | None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """The samples at `indices`, copied (a split never shares memory with its parent)."""
        return ArrayDataset(
            self.inputs[indices], self.targets[indices], self.task, self.num_classes
        )


@dataclass
class DataSplits:
    """The data a run trains, validates and tests on, and where it came from."""

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    name: str
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample: `(F,)` for features, `(H, W, C)` for images."""
        return tuple(self.train.inputs.shape[1:])

    @property
    def task(self) -> str:
        return self.train.task

    @property
    def num_classes(self) -> int | None:
        return self.train.num_classes


class Loaded(NamedTuple):
    """What a data set's load function returns, before validation and test sets are carved."""

    train: ArrayDataset
    test: ArrayDataset | None
    source: str


LoadFn = Callable[[dict[str, Any], Path | None, int], Loaded]


@dataclass(frozen=True, kw_only=True)
class DatasetEntry(Entry):
    """A data set a config can name: its options (`args`), how to load it, where to get it.

    `load(options, path, seed)` gets the options already checked against `args`, the
    path when `needs_path`, and the run seed (synthetic sets draw from it). A
    `downloadable` one is in `trainctl.data.catalog` (`data.download: true` fetches it).
    """

    load: LoadFn
    needs_path: bool = False
    has_test_split: bool = False
    obtain: str = ""
    downloadable: bool = False
