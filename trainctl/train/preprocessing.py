"""A run's preprocessing.json: what its data set's encoder learnt from the training split.

`train` writes it (atomically) when the data set fitted something (a CSV table's
vocabularies, class names, means and standard deviations); `train --resume`, `eval` and
`predict` read it back, so the data are encoded exactly as when the run trained, never
refitted. A run without one (nothing fitted, or made before the file existed) reads None.
"""

from __future__ import annotations

from typing import Any

from trainctl.data import DataSplits
from trainctl.train.atomic import atomic_write_json
from trainctl.train.rundir import RunFolder, read_json_object


def record_preprocessing(run: RunFolder, data: DataSplits) -> None:
    if data.preprocessing is not None:
        atomic_write_json(run.preprocessing_path, data.preprocessing)


def stored_preprocessing(run: RunFolder) -> dict[str, Any] | None:
    path = run.preprocessing_path
    if not path.exists():
        return None
    return read_json_object(path, "the run stored no preprocessing")
