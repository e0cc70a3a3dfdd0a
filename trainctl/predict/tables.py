"""The run's preprocessing of a CSV table: what `predict` does to a table before the model.

A run trained on a CSV table stored what its encoder learnt from the training split
(categorical vocabularies, class names, means, standard deviations) in preprocessing.json;
the table is read with the run's own CSV options and encoded by that same encoder, so a row
becomes exactly the features it would have been in training. Its target column is optional
and left out. Any other run takes a table of numbers, one column per input feature. The
run's transforms (normalize) follow in the Predictor, as the loader applies them after the
reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data import csvfile
from trainctl.data.files import require_file
from trainctl.data.options import resolve_options
from trainctl.data.table_encoder import RawTable, TableEncoder
from trainctl.data.targets import to_float32
from trainctl.predict.model import InputError, Predictor
from trainctl.train.components import load_data
from trainctl.train.preprocessing import stored_preprocessing


def table_inputs(path: Path, predictor: Predictor) -> np.ndarray:
    """The rows of the CSV file `path` as the run's model takes them."""
    file = require_file(path, "a CSV file")
    config = predictor.restored.config
    features = predictor.input.shape[0]
    if config.data.dataset != "csv":
        table, _ = csvfile.read_table(file)
        if table.shape[1] != features:
            raise InputError(
                f"{file}: {table.shape[1]} columns, expected the run's {features} input columns"
            )
        return to_float32(table, f"{file} inputs")
    encoder = TableEncoder.from_json(
        _stored_encoding(predictor), str(predictor.run.preprocessing_path)
    )
    options = resolve_options("data set", csvfile.ENTRY, config.data.options)
    raw = csvfile.read_raw_table(file, options, inputs=len(encoder.columns))
    width, expected = len(raw.input_indices()), len(encoder.columns)
    if width != expected:
        raise InputError(
            f"{file}: {width} columns, expected the run's {expected} input columns (or one "
            f"more: the target column {encoder.target!r}, which is left out)"
        )
    if encoder.missing == "drop":
        _refuse_missing(raw)
    return encoder.transform(_without_target(raw)).inputs


def _stored_encoding(predictor: Predictor) -> dict[str, Any]:
    """The run's preprocessing.json; a run made before it existed fits its encoder again on
    its training split, as it did when it trained (this reads its data)."""
    stored = stored_preprocessing(predictor.run)
    if stored is None:
        stored = load_data(predictor.restored.config).preprocessing
    return stored


def _without_target(table: RawTable) -> RawTable:
    keep = table.input_indices()
    columns = [table.columns[index] for index in keep]
    names = [table.names[index] for index in keep]
    return RawTable(table.path, names, columns, table.lines, None, table.named)


def _refuse_missing(table: RawTable) -> None:
    """A run that dropped rows with a missing value has nothing to fill one with, and
    predict gives one output per row: the first missing input, by line, is an error."""
    inputs = table.input_indices()
    masks = np.stack([table.missing(index) for index in inputs], axis=1)
    if masks.any():
        row, position = divmod(int(np.argmax(masks)), masks.shape[1])
        index = inputs[position]
        raise InputError(
            f"{table.where(row, index)}: a missing value in column {table.names[index]!r}; "
            "the run left such rows out (missing: drop) and has no value to fill in"
        )
