"""Shared by the fault tests: a small run that has every kind of state, and how to read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainctl.config import Config, parse_config
from trainctl.train.metrics_log import read_metrics
from trainctl.train.progress import QuietReporter, Reporter
from trainctl.train.trainer import TrainOptions, TrainResult, train

ROOT = Path(__file__).parents[2]

# Dropout, BatchNorm, augmentation, Adam and a schedule: every kind of state a resume restores.
# A large validation split makes evaluations long enough to be interrupted in the middle.
CONFIG = """
name: faults
seed: 5
data:
  dataset: digits
  batch_size: 32
  val_split: 0.3
  test_split: 0.05
  transforms: [random_flip]
model:
  layers:
    - flatten
    - linear: {out: 32}
    - batch_norm
    - relu
    - dropout: {p: 0.2}
    - linear: {out: 10}
optimizer: {name: adam, lr: 0.01}
schedule: {name: cosine, warmup_steps: 5}
train: {max_steps: 40, log_every: 1, eval_every: 10, checkpoint_every: 4}
"""

# Lines the fault tests want in the session's closing summary (see conftest.py).
REPORT: list[str] = []


def config(*overrides: str, text: str = CONFIG) -> Config:
    return parse_config(text, "faults.yaml", list(overrides))


def run_train(cfg: Config, runs_root: Path, reporter: Reporter | None = None) -> TrainResult:
    return train(cfg, TrainOptions(runs_root=runs_root), reporter or QuietReporter())


def resume(run: Path, reporter: Reporter | None = None) -> TrainResult:
    return train(None, TrainOptions(resume=run), reporter or QuietReporter())


def only_run(runs_root: Path) -> Path:
    (run,) = list(runs_root.iterdir())
    return run


def records(run: Path, kind: str) -> list[dict[str, Any]]:
    """The metrics records of `kind`, without what differs between two runs (the clock)."""
    path = run / "metrics.jsonl"
    found = read_metrics(path) if path.exists() else []
    skip = ("wall_time", "samples_per_s")
    return [{k: v for k, v in r.items() if k not in skip} for r in found if r["kind"] == kind]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run, "train")]
