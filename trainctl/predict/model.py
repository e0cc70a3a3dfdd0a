"""A finished run as a function of new inputs: `trainctl.load(RUN).predict(array)`.

The model is restored as `eval` restores it (the run's config, a checkpoint checked tensor by
tensor) and runs through the eval-mode forward of the run's own mode: graph mode's compiled
forward for a graph-mode run, the eager forward otherwise. Inputs are what the run's data set
yields before its transforms (features, or NHWC images in [0, 1]); the run's deterministic
transforms (normalize) are applied here, its training-only ones (flips, crops) never, and the
model is in eval mode (no dropout, BatchNorm's running statistics), so the outputs equal
`eval`'s on the same samples in the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trainctl.data.loader import resolve_transforms
from trainctl.errors import TrainctlError
from trainctl.train.restore import RestoredRun, restore_run
from trainctl.train.rundir import RunFolder, find_run

Progress = Callable[[int], None]  # called with the number of samples just predicted


class InputError(TrainctlError):
    """Inputs a run's model cannot take: another shape, a dtype, values that are not finite."""


class Batchable(Protocol):
    """An array, or inputs that decode the samples a slice asks for (image files)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


@dataclass(frozen=True)
class InputDescription:
    """What a run's model takes per sample and what it gives back."""

    shape: tuple[int, ...]  # one sample: (F,) features or (H, W, C) images
    dtype: np.dtype
    task: str  # classification | regression
    class_names: tuple[str, ...] | None  # by class index; "0", "1", ... where unnamed
    output_shape: tuple[int, ...]

    @property
    def layout(self) -> str:
        return "NHWC" if len(self.shape) == 3 else "features"

    def __str__(self) -> str:
        if self.layout == "NHWC":
            height, width, channels = self.shape
            return (
                f"{self.dtype} images of {height}x{width} pixels with {channels} channel(s), "
                f"NHWC in [0, 1]: an array of shape (N, {height}, {width}, {channels})"
            )
        return f"{self.dtype} features: an array of shape (N, {', '.join(map(str, self.shape))})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "layout": self.layout,
            "task": self.task,
            "class_names": None if self.class_names is None else list(self.class_names),
            "output_shape": list(self.output_shape),
        }


class Predictor:
    """A run's model restored from a checkpoint, ready to predict; see `load`."""

    def __init__(self, restored: RestoredRun) -> None:
        self.restored = restored
        components = restored.components
        data, config = components.data, restored.config
        self.loss = config.loss.name
        names = data.class_names
        if names is None and data.num_classes is not None:
            names = tuple(str(index) for index in range(data.num_classes))
        self.input = InputDescription(
            data.input_shape, np.dtype(data.train.inputs.dtype), data.task, names,
            tuple(components.output_shape),
        )  # fmt: skip
        self.batch_size = config.data.eval_batch_size or config.data.batch_size
        self._num_classes = data.num_classes  # what the transforms are told, as the loader does
        named = [(t.name, t.args) for t in config.data.transforms]
        self._transforms = [(e, args) for e, args in resolve_transforms(named) if not e.random]
        self._step = components.make_step()

    @property
    def run(self) -> RunFolder:
        return self.restored.run

    @property
    def mode(self) -> str:
        return self.restored.config.mode

    def check(self, inputs: Batchable, where: str = "the inputs") -> None:
        """An InputError unless `inputs` is (N, *shape) of a dtype the model takes."""
        expected = self.input
        shape = tuple(inputs.shape)
        if shape[1:] != expected.shape or len(shape) != len(expected.shape) + 1:
            raise InputError(
                f"{where}: expected {expected}, found shape {shape} for run {self.run.path}"
            )
        dtype = np.dtype(inputs.dtype)
        if dtype.kind == "u" and dtype.itemsize == 1 and expected.layout == "NHWC":
            raise InputError(
                f"{where}: expected {expected}, found uint8 pixels (divide by 255 and cast to "
                f"{expected.dtype}, as trainctl's image readers do)"
            )
        if dtype.kind not in "fiu" or (expected.dtype.kind in "iu" and dtype.kind == "f"):
            raise InputError(f"{where}: expected {expected}, found dtype {dtype}")

    def predict(
        self, inputs: Batchable, progress: Progress | None = None, where: str = "the inputs"
    ) -> np.ndarray:
        """The model's outputs for `inputs` (N, *input.shape), batch by batch, in eval mode.

        Classification outputs are the last layer's (logits for cross_entropy); see
        `trainctl.predict.output.class_scores` for probabilities."""
        if not hasattr(inputs, "shape"):
            inputs = np.asarray(inputs)
        self.check(inputs, where)
        outputs = []
        for start in range(0, len(inputs), self.batch_size):
            batch = np.asarray(inputs[start : start + self.batch_size])
            outputs.append(self.forward(self.prepare(batch, where, start)))
            if progress is not None:
                progress(len(batch))
        if not outputs:
            return np.empty((0, *self.input.output_shape), np.float32)
        return np.concatenate(outputs)

    def prepare(self, batch: np.ndarray, where: str = "the inputs", start: int = 0) -> np.ndarray:
        """`batch`, checked (`start` numbers its first sample in errors), in the model's dtype
        after the run's deterministic transforms: what `forward` takes."""
        x = self.validated(batch, where, start)
        labels = np.zeros(len(x), np.int64)  # the transforms take (x, y); y is unused here
        for entry, args in self._transforms:
            x, labels = entry.apply(x, labels, args, None, self._num_classes)
        return x

    def validated(self, batch: np.ndarray, where: str = "the inputs", start: int = 0) -> np.ndarray:
        """`batch` checked as `prepare` checks it, in the input dtype, not yet transformed."""
        self.check(batch, where)
        finite = np.isfinite(batch)
        if not finite.all():
            index = np.unravel_index(int(np.argmin(finite)), batch.shape)
            sample = start + int(index[0])
            raise InputError(
                f"{where}: sample {sample} holds {batch[index]} at "
                f"{', '.join(map(str, index[1:]))}; every value must be a finite number"
            )
        return batch.astype(self.input.dtype, copy=False)

    def forward(self, prepared: np.ndarray) -> np.ndarray:
        """The eval-mode forward of the run's mode on a prepared batch (one compiled program
        per batch size in graph mode)."""
        return self._step.evaluate(prepared)

    @property
    def traces(self) -> int:
        """How many forwards graph mode has traced and compiled (0 in eager mode)."""
        return self._step.traces


def load(
    run: str | Path,
    checkpoint: str = "best",
    *,
    runs_root: str | Path = "runs",
    overrides: Sequence[str] = (),
) -> Predictor:
    """The run `run` (a folder, or a name under `runs_root`) restored from `checkpoint`
    (best, last or a file), for predictions in a notebook or a script.

        model = trainctl.load("digits-mlp-20261123-071451")
        model.input            # shape, dtype, layout, class names
        logits = model.predict(images)

    `overrides` change how it runs (e.g. "device=cuda", "mode=eager", "data.eval_batch_size=256").
    """
    folder = find_run(run, runs_root)
    config = folder.read_config(overrides)
    return Predictor(restore_run(folder, config, checkpoint, read_data=False))
