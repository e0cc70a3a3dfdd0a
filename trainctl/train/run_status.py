"""What a run is doing now, for `trainctl runs` and `runs show`.

summary.json says `running` from the start of a run until it ends; a run killed with SIGKILL
(or by a power cut) never gets to say otherwise. Whether it is still running is the question
the run folder's lock answers: held means a live process trains it, free means the run has
stopped. Either way its progress is read from the files it wrote as it went.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from trainctl.config import load_config
from trainctl.metrics import higher_is_better
from trainctl.train.metrics_log import read_metrics
from trainctl.train.rundir import RunFolder
from trainctl.train.runlock import is_locked

STOPPED = "stopped"


def resume_command(run: RunFolder) -> str:
    return f"trainctl train --resume {shlex.quote(str(run.path))}"


def current_summary(run: RunFolder) -> dict[str, Any]:
    """The run's summary.json, and for a run that never finished writing it: `stopped` when
    no process holds its lock (with the command that resumes it), and its steps, best and
    latest scores as its metrics.jsonl has them."""
    summary = run.read_summary()
    if summary.get("status") != "running":
        return summary
    records = read_metrics(run.metrics_path) if run.metrics_path.exists() else []
    steps = [r["step"] for r in records if type(r.get("step")) is int]
    summary["steps"] = max(steps, default=0)
    best = _best_evaluation(run, records)
    if best is not None:
        summary["best"] = best
    summary["final"] = final_scores(records)
    if not is_locked(run.path):
        summary["status"] = STOPPED
        summary["resume_command"] = resume_command(run)
    return summary


def _best_evaluation(run: RunFolder, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best validation score logged, as the trainer picks it: the config's
    train.best_metric, the earliest of equal values."""
    label = load_config(run.config_path).train.best_metric
    scored = [
        (record[label], record["step"])
        for record in records
        if record.get("kind") == "eval"
        and record.get("split") == "val"
        and type(record.get(label)) in (int, float)
        and math.isfinite(record[label])
        and type(record.get("step")) is int
    ]
    if not scored:
        return None
    sign = -1 if higher_is_better(label) else 1
    value, step = min(scored, key=lambda pair: (sign * pair[0], pair[1]))
    return {"metric": f"val/{label}", "value": float(value), "step": step}


def final_scores(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's "final" scores as the records leave them: the last train loss, the
    last validation scores."""
    final: dict[str, Any] = {}
    for record in records:
        if record.get("kind") == "train":
            final["train_loss"] = record.get("loss")
        elif record.get("kind") == "eval" and record.get("split") == "val":
            skip = ("kind", "split", "step", "epoch")
            final["val"] = {key: value for key, value in record.items() if key not in skip}
    return final
