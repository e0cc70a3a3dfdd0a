"""`trainctl eval`: score a finished (or interrupted) run's checkpoint on one split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.errors import TrainctlError
from trainctl.metrics import accuracy, confusion_matrix, mae, mse, r2, top_k_accuracy
from trainctl.train.atomic import atomic_write_json
from trainctl.train.evaluation import EvalResult, evaluate_split
from trainctl.train.heldout import check_checkpoint_splits, check_splits, refuse_split_changes
from trainctl.train.restore import restore_run
from trainctl.train.rundir import RunFolder

SPLITS = ("test", "val", "train")


class EvalError(TrainctlError):
    """An evaluation that cannot run as asked: a missing split or checkpoint."""


@dataclass
class RunScore:
    run: RunFolder
    checkpoint: Path
    checkpoint_step: int | None
    task: str
    result: EvalResult
    scores: dict[str, float]
    confusion: np.ndarray | None
    report_path: Path
    class_names: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "run": str(self.run.path),
            "checkpoint": str(self.checkpoint),
            "checkpoint_step": self.checkpoint_step,
            "split": self.result.split,
            "samples": self.result.samples,
            "task": self.task,
            "loss": self.result.loss,
            "metrics": self.scores,
        }
        if self.confusion is not None:
            report["confusion_matrix"] = self.confusion.tolist()
        if self.class_names is not None:
            report["class_names"] = list(self.class_names)
        return report


def task_scores(task: str, outputs: np.ndarray, targets: np.ndarray, classes: int | None):
    """The standard scores of a task, whatever the config asked to monitor."""
    if task == "classification":
        scores = {"accuracy": accuracy(outputs, targets)}
        if outputs.shape[-1] > 5:
            scores["top_5_accuracy"] = top_k_accuracy(outputs, targets, 5)
        return scores, confusion_matrix(outputs, targets, classes or outputs.shape[-1])
    return {
        "mse": mse(outputs, targets),
        "mae": mae(outputs, targets),
        "r2": r2(outputs, targets),
    }, None


def score_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    split: str = "test",
    overrides: Sequence[str] = (),
) -> RunScore:
    """Rebuild the run's model from its config, load the checkpoint, score `split`.

    `overrides` may change how the run is scored, never which samples it held out."""
    if split not in SPLITS:
        raise EvalError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    run = RunFolder.open(run_dir)
    config = run.read_config(overrides)
    if overrides:
        refuse_split_changes(run.read_config(), config)
    restored = restore_run(run, config, checkpoint)
    check_checkpoint_splits(run, restored.checkpoint.path)
    components = restored.components
    check_splits(run, components.data)
    if getattr(components.data, split) is None:
        hint = {"val": "data.val_split", "test": "data.test_split"}.get(split, "")
        raise EvalError(f"run {run.path} has no {split} split (it was trained with {hint} = 0)")
    step = components.make_step()
    result = evaluate_split(components, step, split, keep_outputs=True)
    data = components.data
    scores, confusion = task_scores(data.task, result.outputs, result.targets, data.num_classes)
    scores.update(result.metrics)
    score = RunScore(run, restored.checkpoint.path, restored.checkpoint_step, data.task, result,
                     scores, confusion, run.path / f"eval-{split}.json",
                     data.class_names)  # fmt: skip
    atomic_write_json(score.report_path, score.as_dict())
    return score
