"""Data-parallel scaling on this machine: 1 process x T threads against N processes x T/N.

Each row is a real `trainctl train` job (`--nproc N`, mpiexec) with the same global batch, so
the N-process job does the same arithmetic in N shards plus one gradient Allreduce per step.
Reported from rank 0's summary.json: step time median and p90 (the Allreduce included),
samples/s at the median, and the Allreduce's own time per step, measured around the MPI
calls. Jobs alternate between the variants so that drift on a shared machine hits them alike.

`--allreduce` instead times MPI_Allreduce alone (float32 sum, 2 ranks, the time of the slower
rank) on buffers of several sizes: the alpha (latency) and beta (seconds per byte) of the
cost model in docs/distributed.md are fitted to it.

    python benchmarks/mpi_scaling.py                      # MLP and CNN, N = 1, 2
    python benchmarks/mpi_scaling.py --configs cifar10_cnn --repeats 1
    python benchmarks/mpi_scaling.py --configs mlp --nprocs 1 2 --steps 400 --batch 256
    python benchmarks/mpi_scaling.py --allreduce
    python benchmarks/mpi_scaling.py --project mlp:17226:0.16 --alpha-us 30 --gbps 10

cifar10_cnn (configs/cifar10_cnn.yaml, a small ResNet with BatchNorm) trains on
stand-in data of CIFAR-10's shape and format (benchmarks/stand_in_data.py, 2,048 images):
step times do not depend on the pixel values. Its steps take seconds on this machine, so it
runs 10 steps unless --steps says otherwise.

`--project NAME:FLOATS:COMPUTE_MS ...` prints the cost model of docs/distributed.md instead:
the step time at 8, 64 and 512 ranks with a fixed shard per rank (COMPUTE_MS, measured on one
process), MPICH's Allreduce algorithms on a network of latency alpha and bandwidth gbps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from stand_in_data import write_cifar10

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "mlp": ROOT / "configs" / "digits_mlp.yaml",
    "cnn": ROOT / "configs" / "digits_cnn.yaml",
    "cifar10_cnn": ROOT / "configs" / "cifar10_cnn.yaml",
}
DEFAULT_STEPS = {"mlp": 300, "cnn": 300, "cifar10_cnn": 10}


def run_job(
    config: Path, nproc: int, threads: int, steps: int, batch: int, mode: str, *extra: str
) -> dict:
    """rank 0's summary.json of one job; `extra`: more --set overrides."""
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        command = [sys.executable, "-m", "trainctl", "train", str(config), "--quiet"]
        command += ["--run-dir", str(run_dir), "--nproc", str(nproc)]
        for override in (
            f"train.max_steps={steps}", "train.eval_every=100000", "train.log_every=100000",
            "train.checkpoint_every=100000", "data.val_split=0.02", f"data.batch_size={batch}",
            f"threads={threads}", f"mode={mode}", "train.drop_last=true", *extra,
        ):  # fmt: skip
            command += ["--set", override]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        return json.loads((run_dir / "summary.json").read_text())


ALLREDUCE_FLOATS = (1, 1_000, 17_226, 100_000, 1_000_000, 4_000_000)


