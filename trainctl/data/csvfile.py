"""A table from a CSV file (optionally gzipped): one column is the target.

NumPy parses an all-numbers table; when it refuses, a second pass over the lines finds the
first bad one and says what is wrong with it (a ragged row, a field that is not a number),
since NumPy's own message counts rows differently and suggests options trainctl does not
have. Tables as users have them (text columns, string labels, missing values) are read as
text into a `RawTable`, carved into splits, and encoded by a `TableEncoder` fitted on the
training split alone (`encode_splits`), or by the one a run stored.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, DataSplits, Loaded
from trainctl.data.files import read_text, require_file
from trainctl.data.table_encoder import (
    MISSING_RULES,
    RawTable,
    TableEncoder,
    is_number,
    notes_for,
)
from trainctl.data.targets import TASK_CHOICES
from trainctl.errors import DataError
from trainctl.spec import Arg

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}


def _fields(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def delimiter_of(value: str) -> str:
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
                if not is_number(field):
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


def _rows(
    path: Path, delimiter: str, header: bool | None
) -> tuple[list[str] | None, list[tuple[int, str]], int]:
    """The column names (None: no header), the data rows (line number, text) and the width
    of the first row. `header` None detects one: a first row with any field not a number."""
    lines = enumerate(read_text(path).splitlines(), start=1)
    rows = [(number, text) for number, text in lines if text.strip()]
    if not rows:
        raise DataError(f"{path}: empty, expected rows of numbers")
    first = _fields(rows[0][1], delimiter)
    if header is None:
        header = not all(is_number(field) for field in first)
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: a header row and no data rows")
    return ([field.strip() for field in first] if header else None), body, len(first)


def _first_non_finite(path: Path, body: list[tuple[int, str]], table: np.ndarray) -> None:
    bad = np.argwhere(~np.isfinite(table))
    if len(bad):
        row, column = bad[0]
        raise DataError(
            f"{path}: line {body[row][0]}, column {column + 1}: {table[row, column]} is not a "
            "finite number"
        )


def read_table(
    path: Path, delimiter: str = ",", header: bool | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The finite float64 table in CSV file `path` and its column names (None: no header)."""
    names, body, width = _rows(path, delimiter, header)
    table = _parse(path, body, delimiter, width)
    _first_non_finite(path, body, table)
    return table, names


def read_raw_table(path: Path, options: dict[str, Any], inputs: int | None = None) -> RawTable:
    """The rows of CSV file `path` as a RawTable, read with the csv `options`.

    `inputs` (predict) is the number of input columns a run takes: the target column is then
    optional, present when the header names it or the file has one column more."""
    delimiter = delimiter_of(options["delimiter"])
    names, body, width = _rows(path, delimiter, options["header"])
    if width < 2 and inputs is None:
        raise DataError(
            f"{path}: 1 column (delimiter {delimiter!r}), expected at least 2: inputs and a target"
        )
    target: int | None = None
    if inputs is None or _has_target(options, names, width, inputs):
        target, _ = _target_column(path, options, names, width)
    categorical = _categorical_columns(path, options, names, target)
    lines = np.array([number for number, _ in body], dtype=np.int64)
    columns = None if categorical else _numeric_columns(body, delimiter, width)
    if columns is None:
        columns = _text_columns(path, body, delimiter, width, names, categorical | {target},
                                options["missing_values"])  # fmt: skip
    elif len(columns) != width:
        raise DataError(
            f"{path}: rows of {len(columns)} fields, expected {width} like the first line"
        )
    shown = names or [str(index + 1) for index in range(width)]
    return RawTable(str(path), shown, columns, lines, target, names is not None)


def _has_target(options: dict[str, Any], names: list[str] | None, width: int, inputs: int) -> bool:
    if names is not None and options["target"] is not None:
        return options["target"] in names
    return width == inputs + 1


def _categorical_columns(
    path: Path, options: dict[str, Any], names: list[str] | None, target: int | None
) -> set[int]:
    wanted = options["categorical"]
    if not wanted:
        return set()
    if names is None:
        raise DataError(
            f"{path}: option categorical names columns, but the file has no header row "
            "(header: true, or add one)"
        )
    indices = set()
    for name in wanted:
        if name not in names:
            raise DataError(
                f"{path}: option categorical names no column {name!r}; the header has "
                f"{', '.join(map(repr, names))}"
            )
        if names.index(name) == target:
            raise DataError(
                f"{path}: option categorical names {name!r}, the target column; a text "
                "target is read as class names by itself"
            )
        indices.add(names.index(name))
    return indices


def _numeric_columns(
    body: list[tuple[int, str]], delimiter: str, width: int
) -> list[np.ndarray] | None:
    """The columns of an all-numbers table with no missing value (NumPy's fast reader);
    None for any other table, which `_text_columns` reads and explains."""
    try:
        table = np.loadtxt([text for _, text in body], delimiter=delimiter, dtype=np.float64,
                           ndmin=2, quotechar='"', comments=None)  # fmt: skip
    except ValueError:
        return None
    if not np.isfinite(table).all():
        return None
    return [table[:, index].copy() for index in range(table.shape[1])]


