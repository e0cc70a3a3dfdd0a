"""A table's text turned into the numbers a model takes, learnt from the training split alone.

The CSV reader yields a `RawTable`: numeric columns as float64 (NaN where a value is missing),
text columns (categorical inputs, string labels) as Python strings (None where missing), and
each row's line number. `TableEncoder.fit` learns from the training rows only: each
categorical column's vocabulary (sorted, plus an "other" slot for values it never saw), the
class names of a text target, each numeric column's mean (the fill of `missing: mean`) and
standard deviation (`standardize`). `transform` applies that fit to any split, and to the
inputs `predict` is given; `as_json`/`from_json` are the run's preprocessing.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from trainctl.data.targets import decide_task, to_float32
from trainctl.errors import DataError

FORMAT = 1
OTHER = "<other>"
MISSING_RULES = ("error", "mean", "drop")


@dataclass
class RawTable:
    """The rows of a CSV file as read, before any statistic: see the module docstring."""

    path: str
    names: list[str]  # the header's names, or "1", "2", ... by position
    columns: list[np.ndarray]
    lines: np.ndarray  # the file line of each row
    target: int | None  # the target column's index; None: the file has none (predict input)
    named: bool = True  # whether `names` come from a header row

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), len(self.columns)

    def __getitem__(self, index: np.ndarray) -> RawTable:
        picked = [column[index] for column in self.columns]
        return RawTable(self.path, self.names, picked, self.lines[index], self.target,
                        self.named)  # fmt: skip

    def missing(self, column: int) -> np.ndarray:
        values = self.columns[column]
        if values.dtype.kind == "f":
            return np.isnan(values)
        return np.array([value is None for value in values], dtype=bool)

    def input_indices(self) -> list[int]:
        return [index for index in range(len(self.columns)) if index != self.target]

    def where(self, row: int, column: int | None = None) -> str:
        """`path: line L` (and `, column C`) of a row, for messages."""
        place = f"{self.path}: line {self.lines[row]}"
        return place if column is None else f"{place}, column {column + 1}"


@dataclass
class ColumnCode:
    """How one input column becomes features: a number, or one-hot over a vocabulary."""

    name: str
    categories: list[str] | None = None  # categorical: the training vocabulary, sorted
    frequencies: list[float] | None = None  # categorical: training share of each (mean fill)
    mean: float | None = None  # numeric: training mean (the fill of missing: mean)
    std: float | None = None  # numeric: training standard deviation (1 where it is 0)

    def feature_names(self) -> list[str]:
        if self.categories is None:
            return [self.name]
        return [f"{self.name}={value}" for value in [*self.categories, OTHER]]


class Encoded(NamedTuple):
    inputs: np.ndarray  # float32 (N, features)
    targets: np.ndarray | None  # int64 labels or float32 (N, 1) values; None without a target
    dropped: int  # rows left out for a missing value (missing: drop)
    unseen: dict[str, int]  # per categorical column, values mapped to the "other" slot


@dataclass
class TableEncoder:
    """What the training split taught about a table; see the module docstring."""

    columns: list[ColumnCode]  # the input columns, in file order
    target: str
    labels: list[str] | None  # the class names of a text target column, by class index
    task: str
    num_classes: int | None
    missing: str  # error | mean | drop
    standardize: bool

    @property
    def features(self) -> list[str]:
        return [name for column in self.columns for name in column.feature_names()]

    @classmethod
    def fit(
        cls, train: RawTable, others: Sequence[RawTable], options: dict[str, Any]
    ) -> TableEncoder:
        """The encoder of `train`'s rows; `others` (val, test) only decide how many classes
        numeric labels count, as they always have for npz and csv files."""
        missing = options["missing"]
        if missing == "drop":
            train = train[~_missing_rows(train)]
            if not len(train):
                raise DataError(f"{train.path}: every training row has a missing value")
        columns = [_fit_column(train, index, options) for index in train.input_indices()]
        target = train.columns[train.target]
        labels, task, num_classes = None, options["task"], None
        if _is_text(target):
            labels = sorted({value for value in target if value is not None})
            if task == "regression":
                raise DataError(
                    f"{train.path}: target column {train.names[train.target]!r} holds text "
                    f"({labels[0]!r}), expected numbers for task regression"
                )
            task, num_classes = "classification", len(labels)
        else:
            arrays = [
                (
                    _known(_numbers(t, t.target)),
                    f"{t.path}: target column {t.names[t.target]!r}",
                )  # fmt: skip
                for t in (train, *others)
            ]
            task, num_classes = decide_task(arrays, task)
        return cls(columns, train.names[train.target], labels, task, num_classes, missing,
                   bool(options["standardize"]))  # fmt: skip

    def transform(self, table: RawTable) -> Encoded:
        """`table`'s rows as features (and targets when it has its target column)."""
        self._check_columns(table)
        dropped = 0
        if self.missing == "drop":
            keep = ~_missing_rows(table)
            dropped = int((~keep).sum())
            table = table[keep]
        else:
            self._refuse_missing(table)
        blocks, unseen = [], {}
        for code, index in zip(self.columns, table.input_indices(), strict=True):
            block, count = _encode_column(code, table.columns[index], self.standardize)
            blocks.append(block)
            if code.categories is not None:
                unseen[code.name] = count
        inputs = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(table), 0))
        targets = None if table.target is None else self._targets(table)
        return Encoded(to_float32(inputs, f"{table.path} inputs"), targets, dropped, unseen)

    def _check_columns(self, table: RawTable) -> None:
        names = [table.names[index] for index in table.input_indices()]
        expected = [column.name for column in self.columns]
        if names != expected if table.named else len(names) != len(expected):
            raise DataError(
                f"{table.path}: input columns {', '.join(map(repr, names))}, expected the "
                f"training split's {', '.join(map(repr, expected))}"
            )

    def _refuse_missing(self, table: RawTable) -> None:
        """A DataError at the first missing value, unless missing: mean fills it (a target
        cannot be filled)."""
        if self.missing == "mean":
            if table.target is None or not table.missing(table.target).any():
                return
            row, index = int(np.argmax(table.missing(table.target))), table.target
        else:
            masks = np.stack([table.missing(i) for i in range(len(table.columns))], axis=1)
            if not masks.any():
                return
            row, index = divmod(int(np.argmax(masks)), masks.shape[1])  # the first, by line
        name = table.names[index]
        if self.missing == "error":
            raise DataError(
                f"{table.where(row, index)}: a missing value in column {name!r} "
                "(data.options.missing is error: use mean to fill it with the training "
                "mean, or drop to leave the row out)"
            )
        raise DataError(
            f"{table.where(row, index)}: a missing value in the target column "
            f"{name!r}, which missing: mean cannot fill (use missing: drop)"
        )

    def _targets(self, table: RawTable) -> np.ndarray:
        column = table.columns[table.target]
        if self.labels is not None:
            index = {label: position for position, label in enumerate(self.labels)}
            texts = [_as_text(value) for value in column]
            for row, text in enumerate(texts):
                if text not in index:
                    raise DataError(
                        f"{table.where(row)}: label {text!r} in target column {self.target!r} "
                        f"is not one of the {len(self.labels)} labels of the training split "
                        f"({', '.join(self.labels)}): a model cannot be scored on a class it "
                        "never saw"
                    )
            return np.array([index[text] for text in texts], dtype=np.int64)
        values = _numbers(table, table.target)
        if self.task == "regression":
            return to_float32(values.reshape(-1, 1), f"{table.path} targets")
        bad = (values != np.round(values)) | (values < 0) | (values >= self.num_classes)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"{table.where(row)}: class label {values[row]:g} in target column "
                f"{self.target!r}, expected an integer in 0..{self.num_classes - 1}"
            )
        return values.astype(np.int64)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": "table",
            "columns": [
                {
                    "name": c.name,
                    "categories": c.categories,
                    "frequencies": c.frequencies,
                    "mean": c.mean,
                    "std": c.std,
                }  # fmt: skip
                for c in self.columns
            ],
            "features": self.features,
            "target": self.target,
            "labels": self.labels,
            "task": self.task,
            "num_classes": self.num_classes,
            "missing": self.missing,
            "standardize": self.standardize,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> TableEncoder:
        """The encoder `as_json` wrote; a DataError naming `where` for anything else."""
        try:
            if data["format"] != FORMAT or data["kind"] != "table":
                raise ValueError(f"format {data['format']!r} of kind {data['kind']!r}")
            columns = [ColumnCode(**column) for column in data["columns"]]
            encoder = cls(columns, data["target"], data["labels"], data["task"],
                          data["num_classes"], data["missing"], data["standardize"])  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{where}: not a table preprocessing trainctl wrote ({exc}); train the run again"
            ) from None
        if encoder.missing not in MISSING_RULES or encoder.task not in ("classification",
                                                                        "regression"):  # fmt: skip
            raise DataError(f"{where}: unknown missing rule or task; train the run again")
        return encoder


