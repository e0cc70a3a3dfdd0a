"""Check analytic gradients against central finite differences (use float64 inputs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from trainctl.autograd.tensor import Tensor
from trainctl.backend import to_host


def gradcheck(
    fn: Callable[[], Tensor],
    tensors: Sequence[Tensor],
    eps: float = 1e-6,
    max_points: int = 64,
    seed: int = 0,
) -> float:
    """The worst relative error between backward() and finite differences over `tensors`.

    `fn` recomputes the output from the leaf `tensors` (it must be deterministic). The output
    is reduced to a scalar with fixed random weights, so every output element is checked. At
    most `max_points` elements of each tensor are perturbed, chosen at random. The error of a
    tensor is ||analytic - numeric|| / max(||analytic||, ||numeric||, 1e-12) over those points.
    """
    rng = np.random.default_rng(seed)
    out = fn()
    weights = rng.standard_normal(out.shape)
    weights_tensor = Tensor(weights, dtype=out.dtype, device=out.device)

    for t in tensors:
        t.grad = None
    (fn() * weights_tensor).sum().backward()

    def loss() -> float:
        return float((to_host(fn().data).astype(np.float64) * weights).sum())

    worst = 0.0
    for t in tensors:
        if t.grad is None:
            raise AssertionError(f"no gradient reached a tensor of shape {t.shape}")
        analytic = to_host(t.grad.data).astype(np.float64)
        count = min(max_points, t.size)
        points = rng.choice(t.size, size=count, replace=False)
        numeric = np.empty(count)
        for k, flat in enumerate(points):
            index = np.unravel_index(flat, t.shape)
            original = t.data[index].item()
            t.data[index] = original + eps
            plus = loss()
            t.data[index] = original - eps
            minus = loss()
            t.data[index] = original
            numeric[k] = (plus - minus) / (2 * eps)
        picked = analytic.reshape(-1)[points]
        scale = max(np.linalg.norm(picked), np.linalg.norm(numeric), 1e-12)
        worst = max(worst, float(np.linalg.norm(picked - numeric) / scale))
    return worst
