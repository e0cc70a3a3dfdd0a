"""Time one eager training step (forward, loss, backward, SGD-momentum update).

Models, as in the reference figures of the design notes:
  mlp   784-128-64-10, ReLU, batch 64 (and 512 with --batch 512)
  cnn   conv 1->8 3x3 pad 1, relu, maxpool 2, conv 8->16 3x3 pad 1, relu, maxpool 2,
        linear 784->10 on 28x28x1 images, batch 64

When PyTorch is importable the identical model is timed as a peer in the same run; rounds
alternate between the engines so that machine drift hits both alike.

    python benchmarks/eager_step.py                 # mlp and cnn at batch 64, 300 steps each
    python benchmarks/eager_step.py --steps 1000 --models mlp --batch 512
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import numpy as np

from trainctl import nn, optim
from trainctl.autograd import Tensor
from trainctl.backend import manual_seed
from trainctl.bench.timing import Timing, time_steps


def build_model(name: str) -> nn.Module:
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(784, 10),
    )


def batch(batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, 28, 28, 1)).astype(np.float32)
    return images, rng.integers(0, 10, batch_size)


def trainctl_step(name: str, batch_size: int) -> Callable[[], float]:
    manual_seed(0)
    model = build_model(name)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = batch(batch_size)
    x, y = Tensor(images), Tensor(labels)

    def step() -> float:
        loss = nn.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def torch_step(name: str, batch_size: int, torch) -> Callable[[], float]:
    """The same model in PyTorch (NCHW; weights drawn by PyTorch: timing only)."""
    tnn = torch.nn
    torch.manual_seed(0)
    if name == "mlp":
        model = tnn.Sequential(
            tnn.Flatten(),
            tnn.Linear(784, 128),
            tnn.ReLU(),
            tnn.Linear(128, 64),
            tnn.ReLU(),
            tnn.Linear(64, 10),
        )
    else:
        model = tnn.Sequential(
            tnn.Conv2d(1, 8, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Conv2d(8, 16, 3, padding=1),
            tnn.ReLU(),
            tnn.MaxPool2d(2),
            tnn.Flatten(),
            tnn.Linear(784, 10),
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = batch(batch_size)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels)

    def step():
        loss = tnn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def interleaved(
    steps: dict[str, Callable],
    total: int,
    warmup: int,
    rounds: int,
    synchronize: Callable[[], None] = lambda: None,
) -> dict:
    """Time each step function in `rounds` alternating rounds; pool the samples.
    `synchronize` waits for queued GPU work, so a step's time includes its kernels."""
    samples: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, step in steps.items():
            timing = time_steps(step, total // rounds, warmup, synchronize)
            samples[label].extend(timing.samples_ms)
    return {label: Timing(tuple(values)) for label, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None

    peer = f", PyTorch {torch.__version__}" if torch else ", PyTorch not installed"
    print(f"NumPy {np.__version__}{peer}, {platform.processor() or platform.machine()}")
    print(f"{args.steps} timed steps per engine after {args.warmup} warm-up, {args.rounds} rounds")
    print(f"{'model':<6} {'batch':>5} {'engine':<16} {'median ms':>10} {'p90 ms':>8}")
    for name in args.models.split(","):
        steps = {"trainctl eager": trainctl_step(name, args.batch)}
        if torch is not None:
            steps["pytorch eager"] = torch_step(name, args.batch, torch)
        timings = interleaved(steps, args.steps, args.warmup, args.rounds)
        for label, timing in timings.items():
            print(
                f"{name:<6} {args.batch:>5} {label:<16} {timing.median:>10.3f} {timing.p90:>8.3f}"
            )
        if torch is not None:
            ratio = timings["trainctl eager"].median / timings["pytorch eager"].median
            print(f"{name:<6} {args.batch:>5} {'ratio trainctl/pytorch':<27} {ratio:>6.2f}x")


if __name__ == "__main__":
    main()
