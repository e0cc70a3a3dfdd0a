"""A numeric table from a CSV file (optionally gzipped): one column is the target.

NumPy parses the table; when it refuses, a second pass over the lines finds the first bad
one and says what is wrong with it (a ragged row, a field that is not a number), since
NumPy's own message counts rows differently and suggests options trainctl does not have.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import DatasetEntry, Loaded
from trainctl.data.files import read_text, require_file
from trainctl.data.targets import TASK_CHOICES, build, decide_task
from trainctl.errors import DataError
from trainctl.spec import Arg

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _fields(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def _delimiter(value: str) -> str:
    delimiter = _DELIMITER_NAMES.get(value, value)
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise DataError(
            f"data set csv: option delimiter: expected one character or 'tab', found {value!r}"
        )
    return delimiter


def _parse(path: Path, rows: list[tuple[int, str]], delimiter: str, width: int) -> np.ndarray:
    """The rows (line number, text) as a float64 table of `width` columns."""
    try:
        table = np.loadtxt(
            [text for _, text in rows],
            delimiter=delimiter,
            dtype=np.float64,
            ndmin=2,
            quotechar='"',
            comments=None,
        )
    except ValueError as exc:
        for number, text in rows:
            fields = _fields(text, delimiter)
            if len(fields) != width:
                raise DataError(
                    f"{path}: line {number} has {len(fields)} fields, expected {width} "
                    f"(ragged rows; delimiter {delimiter!r})"
                ) from None
            for column, field in enumerate(fields, start=1):
                if not _is_number(field):
                    raise DataError(
                        f"{path}: line {number}, column {column}: {field!r} is not a number"
                    ) from None
        raise DataError(f"{path}: cannot be read as a table of numbers ({exc})") from None
    if table.shape[1] != width:
        raise DataError(
            f"{path}: rows of {table.shape[1]} fields, expected {width} like the first line"
        )
    return table


def _target_column(
    path: Path, options: dict[str, Any], names: list[str] | None, width: int
) -> tuple[int, str]:
    """The index and a printable name of the target column."""
    name = options["target"]
    if name is not None:
        if names is None:
            raise DataError(
                f"{path}: option target {name!r} names a column, but the file has no header "
                "row: use target_index, or header: true"
            )
        if name not in names:
            shown = ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
            raise DataError(f"{path}: no column {name!r} (option target); the header has {shown}")
        return names.index(name), repr(name)
    index = options["target_index"]
    if not -width <= index < width:
        raise DataError(
            f"{path}: option target_index {index} is out of range for {width} columns "
            f"(expected {-width}..{width - 1})"
        )
    index %= width
    return index, repr(names[index]) if names else f"{index + 1}"


def read_table(
    path: Path, delimiter: str = ",", header: bool | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The finite float64 table in CSV file `path` and its column names (None: no header).

    `header` None detects one: a first row with any field that is not a number.
    """
    lines = enumerate(read_text(path).splitlines(), start=1)
    rows = [(number, text) for number, text in lines if text.strip()]
    if not rows:
        raise DataError(f"{path}: empty, expected rows of numbers")
    first = _fields(rows[0][1], delimiter)
    if header is None:
        header = not all(_is_number(field) for field in first)
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: a header row and no data rows")
    table = _parse(path, body, delimiter, len(first))
    bad = np.argwhere(~np.isfinite(table))
    if len(bad):
        row, column = bad[0]
        raise DataError(
            f"{path}: line {body[row][0]}, column {column + 1}: {table[row, column]} is not a "
            "finite number"
        )
    return table, [field.strip() for field in first] if header else None


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    file = require_file(path, "a CSV file")
    delimiter = _delimiter(options["delimiter"])
    table, names = read_table(file, delimiter, options["header"])
    width = table.shape[1]
    if width < 2:
        raise DataError(
            f"{file}: 1 column (delimiter {delimiter!r}), expected at least 2: inputs and a target"
        )
    column, column_name = _target_column(file, options, names, width)
    inputs, targets = np.delete(table, column, axis=1), table[:, column]
    where = f"{file}: target column {column_name}"
    task, num_classes = decide_task([(targets, where)], options["task"])
    return Loaded(build(inputs, targets, task, num_classes, str(file)), None, str(file))


ENTRY = DatasetEntry(
    name="csv",
    help=(
        "a numeric table from a CSV file (path: the file, .csv or .csv.gz); one column is the "
        "target, the others are the inputs"
    ),
    args={
        "target": Arg(
            "str",
            None,
            nullable=True,
            help="name of the target column in the header; null: use target_index",
        ),
        "target_index": Arg("int", -1, help="position of the target column (0 = first, -1 = last)"),
        "header": Arg(
            "bool",
            None,
            nullable=True,
            help="whether the first row holds column names; null: detected (any non-number)",
        ),
        "delimiter": Arg("str", ",", help="the field separator: one character, or 'tab'"),
        "task": Arg(
            "str",
            "auto",
            choices=TASK_CHOICES,
            help="auto: integer-valued targets are class labels (classes = max + 1)",
        ),
    },
    load=load,
    needs_path=True,
)