def _is_text(column: np.ndarray) -> bool:
    """Whether a column read as text holds any value that is not a number."""
    return column.dtype == object and any(
        value is not None and not is_number(value) for value in column
    )


def is_number(text: str) -> bool:
    """Whether `text` reads as a number (float() takes it)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_text(value: Any) -> Any:
    """A label as text: numbers read by the fast path as floats print as written (3, 2.5)."""
    return f"{value:g}" if isinstance(value, float) else value


def _numbers(table: RawTable, index: int) -> np.ndarray:
    """Column `index` as float64 (NaN where missing); text that is no finite number is an
    error (a target column is read as text, in case it holds class names)."""
    column = table.columns[index]
    if column.dtype.kind == "f":
        return column
    values = np.full(len(column), np.nan)
    for row, value in enumerate(column):
        if value is None:
            continue
        if not is_number(value):
            raise DataError(f"{table.where(row, index)}: {value!r} is not a number, as the "
                            "training split's targets are")  # fmt: skip
        values[row] = float(value)
        if not np.isfinite(values[row]):
            raise DataError(f"{table.where(row, index)}: {values[row]} is not a finite number")
    return values


def _known(values: np.ndarray) -> np.ndarray:
    return values[~np.isnan(values)]


def _missing_rows(table: RawTable) -> np.ndarray:
    rows = np.zeros(len(table), dtype=bool)
    for index in range(len(table.columns)):
        rows |= table.missing(index)
    return rows


def _fit_column(train: RawTable, index: int, options: dict[str, Any]) -> ColumnCode:
    name, column = train.names[index], train.columns[index]
    known = column[~train.missing(index)]
    if column.dtype == object:
        values, counts = np.unique(np.asarray(known, dtype=str), return_counts=True)
        shares = (counts / max(1, counts.sum())).tolist()
        return ColumnCode(name, categories=values.tolist(), frequencies=[*shares, 0.0])
    if not len(known):
        raise DataError(
            f"{train.path}: column {name!r} has no value in the training split to learn from"
        )
    std = float(known.std()) if options["standardize"] else None
    return ColumnCode(name, mean=float(known.mean()), std=None if std is None else std or 1.0)


def _encode_column(code: ColumnCode, column: np.ndarray, standardize: bool):
    """The features of one column (N, width) and how many of its values the training split
    never saw."""
    if code.categories is None:
        values = np.where(np.isnan(column), code.mean, column)
        if standardize:
            values = (values - code.mean) / code.std
        return values.reshape(-1, 1), 0
    slot = {value: position for position, value in enumerate(code.categories)}
    other = len(code.categories)
    block = np.zeros((len(column), other + 1))
    unseen = 0
    for row, value in enumerate(column):
        if value is None:
            block[row] = code.frequencies
            continue
        position = slot.get(value, other)
        unseen += position == other
        block[row, position] = 1.0
    return block, unseen


def notes_for(split: str, encoded: Encoded) -> list[str]:
    """What encoding `split` did that a user should hear about, as notices."""
    notes = []
    if encoded.dropped:
        notes.append(f"{split}: dropped {encoded.dropped} row(s) with a missing value "
                     "(data.options.missing: drop)")  # fmt: skip
    for name, count in encoded.unseen.items():
        if count:
            notes.append(
                f"{split}: {count} value(s) of column {name!r} not seen in training, "
                f"encoded as its {OTHER!r} slot"
            )
    return notes
