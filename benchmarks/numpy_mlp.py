"""The floor: one training step of the MLP 784-128-64-10 written directly with NumPy.

Forward, softmax cross entropy, backward and SGD with momentum, as a person writes them by
hand (no framework, no buffers planned ahead). Graph mode is measured against this step in
`benchmarks/graph_vs_eager.py`; run alone it prints its own timing:

    python benchmarks/numpy_mlp.py --batch 64 --steps 500
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np


def numpy_mlp_step(batch_size: int, lr: float = 0.01, momentum: float = 0.9) -> Callable[[], float]:
    """A step function over fixed random data; each call updates the weights in place."""
    rng = np.random.default_rng(0)
    sizes = [784, 128, 64, 10]
    weights = [
        (rng.uniform(-1, 1, (a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    biases = [np.zeros(b, np.float32) for b in sizes[1:]]
    params = [p for pair in zip(weights, biases, strict=True) for p in pair]
    velocity = [np.zeros_like(p) for p in params]
    images = rng.standard_normal((batch_size, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, batch_size)
    rows = np.arange(batch_size)
    w1, b1, w2, b2, w3, b3 = params

    def step() -> float:
        x = images.reshape(batch_size, -1)
        h1 = x @ w1 + b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ w2 + b2
        a2 = np.maximum(h2, 0)
        logits = a2 @ w3 + b3
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1, keepdims=True)
        loss = -(z[rows, labels] - np.log(total[:, 0])).mean()
        g3 = e / total
        g3[rows, labels] -= 1
        g3 /= batch_size
        g2 = (g3 @ w3.T) * (h2 > 0)
        g1 = (g2 @ w2.T) * (h1 > 0)
        grads = (x.T @ g1, g1.sum(0), a1.T @ g2, g2.sum(0), a2.T @ g3, g3.sum(0))
        for p, g, v in zip(params, grads, velocity, strict=True):
            v *= momentum
            v += g
            p -= lr * v
        return float(loss)

    return step


def main() -> None:
    from trainctl.bench.timing import time_steps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    timing = time_steps(numpy_mlp_step(args.batch), args.steps, args.warmup)
    print(f"numpy MLP batch {args.batch}: median {timing.median:.3f} ms, p90 {timing.p90:.3f} ms")


if __name__ == "__main__":
    main()
