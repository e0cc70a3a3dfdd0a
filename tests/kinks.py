"""Every op and loss with a kink, evaluated exactly at it, with the gradient there.

Finite differences straddle a kink and cannot check it, so each case states the analytic
value of d sum(fn(inputs)) / d input that the engine's convention gives. The convention is
PyTorch's wherever PyTorch has the op (`torch_fn`, checked in
tests/autograd/test_ops_torch_parity.py): relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = slope,
elu'(0) = alpha, maximum's ties split the gradient evenly, max's tied maxima share it evenly,
a max-pool window's gradient goes to its first maximum. -0.0 is a zero like any other. Eager mode
(tests/autograd), graph mode (tests/graph) and the loss tests (tests/nn) use this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainctl import nn
from trainctl.autograd import Tensor, ops


@dataclass(frozen=True)
class Kink:
    name: str
    fn: Callable  # on operands: eager tensors or graph values
    inputs: tuple[list, ...]
    grads: tuple[list, ...]  # the gradient of fn(inputs).sum() for each input
    torch_fn: Callable  # torch_fn(torch, *tensors): the same function in PyTorch (NHWC images)

    def arrays(self, dtype) -> list[np.ndarray]:
        return [np.array(x, dtype) for x in self.inputs]

    def expected(self, dtype) -> list[np.ndarray]:
        return [np.array(g, dtype) for g in self.grads]


def _nchw_pool(torch, t, kernel, stride):
    pooled = torch.nn.functional.max_pool2d(t.permute(0, 3, 1, 2), kernel, stride)
    return pooled.permute(0, 2, 3, 1)


_SIGNED = [-1.5, -0.0, 0.0, 2.0]
_TARGETS = [1.0, 0.0, 0.25, 1.0]


def _bce(logits):
    targets = Tensor(np.array(_TARGETS, logits.dtype), device=logits.device)
    return nn.binary_cross_entropy_with_logits(logits, targets, "sum")


def _torch_bce(torch, logits):
    targets = torch.tensor(_TARGETS, dtype=logits.dtype)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")


# A 1x4x4x1 image of zeros (some of them -0.0) and one 1: every window but one is all ties.
_IMAGE = np.array([[0.0, -0.0, 0.0, 0.0], [-0.0, 0.0, 0.0, 1.0], [0.0] * 4, [0.0, 0.0, -0.0, 0.0]])
_POOL_K2_GRAD = [[1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
_POOL_K3_GRAD = [[1, 0, 0, 0], [1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]]


def _image(values) -> list:
    return np.asarray(values, float).reshape(1, 4, 4, 1).tolist()


KINKS = [
    Kink("relu", ops.relu, (_SIGNED,), ([0, 0, 0, 1],), lambda torch, t: t.relu()),
    Kink("abs", ops.absolute, (_SIGNED,), ([-1, 0, 0, 1],), lambda torch, t: t.abs()),
    Kink(  # elu'(0) = alpha: the exponential branch's slope, as in PyTorch
        "elu",
        lambda x: ops.elu(x, 0.5),
        (_SIGNED,),
        ([0.5 * math.exp(-1.5), 0.5, 0.5, 1],),
        lambda torch, t: torch.nn.functional.elu(t, 0.5),
    ),
    Kink(
        "leaky_relu",
        lambda x: nn.functional.leaky_relu(x, 0.25),
        (_SIGNED,),
        ([0.25, 0.25, 0.25, 1],),
        lambda torch, t: torch.nn.functional.leaky_relu(t, 0.25),
    ),
    Kink(
        "maximum",
        ops.maximum,
        ([1.0, 0.0, 2.0, -1.0, 0.0], [1.0, 0.0, 3.0, -2.0, -0.0]),
        ([0.5, 0.5, 0, 1, 0.5], [0.5, 0.5, 1, 0, 0.5]),
        lambda torch, a, b: torch.maximum(a, b),
    ),
    Kink(
        "maximum_with_zero",
        lambda x: ops.maximum(x, 0.0),
        (_SIGNED,),
        ([0, 0.5, 0.5, 1],),
        lambda torch, t: torch.maximum(t, torch.zeros_like(t)),
    ),
    Kink(
        "max_axis_ties",
        lambda x: ops.reduce_max(x, axis=1),
        ([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -0.0, -1.0]],),
        ([[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0]],),
        lambda torch, t: t.amax(dim=1),
    ),
    Kink(
        "max_all_ties",
        ops.reduce_max,
        ([[0.0, -1.0], [-0.0, 0.0]],),
        ([[1 / 3, 0], [1 / 3, 1 / 3]],),
        lambda torch, t: t.max(),
    ),
    *(
        Kink(
            f"max_pool2d_k{kernel}_s{stride}_ties",
            lambda x, k=kernel, s=stride: ops.max_pool2d(x, k, s),
            (_image(_IMAGE),),
            (_image(grad),),
            lambda torch, t, k=kernel, s=stride: _nchw_pool(torch, t, k, s),
        )
        for kernel, stride, grad in ((2, 2, _POOL_K2_GRAD), (3, 1, _POOL_K3_GRAD))
    ),
    Kink(
        "bce_with_logits",
        _bce,
        ([0.0, 0.0, -0.0, 0.0],),
        ([-0.5, 0.5, 0.25, -0.5],),  # sigmoid(0) - target
        _torch_bce,
    ),
]
