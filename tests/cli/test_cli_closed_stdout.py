"""A reader of stdout that goes away (`trainctl train c.yaml | head -3`) ends trainctl quietly
with exit status 141; a training run stops as on SIGTERM: interrupted, with a checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no SIGPIPE")

CONFIG = str(Path(__file__).parents[2] / "configs" / "digits_mlp.yaml")
TRAINCTL = [sys.executable, "-m", "trainctl"]


def _closed_pipe_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run trainctl with a stdout whose reader is gone before it writes anything."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*TRAINCTL, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
            cwd=cwd, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def head_three(tmp_path_factory) -> tuple[Path, subprocess.Popen, list[str]]:
    """`trainctl train digits_mlp.yaml | head -3` (a run of 100 epochs: it cannot end first)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["train", CONFIG, "--runs-root", str(root), "--set", "train.epochs=100"]
    process = subprocess.Popen(
        [*TRAINCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    process.wait(timeout=120)
    return root, process, lines


def test_train_into_a_closed_pipe_stops_interrupted_with_a_checkpoint(head_three):
    root, process, lines = head_three
    assert lines[0].startswith("training digits-mlp in ")
    assert process.returncode == 141
    assert process.stderr.read() == ""
    (run,) = root.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGPIPE"
    assert 0 < summary["steps"] < 4500
    assert (run / "checkpoints" / "last.safetensors").exists()
    assert "interrupted by SIGPIPE" in (run / "train.log").read_text()


def test_train_into_a_pipe_closed_from_the_start_is_interrupted_too(tmp_path):
    result = _closed_pipe_run(["train", CONFIG, "--runs-root", str(tmp_path)], tmp_path)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGPIPE"


@pytest.mark.parametrize("command", ["runs", "runs show", "predict", "config"])
def test_other_commands_into_a_closed_pipe_exit_141_quietly(head_three, tmp_path, command):
    root, _, _ = head_three
    (run,) = root.iterdir()
    inputs = tmp_path / "new.npz"
    np.savez(inputs, x=np.zeros((300, 8, 8, 1), np.float32))
    args = {
        "runs": ["runs", "--runs-root", str(root)],
        "runs show": ["runs", "show", str(run)],
        "predict": ["predict", str(run), str(inputs)],
        "config": ["config", CONFIG],
    }[command]
    result = _closed_pipe_run(args, tmp_path)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    "args", [["--help"], ["train", "--help"], []], ids=["top", "train", "bare"]
)
def test_help_into_a_closed_pipe_exits_141_quietly(tmp_path, args):
    """Rich would end it with status 1, that of a failed run (`trainctl --help | true`)."""
    result = _closed_pipe_run(args, tmp_path)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
