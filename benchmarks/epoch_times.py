"""How long an epoch of each example config on a downloaded set takes, in graph and eager mode.

Trains each config on stand-in files of the real size in the real formats (written by
`stand_in_data.py`, e.g. 60,000 + 10,000 MNIST images), either for one whole epoch (its
`duration_s`: steps, data loading waits, graph compile, the validation pass at its end) or,
with `--steps N` for a config, for N steps, extrapolating one epoch as steps per epoch x the
median step time (no compile, no validation pass). The README's epoch rows come from here.

    python benchmarks/stand_in_data.py /tmp/full --train 60000 --test 10000
    python benchmarks/epoch_times.py /tmp/full --steps cifar10_cnn=50
    python benchmarks/epoch_times.py /tmp/full --only cifar10_cnn --steps cifar10_cnn=30 --threads 1

(stand_in_data.py writes CIFAR-10 with as many training images as MNIST, 60,000 for 50,000:
only the steps timed, not the epoch's length, depend on the file.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from trainctl.config import load_config
from trainctl.data.splits import carve_count

CONFIGS = {
    "mnist_mlp": "mnist",
    "mnist_keras_mlp": "mnist",
    "fashion_mnist_cnn": "fashion_mnist",
    "cifar10_cnn": "cifar10",
}
TRAIN_SAMPLES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
ROOT = Path(__file__).resolve().parents[1]


def time_config(
    name: str, data_root: Path, mode: str, steps: int | None, threads: str | None = None
) -> dict:
    """One training of config `name` in `mode` (on `threads`, else the config's): the epoch
    time and how it was found."""
    with tempfile.TemporaryDirectory() as runs:
        length = f"train.max_steps={steps}" if steps else "train.epochs=1"
        command = [
            sys.executable, "-m", "trainctl", "train", str(ROOT / "configs" / f"{name}.yaml"),
            "--runs-root", runs, "-q", "--set", f"mode={mode}", "--set", "data.download=false",
            "--set", f"data.path={data_root / CONFIGS[name]}", "--set", length,
        ]  # fmt: skip
        if threads is not None:
            command += ["--set", f"threads={threads}"]
        subprocess.run(command, check=True, capture_output=True, text=True)
        (run,) = Path(runs).iterdir()
        summary = json.loads((run / "summary.json").read_text())
    median_ms = summary["step_time_ms"]["median"]
    per_epoch = steps_per_epoch(name) if steps else summary["steps"]
    epoch_s = per_epoch * median_ms / 1000 if steps else summary["duration_s"]
    return {"config": name, "mode": mode, "threads": summary["threads"]["used"],
            "steps_per_epoch": per_epoch,
            "median_step_ms": median_ms, "epoch_s": round(epoch_s, 1),
            "how": f"{steps} steps, extrapolated" if steps else "one epoch"}  # fmt: skip


def steps_per_epoch(name: str) -> int:
    """Batches in one epoch of the real set: its training samples less the carved val split."""
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    total = TRAIN_SAMPLES[CONFIGS[name]]
    train = total - carve_count(total, config.data.val_split)
    batches = train / config.data.batch_size
    return math.floor(batches) if config.train.drop_last else math.ceil(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path, help="the folder stand_in_data.py wrote")
    parser.add_argument("--steps", nargs="*", default=[], help="CONFIG=N: time N steps")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), help="configs to time")
    parser.add_argument("--threads", help="the runs' threads setting (default: each config's)")
    args = parser.parse_args()
    steps = {key: int(value) for key, value in (item.split("=") for item in args.steps)}
    for name in args.only:
        for mode in ("graph", "eager"):
            found = time_config(name, args.data_root, mode, steps.get(name), args.threads)
            print(json.dumps({**found, "load_average": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