def _text_columns(
    path: Path,
    body: list[tuple[int, str]],
    delimiter: str,
    width: int,
    names: list[str] | None,
    text: set[int | None],
    missing_values: list[str],
) -> list[np.ndarray]:
    """Every column: those in `text` as strings (None where missing), the others as float64
    (NaN where missing); a field that is neither a number nor missing is an error."""
    markers = {value.strip() for value in missing_values}
    rows = []
    for number, line in body:  # one line at a time: a stray quote spoils no other line
        fields = _fields(line, delimiter)
        if len(fields) != width:
            raise DataError(
                f"{path}: line {number} has {len(fields)} fields, expected {width} "
                f"(ragged rows; delimiter {delimiter!r})"
            )
        rows.append([field.strip() for field in fields])
    columns = []
    for index in range(width):
        fields = [row[index] for row in rows]
        if index in text:
            _refuse_control_characters(path, body, index, fields)
            values = [None if field in markers else field for field in fields]
            columns.append(np.array(values, dtype=object))
            continue
        missing = np.array([field in markers for field in fields], dtype=bool)
        try:  # NumPy reads the numbers at once; a field it refuses is found below
            known = ["0" if gap else f for gap, f in zip(missing, fields, strict=True)]
            column = np.array(known, dtype=np.float64)
        except ValueError:
            column = None
        if column is not None and np.isfinite(column).all():
            column[missing] = np.nan
            columns.append(column)
            continue
        column = np.full(len(fields), np.nan)
        for row, field in enumerate(fields):
            if field in markers:
                continue
            if not is_number(field):
                name = f" {names[index]!r}" if names else ""
                raise DataError(
                    f"{path}: line {body[row][0]}, column {index + 1}: {field!r} is not a "
                    f"number (column{name} is read as numbers: list it in option "
                    "categorical to one-hot encode it)"
                )
            column[row] = float(field)
            if not np.isfinite(column[row]):
                raise DataError(
                    f"{path}: line {body[row][0]}, column {index + 1}: {column[row]} is not a "
                    "finite number"
                )
        columns.append(column)
    return columns


def _refuse_control_characters(
    path: Path, body: list[tuple[int, str]], index: int, fields: list[str]
) -> None:
    """Text with a NUL or another control character is a damaged file, not a class name."""
    for row, field in enumerate(fields):
        bad = next((char for char in field if ord(char) < 32 or ord(char) == 127), None)
        if bad is not None:
            raise DataError(
                f"{path}: line {body[row][0]}, column {index + 1}: {field!r} holds the control "
                f"character {bad!r}, expected text (is the file damaged, or not text?)"
            )


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    """The table's rows as read (see `encode_splits`); test_path's as the test split."""
    train = read_raw_table(require_file(path, "a CSV file"), options)
    test = None
    if options["test_path"] is not None:
        test_file = require_file(Path(options["test_path"]).expanduser(), "a CSV file (test_path)")
        test = _rows_dataset(read_raw_table(test_file, options))
    source = str(path) + ("" if test is None else f" + {test_file}")
    return Loaded(_rows_dataset(train), test, source)


def _rows_dataset(table: RawTable) -> ArrayDataset:
    """Raw rows in the form the splits carve: the table as inputs, line numbers as targets
    (placeholders until `encode_splits` sets the real ones)."""
    return ArrayDataset(table, table.lines, "classification", None)


def encode_splits(
    options: dict[str, Any], splits: DataSplits, stored: dict[str, Any] | None
) -> DataSplits:
    """The splits of raw rows encoded by the encoder fitted on the training split, or by
    `stored` (a run's preprocessing.json) when given: a resumed or evaluated run encodes its
    data exactly as it trained on it."""
    tables = {name: getattr(splits, name) for name in ("train", "val", "test")}
    raw = {name: dataset.inputs for name, dataset in tables.items() if dataset is not None}
    if stored is None:
        others = [table for name, table in raw.items() if name != "train"]
        encoder = TableEncoder.fit(raw["train"], others, options)
    else:
        encoder = TableEncoder.from_json(stored, "the run's preprocessing.json")
    encoded, notes = {}, []
    for name, table in raw.items():
        result = encoder.transform(table)
        if not len(result.inputs):
            raise DataError(f"{table.path}: no rows left in the {name} split (missing: drop)")
        encoded[name] = ArrayDataset(result.inputs, result.targets, encoder.task,
                                     encoder.num_classes)  # fmt: skip
        notes += notes_for(name, result)
    return DataSplits(
        train=encoded["train"], val=encoded.get("val"), test=encoded.get("test"),
        name=splits.name, source=splits.source,
        class_names=None if encoder.labels is None else tuple(encoder.labels),
        preprocessing=encoder.as_json(), notes=tuple(notes),
    )  # fmt: skip


ENTRY = DatasetEntry(
    name="csv",
    help=(
        "a table from a CSV file (path: the file, .csv or .csv.gz); one column is the target "
        "(numbers, or text: class names), the others are the inputs (numbers, or text in the "
        "categorical columns)"
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
        "test_path": Arg(
            "path",
            None,
            nullable=True,
            help="a CSV file of the same columns: the test split (test_split is then unused)",
        ),
        "categorical": Arg(
            "strs",
            [],
            help="text input columns, one-hot encoded over the training split's values plus "
            "an 'other' slot for values it has not got",
        ),
        "missing": Arg(
            "str",
            "error",
            choices=MISSING_RULES,
            help="a missing value: error; mean: fill with the training mean (categorical: the "
            "training shares); drop: leave the row out",
        ),
        "missing_values": Arg("strs", ["", "NA"], help="the fields that mean a missing value"),
        "standardize": Arg(
            "bool",
            False,
            help="scale numeric inputs to mean 0, std 1 with the training split's statistics",
        ),
    },  # fmt: skip
    load=load,
    encode=encode_splits,
    needs_path=True,
)
