"""Kill at any moment: SIGKILL a real `python -m trainctl train` at seeded random points.

Each mode gets one run that is killed again and again: at random times during start-up and
training, and at exact points held by killpoint_site/sitecustomize.py (in the middle of a
checkpoint's bytes, before and after its rename, in a half-written metrics line, in the
middle of an evaluation). After every kill the last checkpoint must load, metrics.jsonl must
parse and hold only what the uninterrupted run logged, and `--resume` must go on; the run that
finally completes must have logged exactly the reference run's losses and evaluations, and
end with its weights bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from faults_helpers import CONFIG, REPORT, records, run_train

from trainctl.config import load_config
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.events import read_scalars
from trainctl.train.rundir import RunFolder

SITE = Path(__file__).parent / "killpoint_site"
SEED = 20261123
KILLS_PER_MODE = 12
MAX_STEPS = 400
EXACT = ("eval-batch", "checkpoint-data", "checkpoint-rename", "checkpoint-renamed", "metrics-line")
KINDS = ("startup", "training", *EXACT)
TIMEOUT = 60.0


@dataclass
class KillPoint:
    kind: str
    value: float  # seconds to wait (startup, training) or which occurrence to stop at

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


def plan(rng: random.Random, count: int) -> list[KillPoint]:
    """`count` kill points, every kind at least once, in a seeded random order."""
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    rng.shuffle(kinds)
    values = {
        "startup": lambda: rng.uniform(0.0, 0.6),
        "training": lambda: rng.uniform(0.0, 0.05),
        "eval-batch": lambda: rng.randint(1, 30),  # an evaluation has 17 batches
        "metrics-line": lambda: rng.randint(1, 25),
    }
    return [KillPoint(kind, values.get(kind, lambda: rng.randint(1, 3))()) for kind in kinds]


class Harness:
    def __init__(self, tmp: Path, config_path: Path, mode: str) -> None:
        self.tmp, self.config_path, self.mode = tmp, config_path, mode
        self.runs = tmp / "runs"
        self.marker = tmp / "marker"
        self.landed: Counter = Counter()
        self.log_before = 0  # bytes of train.log written by the processes before this one

    def command(self, run: Path | None) -> list[str]:
        base = [sys.executable, "-m", "trainctl", "train"]
        if run is None:
            return [
                *base,
                str(self.config_path),
                "--set",
                f"mode={self.mode}",
                "--runs-root",
                str(self.runs),
                "-q",
            ]
        return [*base, "--resume", str(run), "-q"]

    def start(self, run: Path | None, point: KillPoint | None) -> subprocess.Popen:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")])),
        }
        env.pop("TRAINCTL_KILLPOINT", None)
        if point is not None and point.kind in EXACT:
            env["TRAINCTL_KILLPOINT"] = f"{point.kind}:{int(point.value)}"
            env["TRAINCTL_KILLPOINT_MARKER"] = str(self.marker)
        self.marker.unlink(missing_ok=True)
        self.log_before = sum(log.stat().st_size for log in self.runs.glob("*/train.log"))
        with open(self.tmp / "stderr.txt", "w") as stderr:  # the child keeps its own copy
            return subprocess.Popen(
                self.command(run), stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=self.tmp
            )

    def training_started(self) -> bool:
        """Whether this process has logged that it starts (or resumes) training."""
        for log in self.runs.glob("*/train.log"):
            text = log.read_bytes()[self.log_before :].decode(errors="replace")
            if " training " in text or " resuming " in text:
                return True
        return False

    def kill(self, process: subprocess.Popen, point: KillPoint) -> bool:
        """SIGKILL `process` at `point`; False when it finished before getting there."""
        deadline = time.monotonic() + TIMEOUT
        if point.kind == "training":
            while not self.training_started() and process.poll() is None:
                assert time.monotonic() < deadline, "training never started"
                time.sleep(0.002)
            time.sleep(point.value)
        elif point.kind == "startup":
            # Up to the drawn delay, but no later than the start of training: start-up kills
            # land in start-up however fast it is (a fast start would otherwise let one run
            # hundreds of steps, leaving the later exact points no steps to land in).
            until = time.monotonic() + point.value
            while time.monotonic() < until and not self.training_started():
                if process.poll() is not None:
                    break
                time.sleep(0.002)
        else:
            while not self.marker.exists() and process.poll() is None:
                assert time.monotonic() < deadline, f"never reached {point}"
                time.sleep(0.002)
        if process.poll() is not None:
            return False
        started = self.training_started()
        had_folder = any(self.runs.glob("*/config.yaml"))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        assert process.returncode == -signal.SIGKILL
        if point.kind in EXACT:
            self.landed[point.kind] += 1
        else:
            phase = "before its run folder" if not had_folder else "during start-up"
            self.landed["during training" if started else phase] += 1
        return True


def check_after_kill(runs: Path, reference: dict) -> tuple[Path | None, int]:
    """Check the state a kill left; the run folder to resume (None when there is none yet)
    and the step its last checkpoint restores (0: none yet, the resume starts over)."""
    folders = list(runs.iterdir()) if runs.exists() else []
    if not folders:
        return None, 0
    (run,) = folders
    if not (run / "config.yaml").exists():
        # Killed between making the folder and writing its config: not a run yet, and
        # --resume says so in one line; the user (and the harness) starts it again.
        resumed = subprocess.run(
            [sys.executable, "-m", "trainctl", "train", "--resume", str(run)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert resumed.returncode == 2 and "config.yaml" in resumed.stderr
        assert "Traceback" not in resumed.stderr
        for path in sorted(run.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        run.rmdir()
        return None, 0
    last = run / "checkpoints" / "last.safetensors"
    step = load_checkpoint(last).trainer_state["trainer"]["step"] if last.exists() else 0
    assert 0 <= step <= MAX_STEPS
    # What was logged before the kill is what the uninterrupted run logged (a torn last
    # line is skipped by the reader and cut off on resume).
    for kind in ("train", "eval"):
        logged = records(run, kind)
        assert logged == reference[kind][: len(logged)], f"{kind} records differ"
    return run, step


def reference_run(tmp: Path, config_path: Path, mode: str) -> dict:
    result = run_train(load_config(config_path, [f"mode={mode}"]), tmp / "reference")
    run = result.run.path
    weights = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
    return {"train": records(run, "train"), "eval": records(run, "eval"), "weights": weights}


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_sigkill_at_random_points_loses_nothing(tmp_path, mode):
    config_path = tmp_path / "faults.yaml"
    config_path.write_text(CONFIG.replace("max_steps: 40", f"max_steps: {MAX_STEPS}, epochs: null"))
    reference = reference_run(tmp_path, config_path, mode)
    assert len(reference["train"]) == MAX_STEPS and reference["eval"]

    rng = random.Random(f"{SEED}-{mode}")
    harness = Harness(tmp_path, config_path, mode)
    run = None
    restored = []
    for point in plan(rng, KILLS_PER_MODE):
        process = harness.start(run, point)
        assert harness.kill(process, point), f"the run finished before {point}"
        run, step = check_after_kill(harness.runs, reference)
        restored.append(step)

    final = harness.start(run, None)
    assert final.wait(timeout=TIMEOUT * 2) == 0, (tmp_path / "stderr.txt").read_text()
    run, step = check_after_kill(harness.runs, reference)
    assert run is not None and step == MAX_STEPS
    assert records(run, "train") == reference["train"]
    assert records(run, "eval") == reference["eval"]
    weights = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
    assert weights.keys() == reference["weights"].keys()
    assert all(np.array_equal(weights[k], reference["weights"][k]) for k in weights)
    assert RunFolder.open(run).read_summary()["status"] == "completed"
    assert not list((run / "checkpoints").glob(".*.tmp"))
    scalars = read_scalars(run / "tensorboard")["train/loss"]
    assert [step for step, _ in scalars] == list(range(1, MAX_STEPS + 1))
    np.testing.assert_array_equal(
        [v for _, v in scalars], np.float32([r["loss"] for r in reference["train"]])
    )

    kills = sum(harness.landed.values())
    assert kills == KILLS_PER_MODE
    assert set(EXACT) <= set(harness.landed)
    where = ", ".join(f"{kind} {n}" for kind, n in sorted(harness.landed.items()))
    line = (
        f"kill harness ({mode}): {kills} SIGKILLs ({where}); resumed from steps "
        f"{restored}; every resume completed with the reference losses, evaluations and "
        "weights"
    )
    print(line)
    REPORT.append(line)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    config_path = tmp_path / "faults.yaml"
    config_path.write_text(CONFIG)
    reference = reference_run(tmp_path, config_path, "eager")
    harness = Harness(tmp_path, config_path, "eager")
    point = KillPoint("checkpoint-data", 1)
    assert harness.kill(harness.start(None, point), point)
    run, step = check_after_kill(harness.runs, reference)
    assert step == 0 and not (run / "checkpoints" / "last.safetensors").exists()
    assert [r["step"] for r in records(run, "train")] == [1, 2, 3, 4]
    resumed = subprocess.run(harness.command(run), capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "has no checkpoint yet (it stopped before its first one): training it again from "
        "step 0" in resumed.stdout
    )
    assert records(run, "train") == reference["train"]
    assert records(run, "eval") == reference["eval"]
    assert RunFolder.open(run).read_summary()["resumed_from_step"] == 0


def test_a_folder_killed_before_its_config_is_no_run_and_says_so(tmp_path):
    folder = tmp_path / "runs" / "faults-20261123-000000"
    (folder / "checkpoints").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "trainctl", "train", "--resume", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"{folder} is not a run folder: it has no config.yaml"
