"""What the per-kernel benchmarks share: threads pinned for every engine, the run's preamble
(versions, threads, load average), and each timing's ratio to the faster PyTorch layout."""

from __future__ import annotations

import argparse
import os
import platform
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits


def start_run(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, Any, Any]:
    """Parse `parser` with the timing options added, pin the threads, print the preamble;
    returns (arguments, the thread limiter to hold for the run, torch or None)."""
    parser.add_argument("--steps", type=int, default=200, help="timed calls per engine")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="of BLAS and PyTorch")
    args = parser.parse_args()
    limiter, torch = pin_threads(args.threads)
    print_preamble(torch, args.threads, args.steps, args.warmup, args.rounds)
    return args, limiter, torch


def pin_threads(threads: int) -> tuple[Any, Any]:
    """BLAS and OpenMP pools (kept while the returned limiter lives) and PyTorch on `threads`;
    returns (limiter, torch or None when it is not installed)."""
    limiter = threadpool_limits(limits=threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    return limiter, torch


def print_preamble(torch: Any, threads: int, steps: int, warmup: int, rounds: int) -> None:
    peer = f"PyTorch {torch.__version__}" if torch else "PyTorch not installed"
    print(f"NumPy {np.__version__}, {peer}, {platform.processor() or platform.machine()}")
    print(f"every engine on {threads} thread(s); load average {os.getloadavg()}")
    print(f"{steps} timed calls per engine after {warmup} warm-up, {rounds} rounds")


def print_timings(prefix: str, timings: dict, engine_width: int = 22) -> None:
    """One row per engine after `prefix`: median, p90, and the median over the faster PyTorch
    layout's (left blank without PyTorch)."""
    best = min((t.median for e, t in timings.items() if e.startswith("pytorch")), default=None)
    for engine, timing in timings.items():
        ratio = f"{timing.median / best:>7.2f}x" if best else ""
        print(
            f"{prefix} {engine:<{engine_width}} {timing.median:>9.3f} {timing.p90:>8.3f} {ratio:>8}"
        )
