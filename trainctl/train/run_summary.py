"""summary.json of a run: what it is at the start, its timings and outcome at the end."""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np

from trainctl.config import Config
from trainctl.train.components import Components
from trainctl.train.environment import environment_info
from trainctl.train.loop import Trainer, TrainOptions
from trainctl.train.rundir import RunFolder


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def initial_summary(
    run: RunFolder, config: Config, options: TrainOptions, components: Components, started: float
) -> dict[str, Any]:
    data = components.data
    summary = {
        "status": "running",
        "name": config.name,
        "run_dir": str(run.path),
        "mode": config.mode,
        "device": str(components.device),
        "dtype": config.dtype,
        "seed": config.seed,
        "dataset": data.name,
        "data_source": data.source,
        "parameters": sum(p.size for p in components.model.parameters()),
        "command": shlex.join(options.command) if options.command else None,
        "started_at": now(),
        "versions": environment_info(),
    }
    if data.class_names is not None:
        summary["class_names"] = list(data.class_names)
    if data.skipped_files is not None:
        summary["skipped_bad_files"] = len(data.skipped_files)
    if data.notes:  # what encoding a table did: rows dropped, values unseen in training
        summary["data_notes"] = list(data.notes)
    return summary


def finish_summary(trainer: Trainer, summary: dict[str, Any], started: float) -> None:
    state = trainer.state
    times = np.array(trainer.step_times) * 1e3
    summary.update(
        steps=state.step,
        epochs_completed=state.epoch,
        planned_steps=trainer.total_steps,
        early_stopped=state.early_stopped,
        duration_s=round(time.time() - started, 3),
        train_seconds=round(state.train_seconds, 3),
    )
    if state.best_value is not None:
        summary["best"] = {"metric": f"val/{trainer.best_label}", "value": state.best_value,
                           "step": state.best_step}  # fmt: skip
    if len(times):
        summary["step_time_ms"] = {
            "median": round(float(np.median(times)), 4),
            "p90": round(float(np.percentile(times, 90)), 4),
        }
        waited = trainer.loader.wait_seconds
        summary["data_wait_fraction"] = round(waited / max(waited + times.sum() / 1e3, 1e-9), 4)
    summary["threads"] = trainer.threads.report()
    if trainer.parallel is not None:
        summary["distributed"] = trainer.parallel.report()
    graph = trainer.step_fn.stats()
    if graph:
        summary["graph"] = graph
