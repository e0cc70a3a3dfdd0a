"""Real MPI jobs for the distributed tests: `trainctl train` under `--nproc N` or `mpiexec`.

Skips cleanly without mpi4py or an `mpiexec` (the distributed extra brings both)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainctl.train.checkpoint import load_checkpoint

ROOT = Path(__file__).parents[2]

# A small float64 MLP whose every step is logged: losses compare step by step.
CONFIG = """
name: dp
seed: 3
dtype: float64
data:
  dataset: digits
  batch_size: 32
  val_split: 0.2
  transforms: [{normalize: {mean: 0.3, std: 0.38}}]
model:
  layers: [flatten, {linear: {out: 32}}, {batch_norm: {sync: true}}, relu, {linear: {out: 10}}]
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
train: {max_steps: 12, log_every: 1, eval_every: 6, checkpoint_every: 4}
distributed: {check_every: 1}
"""


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        pytest.skip("needs mpi4py and mpiexec: pip install 'trainctl[distributed]'")
    return found


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "SLURM_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def write_config(folder: Path, text: str = CONFIG) -> Path:
    path = folder / "dp.yaml"
    path.write_text(text)
    return path


def trainctl(
    *arguments: str, cwd: Path, under_mpiexec: int = 0, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`trainctl <arguments>` in `cwd`, started by `mpiexec -n under_mpiexec` when given;
    `env` adds to the environment."""
    command = [sys.executable, "-m", "trainctl", *arguments]
    if under_mpiexec:
        command = [mpiexec(), "-n", str(under_mpiexec), *command]
    return subprocess.Popen(
        command, cwd=cwd, env={**environment(), **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def train_job(tmp_path: Path, name: str, *arguments: str, under_mpiexec: int = 0):
    """Train the test config into `tmp_path/name` to its end; the run, stdout and stderr."""
    config = write_config(tmp_path)
    runs = tmp_path / name
    process = trainctl(
        "train", str(config), "--runs-root", str(runs), *arguments,
        cwd=tmp_path, under_mpiexec=under_mpiexec,
    )  # fmt: skip
    code, out, err = finished(process)
    assert code == 0, out + err
    return only_run(runs), out, err


def assert_same_training(one: Path, two: Path, rtol: float = 1e-12) -> None:
    """Two runs logged the same steps with losses, evaluations and final weights equal within
    `rtol` (0: bit for bit); `two` may have been resumed, which evaluates at each end."""
    logged_one, logged_two = np.array(losses(one)), np.array(losses(two))
    np.testing.assert_array_equal(logged_two[:, 0], logged_one[:, 0])  # the steps
    np.testing.assert_allclose(logged_two[:, 1], logged_one[:, 1], rtol=rtol, atol=0)
    for name, array in weights(one).items():
        np.testing.assert_allclose(weights(two)[name], array, rtol=rtol, atol=rtol * 1e-2)
    evaluated = {record["step"]: record for record in evaluations(two)}
    for a in evaluations(one):  # `two` may have more: a resumed run ends each part with one
        b = evaluated[a["step"]]
        assert b["accuracy"] == a["accuracy"]
        assert b["loss"] == pytest.approx(a["loss"], rel=rtol, abs=0)


def only_run(runs_root: Path) -> Path:
    (run,) = list(runs_root.iterdir())
    return run


def losses(run: Path) -> list[tuple[int, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["kind"] == "train"]


def evaluations(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


def weights(run: Path) -> dict[str, np.ndarray]:
    """The model's weights in checkpoints/last."""
    checkpoint = load_checkpoint(run / "checkpoints" / "last.safetensors")
    return checkpoint.model_state


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())
