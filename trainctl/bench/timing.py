"""Time a step function many times and summarise the distribution, not just the mean."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Per-step wall times in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.samples_ms))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))

    @property
    def p10(self) -> float:
        return self.percentile(10)

    @property
    def p90(self) -> float:
        return self.percentile(90)


def time_steps(
    step: Callable[[], object],
    steps: int,
    warmup: int,
    synchronize: Callable[[], None] = lambda: None,
) -> Timing:
    """Run `step` `warmup` times untimed, then `steps` times, each timed on its own.

    `synchronize` waits for queued device work (CUDA) so a step's time includes its kernels.
    """
    for _ in range(warmup):
        step()
    synchronize()
    samples = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing(tuple(samples))
