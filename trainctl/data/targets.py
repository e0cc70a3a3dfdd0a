"""Turning user arrays (from npz or csv files) into an ArrayDataset, with the task decided.

`task: auto` reads integer-valued targets >= 0 as class labels (num_classes = max + 1) and
anything else as regression; the same decision covers a file's train and test arrays.
"""

from __future__ import annotations

import numpy as np

from trainctl.data.dataset import ArrayDataset
from trainctl.errors import DataError

TASK_CHOICES = ("auto", "classification", "regression")
_NUMERIC_KINDS = "biuf"


def check_numeric(array: np.ndarray, where: str) -> None:
    """Reject strings, objects, complex numbers, NaN and infinities in `where`."""
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(f"{where}: expected numbers, found dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        index = np.unravel_index(int(np.argmin(np.isfinite(array))), array.shape)
        raise DataError(
            f"{where}: expected finite numbers, found {array[index]} at index "
            f"{', '.join(map(str, index))}"
        )


def _label_column(targets: np.ndarray) -> np.ndarray | None:
    """`targets` as a 1-d array when it holds one integer value per sample, else None."""
    if targets.ndim == 2 and targets.shape[1] == 1:
        targets = targets[:, 0]
    if targets.ndim != 1:
        return None
    if targets.dtype.kind in "biu" or np.array_equal(targets, np.round(targets)):
        return targets
    return None


def decide_task(targets: list[tuple[np.ndarray, str]], task: str) -> tuple[str, int | None]:
    """The task and class count for target arrays given as (array, where) pairs."""
    if task == "regression":
        return task, None
    columns = []
    for array, where in targets:
        column = _label_column(array)
        negative = column is not None and len(column) > 0 and column.min() < 0
        if task == "auto" and (column is None or negative):
            return "regression", None
        if column is None:
            found = (
                f"targets of shape {array.shape}"
                if array.ndim > 1 and array.shape[1:] != (1,)
                else "non-integer values"
            )
            raise DataError(
                f"{where}: task classification needs one integer label per sample, found {found}"
            )
        if negative:
            raise DataError(f"{where}: class labels must be >= 0, found {column.min()}")
        columns.append(column)
    return "classification", 1 + max((int(c.max()) for c in columns if len(c)), default=-1)


def to_float32(array: np.ndarray, where: str) -> np.ndarray:
    """`array` as float32; a DataError for a value beyond its range, which would become inf."""
    with np.errstate(over="ignore"):
        converted = array.astype(np.float32)
    finite = np.isfinite(converted)
    if not finite.all():
        index = np.unravel_index(int(np.argmin(finite)), array.shape)
        raise DataError(
            f"{where}: {array[index]} at index {', '.join(map(str, index))} is beyond the "
            "float32 range (about ±3.4e38)"
        )
    return converted


def build(
    inputs: np.ndarray, targets: np.ndarray, task: str, num_classes: int | None, where: str
) -> ArrayDataset:
    """The dataset for checked arrays under a decided task; `where` names them in errors."""
    inputs = to_float32(inputs, f"{where} inputs")
    if task == "classification":
        labels = targets.reshape(len(targets)).astype(np.int64)
        return ArrayDataset(inputs, labels, task, num_classes)
    values = to_float32(targets.reshape(len(targets), -1), f"{where} targets")
    return ArrayDataset(inputs, values, task, None)
