"""What a run's model takes and gives, recorded when it starts: `<run>/model_input.json`.

`predict`, `export` and `serve` need the shape and dtype of one input, the task, the class
names and the shape of the targets, all of which come from the training data. Recorded
here, they let a run be used where its training data is not (another machine, a deleted
download): `stand_in_data` rebuilds the model from the record, without reading any data.
`eval` still reads the data, since it scores the run on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DataSplits
from trainctl.errors import RunFolderError
from trainctl.train.atomic import atomic_write_json
from trainctl.train.preprocessing import stored_preprocessing
from trainctl.train.rundir import RunFolder, read_json_object

FORMAT = 1


def write_model_input(run: RunFolder, data: DataSplits) -> None:
    train = data.train
    record = {
        "format": FORMAT,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "input_dtype": str(train.inputs.dtype),
        "task": data.task,
        "num_classes": data.num_classes,
        "class_names": None if data.class_names is None else list(data.class_names),
        "target_shape": list(train.targets.shape[1:]),
        "target_dtype": str(train.targets.dtype),
    }
    atomic_write_json(run.model_input_path, record)


def stand_in_data(run: RunFolder) -> DataSplits | None:
    """One sample of zeros shaped as the run's training data, with its task, class names and
    stored preprocessing: enough to build the run's model and encode new inputs as training
    did. None for a run made before the record existed."""
    path = run.model_input_path
    if not path.exists():
        return None
    record = read_json_object(path, "the run recorded what its model takes")
    try:
        inputs = np.zeros((1, *record["input_shape"]), np.dtype(record["input_dtype"]))
        targets = np.zeros((1, *record["target_shape"]), np.dtype(record["target_dtype"]))
        names = record["class_names"]
        train = ArrayDataset(inputs, targets, record["task"], record["num_classes"])
        return DataSplits(
            train, None, None, record["dataset"], f"{path} (no data read)",
            None if names is None else tuple(str(name) for name in names),
            preprocessing=stored_preprocessing(run),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{path} is damaged: {_describe(exc)}") from None


def _describe(exc: Exception) -> Any:
    return f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
