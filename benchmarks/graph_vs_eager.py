"""Graph mode against eager mode, hand-written NumPy and PyTorch CPU eager, in one run.

One training step (forward, loss, backward, SGD with momentum) of the models of
`benchmarks/eager_step.py`: the MLP 784-128-64-10 and the small CNN; and the `cifar` case, the
model, loss (label smoothing), optimizer (SGD, Nesterov, weight decay), schedule and gradient
clipping of `configs/cifar10_cnn.yaml` on random 32x32x3 images, against its PyTorch twin
(`trainctl_peers`, the peer of `compare --with torch`: the same initial weights). Rounds
alternate between the engines so that drift on a shared machine hits all of them alike;
compare the ratios. Targets (issue 4): graph >= 3x faster than eager on the MLP at batch 64,
at most 1.25x the hand-written NumPy step (`benchmarks/numpy_mlp.py`), and faster than PyTorch
CPU eager; (issue 13) the cifar step at most 1.25x PyTorch's.

    python benchmarks/graph_vs_eager.py                       # mlp 64, mlp 512, cnn 64
    python benchmarks/graph_vs_eager.py --cases mlp:64 --steps 1000
    python benchmarks/graph_vs_eager.py --cases cifar:128 --steps 30 --warmup 3 --threads 1
    python benchmarks/graph_vs_eager.py --cases mlp:64 --disable jit   # without Numba loops
    python benchmarks/graph_vs_eager.py --cases cifar:128 --glibc-defaults  # freed memory not kept
    python benchmarks/graph_vs_eager.py --configs configs/*.yaml --steps 60   # each config

With --configs, every config's model, loss, optimizer and batch size are timed in both modes
(data sets that need downloading are replaced by random data of their shape).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
CONFIG_CASES = {"cifar": ROOT / "configs" / "cifar10_cnn.yaml"}  # case name -> its config

from eager_step import batch, build_model, interleaved, torch_step  # noqa: E402
from numpy_mlp import numpy_mlp_step  # noqa: E402

from trainctl import nn, optim  # noqa: E402
from trainctl.backend import CPU, manual_seed  # noqa: E402
from trainctl.host_memory import keep_freed_memory  # noqa: E402
from trainctl.train.step import make_step  # noqa: E402
from trainctl.train.threads import usable_cpus  # noqa: E402


def trainctl_step(
    name: str, batch_size: int, mode: str, disabled: tuple[str, ...] = ()
) -> tuple[Callable[[], float], dict]:
    """The step of `mode` through `make_step`, compiled (graph) before timing starts."""
    manual_seed(0)
    model = build_model(name)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    options = {"disabled_passes": disabled} if mode == "graph" else {}
    step = make_step(
        mode, model, nn.cross_entropy, optimizer, device=CPU, dtype=np.float32, **options
    )
    images, labels = batch(batch_size)
    start = time.perf_counter()
    step.train(images, labels)
    first = time.perf_counter() - start
    return (lambda: step.train(images, labels)), {"first_step_s": first, **step.stats()}


def stand_in_components(path: str | Path, overrides: tuple[str, ...] = ()):
    """The components of the config at `path`; data sets that need downloading are replaced
    by random data of their shape (the same on every call: the same seed, the same weights)."""
    from trainctl.config import load_config
    from trainctl.data.dataset import ArrayDataset, DataSplits
    from trainctl.train.components import build_components

    stand_ins = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
    config = load_config(path, overrides)
    data = None
    if config.data.dataset in stand_ins:
        rng = np.random.default_rng(0)
        size = 4 * config.data.batch_size
        images = rng.random((size, *stand_ins[config.data.dataset]), dtype=np.float32)
        train = ArrayDataset(images, rng.integers(0, 10, size), "classification", 10)
        data = DataSplits(train, None, None, config.data.dataset, "random stand-in")
    return build_components(config, with_data=data)


def config_steps(
    path: str | Path, overrides: tuple[str, ...] = (), torch=None
) -> tuple[str, dict[str, Callable[[], float]], dict]:
    """Eager and graph steps (and PyTorch's, given `torch`) of the config at `path`, each on
    its own copy of the model from the same seed, on one batch of its data; graph's stats."""
    steps, stats = {}, {}
    for mode in ("eager", "graph", "torch"):
        if mode == "torch" and torch is None:
            continue
        components = stand_in_components(path, overrides)
        inputs, targets = next(iter(components.loader("train", training=True).epoch(0)))
        targets = components.prepare_targets(targets)
        if mode == "torch":
            from trainctl.bench.peers import load_torch_peer

            step = load_torch_peer().from_components(components)
        else:
            step = components.make_step(mode)
        start = time.perf_counter()
        step.train(inputs, targets)
        if mode == "graph":
            stats = {"first_step_s": time.perf_counter() - start, **step.stats()}

        def run(step=step, inputs=inputs, targets=targets) -> float:
            return step.train(inputs, targets)

        steps["pytorch eager" if mode == "torch" else f"trainctl {mode}"] = run
    return components.config.name, steps, stats


def time_configs(paths: list[str], args: argparse.Namespace) -> None:
    print(f"{'config':<20} {'batch':>5} {'eager ms':>9} {'graph ms':>9} {'eager/graph':>12}")
    for path in paths:
        name, steps, _ = config_steps(path)
        timings = interleaved(steps, args.steps, args.warmup, args.rounds)
        eager, graph = timings["trainctl eager"], timings["trainctl graph"]
        from trainctl.config import load_config

        batch_size = load_config(path).data.batch_size
        print(
            f"{name:<20} {batch_size:>5} {eager.median:>9.3f} {graph.median:>9.3f} "
            f"{eager.median / graph.median:>11.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mlp:64,mlp:512,cnn:64", help="model:batch,...")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--configs", nargs="+", help="time these configs instead of --cases")
    parser.add_argument(
        "--disable", default="", help="graph passes to switch off, e.g. jit (comma-separated)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=usable_cpus(),
        help="CPU threads of every engine: BLAS and OpenMP pools, PyTorch (default: usable CPUs)",
    )
    parser.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (the trainctl command keeps freed memory for reuse,"
        " trainctl/host_memory.py; this shows what that buys each engine)",
    )
    args = parser.parse_args()
    pinned = threadpool_limits(limits=args.threads)  # noqa: F841 (held for the whole run)
    print(f"every engine on {args.threads} CPU thread(s)")
    # As the trainctl command does for every engine in its process (trainctl/host_memory.py).
    kept = not args.glibc_defaults and keep_freed_memory()
    print(f"freed host memory kept for reuse: {'yes' if kept else 'no'}")
    print(load_line("at start"))
    if args.configs:
        time_configs(args.configs, args)
        print(load_line("at end"))
        return

    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    peer = f", PyTorch {torch.__version__}" if torch else ", PyTorch not installed"
    print(f"NumPy {np.__version__}{peer}, {platform.processor() or platform.machine()}")
    print(f"{args.steps} timed steps per engine after {args.warmup} warm-up, {args.rounds} rounds")
    print(f"{'model':<6} {'batch':>5} {'engine':<16} {'median ms':>10} {'p90 ms':>8}")
    for case in args.cases.split(","):
        name, size = case.split(":")
        batch_size = int(size)
        if name in CONFIG_CASES:
            overrides = (f"data.batch_size={batch_size}",)
            _, steps, stats = config_steps(CONFIG_CASES[name], overrides, torch)
        else:
            eager, _ = trainctl_step(name, batch_size, "eager")
            disabled = tuple(p for p in args.disable.split(",") if p)
            graph, stats = trainctl_step(name, batch_size, "graph", disabled)
            steps = {"trainctl eager": eager, "trainctl graph": graph}
            if name == "mlp":
                steps["numpy by hand"] = numpy_mlp_step(batch_size)
            if torch is not None:
                steps["pytorch eager"] = torch_step(name, batch_size, torch)
        timings = interleaved(steps, args.steps, args.warmup, args.rounds)
        for label, timing in timings.items():
            print(
                f"{name:<6} {batch_size:>5} {label:<16} {timing.median:>10.3f} {timing.p90:>8.3f}"
            )
        median = {label: timing.median for label, timing in timings.items()}
        signature = stats["signatures"][0]
        print(
            f"{name:<6} {batch_size:>5} graph: trace {stats['trace_seconds'] * 1e3:.0f} ms, "
            f"compile {stats['compile_seconds'] * 1e3:.0f} ms, nodes {signature['nodes_traced']}"
            f" -> {signature['nodes_optimized']}, buffers {signature['buffers']} "
            f"({signature['buffer_bytes'] / 2**20:.1f} MiB)"
        )
        ratios = [f"eager/graph {median['trainctl eager'] / median['trainctl graph']:.2f}x"]
        if "numpy by hand" in median:
            ratios.append(f"graph/numpy {median['trainctl graph'] / median['numpy by hand']:.2f}x")
        if "pytorch eager" in median:
            ratios.append(
                f"pytorch/graph {median['pytorch eager'] / median['trainctl graph']:.2f}x"
            )
        print(f"{name:<6} {batch_size:>5} ratios: {', '.join(ratios)}")
    print(load_line("at end"))


def load_line(when: str) -> str:
    """The machine's load average: figures from a shared machine mean little without it."""
    one, five, fifteen = os.getloadavg()
    return f"load average {when}: {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


if __name__ == "__main__":
    main()
