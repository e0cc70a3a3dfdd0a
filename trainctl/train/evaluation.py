"""Scoring a model on one split: loss and every configured metric over the whole split."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from trainctl.autograd import Tensor, no_grad
from trainctl.distributed.parallel import DataParallel, shard_bounds
from trainctl.metrics import compute_metric, metric_label
from trainctl.train.components import Components
from trainctl.train.step import Step


@dataclass
class EvalResult:
    split: str
    samples: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: np.ndarray | None = None
    targets: np.ndarray | None = None

    def scalars(self) -> dict[str, float]:
        return {"loss": self.loss, **self.metrics}


def collect_outputs(
    components: Components, step: Step, split: str, parallel: DataParallel | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's outputs (eval mode) and the raw targets for every sample of `split`.
    With `parallel` each rank runs its contiguous part of the split and every rank gets all
    of them, in the split's order."""
    outputs, targets = [], []
    rows = None
    if parallel is not None:
        rows = shard_bounds(len(getattr(components.data, split)), *parallel.place)
    if rows is None or rows[1] > rows[0]:
        loader = components.loader(split, rows=rows)
        with contextlib.closing(loader.epoch(0)) as batches:
            for inputs, batch_targets in batches:
                outputs.append(step.evaluate(inputs))
                targets.append(batch_targets)
    if parallel is not None:
        outputs, targets = parallel.gather(outputs), parallel.gather(targets)
    return np.concatenate(outputs), np.concatenate(targets)


def split_loss(components: Components, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The config's loss over the whole split, computed eagerly on the host outputs."""
    prepared = components.prepare_targets(targets)
    with no_grad():
        loss = components.loss_fn(Tensor(outputs), Tensor(prepared))
    return float(loss.item())


def evaluate_split(
    components: Components,
    step: Step,
    split: str,
    keep_outputs: bool = False,
    parallel: DataParallel | None = None,
) -> EvalResult:
    outputs, targets = collect_outputs(components, step, split, parallel)
    metrics = {
        metric_label(m.name, m.args): compute_metric(m.name, m.args, outputs, targets)
        for m in components.config.metrics
    }
    return EvalResult(
        split,
        len(outputs),
        split_loss(components, outputs, targets),
        metrics,
        outputs if keep_outputs else None,
        targets if keep_outputs else None,
    )
