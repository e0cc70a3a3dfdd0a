"""Whole-process figures: start-up, peak memory and two trainings sharing the CPU.

Each figure is a real `trainctl train` process started from scratch, so it includes the
interpreter, imports, data loading, tracing and compiling: what a user waits for. Runs
alternate between the variants so that drift on a shared machine hits them alike.

Rows (issue 13):
- quickstart: `trainctl train configs/digits_mlp.yaml` in eager and in graph mode, wall
  time and peak resident memory of the process;
- trace + compile: the seconds graph mode spent tracing and compiling the MLP and the CNN
  step in a fresh process, as the run's summary.json reports them;
- concurrent: the median step time of one MNIST MLP run (784-128-64-10, batch 64, on
  stand-in data of MNIST's format, `stand_in_data.py`) alone and of each of two identical
  runs started at once, for each `threads` setting asked for (`--threads`: by default
  `auto`, the default of the config key, 1, and one thread per usable CPU, which is what
  OpenBLAS takes when nobody limits it), so the default is chosen on figures.

The load average is printed before and after every row: figures from a shared machine mean
little without it.

    python benchmarks/process_bench.py                 # every row, 5 runs each
    python benchmarks/process_bench.py --rows quickstart --runs 9
    python benchmarks/process_bench.py --rows concurrent --threads auto,1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainctl.train.threads import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
MLP = ROOT / "configs" / "digits_mlp.yaml"
MNIST_MLP = ROOT / "configs" / "mnist_mlp.yaml"
CNN = ROOT / "configs" / "digits_cnn.yaml"
ROWS = ("quickstart", "compile", "concurrent")


@dataclass
class Finished:
    """One finished `trainctl train` process."""

    wall_s: float
    peak_mib: float
    summary: dict


def start(config: Path, run_dir: Path, *overrides: str) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "trainctl", "train", str(config), "--quiet"]
    command += ["--run-dir", str(run_dir)]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, started


def finish(process: subprocess.Popen, started: float, run_dir: Path) -> Finished:
    """Wait for the process; `wait4` gives this child's own peak RSS (KiB on Linux)."""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"trainctl train failed: {process.stderr.read().decode()}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return Finished(wall, usage.ru_maxrss / 1024, summary)


def train(config: Path, scratch: Path, *overrides: str) -> Finished:
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    process, started = start(config, run_dir, *overrides)
    return finish(process, started, run_dir)


def train_two_at_once(config: Path, scratch: Path, *overrides: str) -> list[Finished]:
    run_dirs = [Path(tempfile.mkdtemp(dir=scratch)) for _ in range(2)]
    running = [start(config, run_dir, *overrides) for run_dir in run_dirs]
    return [finish(p, t, d) for (p, t), d in zip(running, run_dirs, strict=True)]


def figures(values: list[float]) -> str:
    return f"median {np.median(values):8.3f}  p90 {np.percentile(values, 90):8.3f}"


def quickstart(runs: int, scratch: Path) -> None:
    results: dict[str, list[Finished]] = {"eager": [], "graph": []}
    for _ in range(runs):
        for mode, found in results.items():
            found.append(train(MLP, scratch, f"mode={mode}"))
    print(f"quickstart ({MLP.name}, {runs} runs per mode, whole process)")
    for mode, found in results.items():
        print(f"  {mode:6} wall s    {figures([f.wall_s for f in found])}")
        print(f"  {mode:6} peak MiB  {figures([f.peak_mib for f in found])}")
    wall = {m: np.median([f.wall_s for f in found]) for m, found in results.items()}
    peak = {m: np.median([f.peak_mib for f in found]) for m, found in results.items()}
    print(
        f"  graph / eager: wall {wall['graph'] / wall['eager']:.2f}x, "
        f"peak memory {peak['graph'] / peak['eager']:.2f}x"
    )


def compile_times(runs: int, scratch: Path) -> None:
    print(f"trace + compile in a fresh process ({runs} runs each, seconds)")
    for config in (MLP, CNN):
        found = [train(config, scratch, "mode=graph", "train.max_steps=2") for _ in range(runs)]
        graph = [f.summary["graph"] for f in found]
        total = [g["trace_seconds"] + g["compile_seconds"] for g in graph]
        print(f"  {config.name:16} {figures(total)}  ({graph[0]['traces']} traces per run)")


def concurrent(runs: int, scratch: Path, settings: list[str]) -> None:
    data = scratch / "stand-in"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stand_in_data.py"), str(data)]
        + ["--train", "7000", "--test", "100"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    variables = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    print(
        f"two trainings at once ({MNIST_MLP.name}, 103 steps, {runs} runs; "
        f"{variables or 'no thread variables set'}), median step ms"
    )
    for threads in settings:
        for mode in ("eager", "graph"):
            overrides = (f"mode={mode}", f"data.path={data / 'mnist'}", "data.download=false")
            overrides += ("train.max_steps=103", "train.epochs=null", f"threads={threads}")
            alone, shared = [], []
            for _ in range(runs):
                found = train(MNIST_MLP, scratch, *overrides)
                alone.append(found.summary["step_time_ms"]["median"])
                pair = train_two_at_once(MNIST_MLP, scratch, *overrides)
                shared += [f.summary["step_time_ms"]["median"] for f in pair]
            label = f"threads={threads} {mode}"
            print(f"  {label:20} alone        {figures(alone)}")
            print(f"  {label:20} two at once  {figures(shared)}")
            slowdown = np.median(shared) / np.median(alone)
            print(f"  {label:20} slowdown {slowdown:.1f}x (target at most 2x)")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"some of {', '.join(ROWS)}")
    parser.add_argument(
        "--threads",
        default=f"auto,1,{usable_cpus()}",
        help="`threads` settings of the concurrent row (default: auto, 1, the usable CPUs)",
    )
    args = parser.parse_args()
    rows = args.rows.split(",")
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        for row, run in (
            ("quickstart", quickstart),
            ("compile", compile_times),
            ("concurrent", lambda runs, at: concurrent(runs, at, args.threads.split(","))),
        ):
            if row in rows:
                print(load_line())
                run(args.runs, scratch)
        print(load_line())


if __name__ == "__main__":
    main()