def time_allreduce(repeats: int) -> None:
    """Run as a rank of `mpiexec -n 2`: print a table row per buffer size (rank 0): the
    blocking MPI_Allreduce, and the one trainctl runs (non-blocking, polled against its
    deadline, with arrival notes; `trainctl.distributed.collectives`)."""
    from mpi4py import MPI

    from trainctl.distributed.collectives import Collectives

    comm = MPI.COMM_WORLD
    watched = Collectives(comm, timeout_s=300.0)

    def blocking(send: np.ndarray, received: np.ndarray) -> None:
        comm.Allreduce(send, received)

    def with_deadline(send: np.ndarray, received: np.ndarray) -> None:
        watched.allreduce_sum(send, received, "the benchmark")

    rows = []
    for floats in ALLREDUCE_FLOATS:
        send, received = np.ones(floats, np.float32), np.empty(floats, np.float32)
        times: dict = {blocking: [], with_deadline: []}
        for _ in range(repeats):
            for reduce, spent in times.items():  # taking turns: drift hits both alike
                comm.Barrier()
                started = MPI.Wtime()
                reduce(send, received)
                spent.append(comm.allreduce(MPI.Wtime() - started, op=MPI.MAX))
        rows.append((floats, *(q(t) * 1e6 for t in times.values() for q in (np.median, p90))))
    if comm.rank == 0:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        print(f"# MPI_Allreduce, {comm.size} ranks, {library}; watched: as trainctl runs it")
        print("| float32s | bytes | median us | p90 us | GB/s (bytes / median) "
              "| watched median us | watched p90 us |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for floats, median, p90_us, watched_median, watched_p90 in rows:
            print(f"| {floats:,} | {4 * floats:,} | {median:.1f} | {p90_us:.1f} | "
                  f"{4 * floats / median / 1e3:.2f} | {watched_median:.1f} | "
                  f"{watched_p90:.1f} |")  # fmt: skip


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def allreduce_model_s(nbytes: float, ranks: int, alpha: float, beta: float) -> float:
    """Seconds of an Allreduce of `nbytes` over `ranks`: the better of recursive doubling
    (log2 N rounds of the whole buffer: small messages) and Rabenseifner's reduce-scatter +
    allgather (2 log2 N latencies, 2 (N-1)/N of the bytes: large ones), as MPICH chooses."""
    rounds = np.log2(ranks)
    doubling = rounds * (alpha + nbytes * beta)
    rabenseifner = 2 * rounds * alpha + 2 * (ranks - 1) / ranks * nbytes * beta
    return min(doubling, rabenseifner)


def project(models: list[str], alpha_us: float, gbps: float) -> None:
    alpha, beta = alpha_us * 1e-6, 8 / (gbps * 1e9)
    print(f"# cost model: alpha {alpha_us:g} us, {gbps:g} Gb/s; compute per rank as measured "
          "on one process, backward = 2/3 of it")  # fmt: skip
    print("| model | gradient bytes | ranks | compute ms | allreduce ms | step ms "
          "| communication share | step ms with overlap |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        name, floats, compute_ms = model.split(":")
        nbytes = 4 * (int(floats) + 3)  # float32 gradients, the loss and two signal slots
        compute = float(compute_ms) / 1e3
        for ranks in (8, 64, 512):
            reduce_s = allreduce_model_s(nbytes, ranks, alpha, beta)
            overlapped = compute / 3 + max(2 * compute / 3, reduce_s)
            print(f"| {name} | {nbytes:,} | {ranks} | {compute * 1e3:.3f} | "
                  f"{reduce_s * 1e3:.3f} | {(compute + reduce_s) * 1e3:.3f} | "
                  f"{reduce_s / (compute + reduce_s):.0%} | {overlapped * 1e3:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=2, help="threads of one process")
    parser.add_argument("--steps", type=int, help="steps per job (default: per config)")
    parser.add_argument("--batch", type=int, default=128, help="the global batch")
    parser.add_argument("--mode", default="graph", choices=("eager", "graph"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--allreduce", action="store_true", help="time MPI_Allreduce alone")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", nargs="+", metavar="NAME:FLOATS:COMPUTE_MS")
    parser.add_argument("--alpha-us", type=float, default=30.0)
    parser.add_argument("--gbps", type=float, default=10.0)
    args = parser.parse_args()
    if args.project:
        project(args.project, args.alpha_us, args.gbps)
        return
    if args.rank:
        time_allreduce(200)
        return
    if args.allreduce:
        from trainctl.distributed.launch import find_mpiexec

        script = [sys.executable, __file__, "--rank"]
        subprocess.run([find_mpiexec(2), "-n", "2", *script], check=True)
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.mode} mode, {args.repeats} jobs each (median of their medians), "
          f"load average {load} at the start")  # fmt: skip
    print("| model | processes x threads | global batch | steps | step median ms | step p90 ms "
          "| samples/s | allreduce ms/step | gradient floats |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as stand_in:
        for name in args.configs:
            extra = []
            if name == "cifar10_cnn":
                write_cifar10(Path(stand_in), 2048, 64, np.random.default_rng(0))
                extra = [f"data.path={stand_in}", "data.download=false"]
            scale(name, args, extra)


def scale(name: str, args: argparse.Namespace, extra: list[str]) -> None:
    """The table rows of one config: each number of processes, `args.repeats` jobs each."""
    steps, batch = args.steps or DEFAULT_STEPS[name], args.batch
    results: dict[int, list[dict]] = {n: [] for n in args.nprocs}
    for _ in range(args.repeats):
        for nproc in args.nprocs:
            threads = max(1, args.threads // nproc)
            results[nproc].append(
                run_job(CONFIGS[name], nproc, threads, steps, batch, args.mode, *extra)
            )
    for nproc, summaries in results.items():
        median = float(np.median([s["step_time_ms"]["median"] for s in summaries]))
        p90 = float(np.median([s["step_time_ms"]["p90"] for s in summaries]))
        reduce_ms = [
            s["distributed"]["allreduce_ms"]["median"] if "distributed" in s else None
            for s in summaries
        ]
        reduce_text = "-" if None in reduce_ms else f"{np.median(reduce_ms):.3f}"
        threads = max(1, args.threads // nproc)
        print(f"| {name} | {nproc} x {threads} | {batch} | {steps} | {median:.3f} | {p90:.3f} | "
              f"{batch / median * 1e3:,.0f} | {reduce_text} | "
              f"{summaries[0]['parameters']:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
