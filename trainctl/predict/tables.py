"""The run's preprocessing of a CSV table: what `predict` does to a table before the model.

One function, `table_inputs`, so that a fitted preprocessing saved with the run (categorical
vocabularies, string labels, missing values, standardisation) replaces it in one place. Today
a run reads numeric columns only: the table is read with the run's own CSV options
(delimiter, header) and its target column, when the file has one, is left out by the run's
rule (`target` by name, else `target_index`). The run's transforms (normalize) follow in the
Predictor, as the loader applies them after the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainctl.config import Config
from trainctl.data import csvfile
from trainctl.data.files import require_file
from trainctl.data.options import resolve_options
from trainctl.data.targets import to_float32
from trainctl.predict.model import InputError


def table_inputs(path: Path, config: Config, features: int) -> np.ndarray:
    """The input columns of the CSV file `path` as the run's model takes them: `features`
    numeric columns, plus optionally the run's target column, which is dropped."""
    file = require_file(path, "a CSV file")
    trained_on_csv = config.data.dataset == "csv"
    options = resolve_options(
        "data set", csvfile.ENTRY, config.data.options if trained_on_csv else {}
    )
    table, names = csvfile.read_table(
        file, csvfile._delimiter(options["delimiter"]), options["header"]
    )
    width = table.shape[1]
    if width == features + 1 and trained_on_csv:
        column, _ = csvfile._target_column(file, options, names, width)
        table = np.delete(table, column, axis=1)
    elif width != features:
        target = " (or one more: the target column, which is left out)" if trained_on_csv else ""
        raise InputError(
            f"{file}: {width} columns, expected the run's {features} input columns{target}"
        )
    return to_float32(table, f"{file} inputs")
