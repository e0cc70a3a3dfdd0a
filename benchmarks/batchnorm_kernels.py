"""Training BatchNorm alone, forward and backward: trainctl eager and graph against PyTorch.

At the shapes of `configs/cifar10_cnn.yaml` at batch 128 (NHWC 128x32x32x32 and 128x16x16x64).
Each step is BatchNorm2d, the loss sum(y * g) for a fixed random g (so the backward pass gets
a dense gradient), backward, and plain SGD on the scale and shift; the loss costs every engine
the same one product and sum. PyTorch runs on NCHW (as `graph_vs_eager.py`'s peer does) and on
channels-last memory (NHWC, trainctl's layout). Rounds alternate between the engines.

    python benchmarks/batchnorm_kernels.py                 # 1 thread, 200 steps per engine
    python benchmarks/batchnorm_kernels.py --threads 2 --steps 400
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eager_step import interleaved  # noqa: E402
from kernel_timing import print_timings, start_run  # noqa: E402

from trainctl import nn, optim  # noqa: E402
from trainctl.backend import CPU, manual_seed  # noqa: E402
from trainctl.train.step import make_step  # noqa: E402

SHAPES = {"32ch": (128, 32, 32, 32), "64ch": (128, 16, 16, 64)}


def _arrays(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    return x, rng.standard_normal(shape).astype(np.float32)


def trainctl_step(shape: tuple[int, ...], mode: str) -> Callable[[], float]:
    manual_seed(0)
    model = nn.BatchNorm2d(shape[-1])
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    step = make_step(
        mode, model, lambda y, g: (y * g).sum(), optimizer, device=CPU, dtype=np.float32
    )
    x, g = _arrays(shape)
    step.train(x, g)  # graph mode traces and compiles here, before timing
    return lambda: step.train(x, g)


def torch_step(shape: tuple[int, ...], torch, channels_last: bool) -> Callable[[], float]:
    model = torch.nn.BatchNorm2d(shape[-1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, g = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in _arrays(shape))  # NCHW views
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x, g = x.contiguous(memory_format=layout), g.contiguous(memory_format=layout)

    def step() -> float:
        loss = (model(x) * g).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    args, limiter, torch = start_run(parser)  # the limiter holds the thread pools for the run
    print(f"{'shape (NHWC)':<18} {'engine':<22} {'median ms':>9} {'p90 ms':>8} {'/ torch':>8}")
    for name in args.shapes.split(","):
        shape = SHAPES[name]
        steps = {
            "trainctl eager": trainctl_step(shape, "eager"),
            "trainctl graph": trainctl_step(shape, "graph"),
        }
        if torch is not None:
            steps["pytorch NCHW"] = torch_step(shape, torch, channels_last=False)
            steps["pytorch channels_last"] = torch_step(shape, torch, channels_last=True)
        timings = interleaved(steps, args.steps, args.warmup, args.rounds)
        print_timings(f"{'x'.join(map(str, shape)):<18}", timings)
    print(f"load average after: {os.getloadavg()}; '/ torch': against the faster PyTorch layout")


if __name__ == "__main__":
    main()
