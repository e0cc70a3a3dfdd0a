"""In-memory data sets, the train/val/test bundle, and the registry entry a data set is.

Every reader ends in the same place: float32 inputs (features `(N, F)` or NHWC images in
[0, 1]) and either int64 class labels `(N,)` or float32 regression targets `(N, T)`. The
trainer, the splits and the loader only ever see this form. The inputs are an array, or
`LazyInputs` that look like one and decode the samples a batch indexes only then.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from trainctl.spec import Entry

TASKS = ("classification", "regression")


class LazyInputs(ABC):
    """Inputs read from files when indexed: `inputs[indices]` decodes those samples into a
    fresh array (in the loader's prefetch thread), `subset` and `identity` decode nothing."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def subset(self, indices: np.ndarray) -> LazyInputs:
        """The samples at `indices`, still undecoded."""

    @abstractmethod
    def identity(self) -> bytes:
        """Bytes that change when any sample would decode differently (for splits.json)."""


@dataclass
class ArrayDataset:
    """Inputs and targets, one row per sample; inputs in host memory or decoded on access."""

    inputs: np.ndarray | LazyInputs
    targets: np.ndarray
    task: str
    num_classes: int | None

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """The samples at `indices`, copied (a split never shares memory with its parent)."""
        inputs = self.inputs
        picked = inputs.subset(indices) if isinstance(inputs, LazyInputs) else inputs[indices]
        return ArrayDataset(picked, self.targets[indices], self.task, self.num_classes)


@dataclass
class DataSplits:
    """The data a run trains, validates and tests on, and where it came from."""

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    name: str
    source: str
    class_names: tuple[str, ...] | None = None  # by class index, where the data names them
    skipped_files: tuple[str, ...] | None = None  # unreadable files left out (skip_bad)
    # What a fitted encoder learnt from the training split (a table's vocabularies, means),
    # as JSON; the run stores it and eval/predict/resume encode with it (None: nothing fitted).
    preprocessing: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()  # what the encoding did that a user should hear about

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
    val: ArrayDataset | None = None  # the data set's own validation split, if it has one
    class_names: tuple[str, ...] | None = None
    skipped_files: tuple[str, ...] | None = None


LoadFn = Callable[[dict[str, Any], Path | None, int], Loaded]
# (options, splits of raw rows, stored preprocessing or None) -> the splits encoded
EncodeFn = Callable[[dict[str, Any], DataSplits, dict[str, Any] | None], DataSplits]


@dataclass(frozen=True, kw_only=True)
class DatasetEntry(Entry):
    """A data set a config can name: its options (`args`), how to load it, where to get it.

    `load(options, path, seed)` gets the options already checked against `args`, the
    path when `needs_path`, and the run seed (synthetic sets draw from it). A
    `downloadable` one is in `trainctl.data.catalog` (`data.download: true` fetches it).
    With `encode`, `load` yields raw rows and `encode` turns the splits into numbers after
    they are carved, fitting on the training split alone (or reusing a run's stored fit).
    """

    load: LoadFn
    encode: EncodeFn | None = None
    needs_path: bool = False
    has_test_split: bool = False
    obtain: str = ""
    downloadable: bool = False
