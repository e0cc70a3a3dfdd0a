"""Parameter initialisers: host NumPy arrays drawn from a seeded `backend.Generator`.

Every draw happens on the host in float64 and is then cast, so a model built with the same
seed starts from identical weights on every device and in every dtype. Each call takes one
key from the generator (`host_rng()`), so the order of calls fixes the weights.

Weight layouts: Linear (in_features, out_features), Conv2d (KH, KW, Cin, Cout); the inputs of
a unit are every axis but the last, its outputs the last axis times the kernel window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainctl import backend

Shape = tuple[int, ...]


def fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: (in, out) for Linear, (KH, KW, Cin, Cout) for Conv2d."""
    if len(shape) < 2:
        raise ValueError(f"fan_in and fan_out need a weight with at least 2 axes, got {shape}")
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _rng(generator: backend.Generator | None) -> np.random.Generator:
    return (generator or backend.default_generator).host_rng()


def _fan(shape: Shape, mode: str) -> int:
    fan_in, fan_out = fans(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def uniform(
    shape: Shape,
    bound: float,
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """U(-bound, bound)."""
    return _rng(generator).uniform(-bound, bound, shape).astype(dtype)


def normal(
    shape: Shape,
    std: float = 1.0,
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """N(0, std^2)."""
    return (_rng(generator).standard_normal(shape) * std).astype(dtype)


def kaiming_uniform(
    shape: Shape,
    a: float = math.sqrt(5),
    mode: str = "fan_in",
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """He uniform for a leaky-relu slope `a`: U(-b, b), b = sqrt(6 / ((1 + a^2) fan)).

    The default a = sqrt(5) is PyTorch's Linear/Conv default, b = 1/sqrt(fan_in).
    """
    bound = math.sqrt(6.0 / ((1.0 + a * a) * _fan(shape, mode)))
    return uniform(shape, bound, generator, dtype)


def kaiming_normal(
    shape: Shape,
    a: float = 0.0,
    mode: str = "fan_in",
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """He normal for a leaky-relu slope `a` (0: relu): N(0, 2 / ((1 + a^2) fan))."""
    std = math.sqrt(2.0 / ((1.0 + a * a) * _fan(shape, mode)))
    return normal(shape, std, generator, dtype)


def xavier_uniform(
    shape: Shape,
    gain: float = 1.0,
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return uniform(shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), generator, dtype)


def xavier_normal(
    shape: Shape,
    gain: float = 1.0,
    generator: backend.Generator | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Glorot normal: N(0, gain^2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return normal(shape, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator, dtype)


def zeros(shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def ones(shape: Shape, dtype: Any = np.float32) -> np.ndarray:
    return np.ones(shape, dtype=dtype)


WEIGHT_INITS = {
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
}


def weight_and_bias(
    shape: Shape,
    init: str,
    bias: bool,
    generator: backend.Generator | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A Linear/Conv weight by the named scheme, and its bias (drawn after the weight).

    "kaiming_uniform" reproduces PyTorch's default, bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    the other schemes start the bias at zero, the usual companion of Glorot and He inits.
    """
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown init {init!r}: expected one of {', '.join(WEIGHT_INITS)}")
    weight = WEIGHT_INITS[init](shape, generator=generator)
    if not bias:
        return weight, None
    if init == "kaiming_uniform":
        return weight, uniform(shape[-1:], 1.0 / math.sqrt(fans(shape)[0]), generator)
    return weight, zeros(shape[-1:])
