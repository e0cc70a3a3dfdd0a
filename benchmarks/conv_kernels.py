"""Convolution and max-pool kernels one at a time: trainctl's ops against PyTorch's.

The kernels a training step of the small CNN (`eager_step.py`'s `cnn`, batch 64) and of
`configs/cifar10_cnn.yaml` (batch 128) runs: conv forward (with its bias where the model has
one), input gradient (not for a model's first conv, whose input needs none), weight gradient,
bias gradient, max-pool forward and backward. trainctl runs each op's forward on NumPy
arrays into preallocated outputs and scratch, as graph mode's compiled step does (Numba
loops included, compiled before timing); PyTorch runs the ATen kernel its autograd calls
(`convolution`, `convolution_backward` with one output asked for, `max_pool2d_with_indices`
and its backward) on NCHW and on channels-last memory. Rounds alternate between the engines.

    python benchmarks/conv_kernels.py                      # 1 thread, 200 calls per engine
    python benchmarks/conv_kernels.py --models cnn --steps 400
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eager_step import interleaved  # noqa: E402
from kernel_timing import print_timings, start_run  # noqa: E402

from trainctl.autograd import ops  # noqa: E402
from trainctl.autograd.ops import Spec  # noqa: E402

# (label, NHWC input, Cout, bias, needs its input gradient) per conv; (label, NHWC input) per pool
MODELS = {
    "cnn": {
        "convs": [
            ("conv 1->8", (64, 28, 28, 1), 8, True, False),
            ("conv 8->16", (64, 14, 14, 8), 16, True, True),
        ],
        "pools": [("pool 2x2", (64, 28, 28, 8)), ("pool 2x2", (64, 14, 14, 16))],
    },
    "cifar10_cnn": {
        "convs": [
            ("conv 3->32", (128, 32, 32, 3), 32, False, False),
            ("conv 32->32", (128, 32, 32, 32), 32, False, True),
            ("conv 32->64", (128, 16, 16, 32), 64, False, True),
            ("conv 64->64", (128, 16, 16, 64), 64, False, True),
        ],
        "pools": [("pool 2x2", (128, 32, 32, 32)), ("pool 2x2", (128, 16, 16, 64))],
    },
}


def _spec(array: np.ndarray) -> Spec:
    return Spec(array.shape, array.dtype)


def trainctl_kernel(op: Any, inputs: list[np.ndarray], **attrs: Any) -> Callable[[], Any]:
    """`op.forward` on `inputs` into an output and the scratch graph mode would give it."""
    out_spec = op.infer(*map(_spec, inputs), **attrs)
    out = np.empty(out_spec.shape, out_spec.dtype)
    node = SimpleNamespace(inputs=[_spec(a) for a in inputs], attrs=attrs, out=out_spec)
    extra: dict[str, Any] = {}
    if op.scratch is not None:
        extra["scratch"] = [np.zeros(s.shape, s.dtype) for s in op.scratch_of(node, np, None)]
    if op.prepare is not None:
        extra.update(op.prepare(np, *inputs, **attrs))
    return lambda: op.forward(np, *inputs, **attrs, **extra, out=out)


def _rng_arrays(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def conv_kernels(x_shape, cout: int, bias: bool, input_grad: bool, torch) -> dict:
    """kernel name -> {engine label: call} for one 3x3, padding 1 conv."""
    weight_shape = (3, 3, x_shape[3], cout)
    out_shape = (*x_shape[:3], cout)
    x, w, b, g = _rng_arrays(x_shape, weight_shape, (cout,), out_shape)
    attrs = {"stride": 1, "padding": 1}
    forward_inputs = [x, w, b] if bias else [x, w]
    kernels = {
        "forward": {"trainctl": trainctl_kernel(ops.Conv2d, forward_inputs, **attrs)},
        "weight grad": {
            "trainctl": trainctl_kernel(ops.Conv2dWeightGrad, [x, g], kh=3, kw=3, **attrs)
        },
    }
    if input_grad:
        kernels["input grad"] = {
            "trainctl": trainctl_kernel(ops.Conv2dInputGrad, [g, w], x_shape=x_shape, **attrs)
        }
    if bias:
        kernels["bias grad"] = {"trainctl": trainctl_kernel(ops.ChannelSum, [g])}
    if torch is not None:
        for layout in ("NCHW", "channels_last"):
            calls = torch_conv(torch, layout, x, w, b if bias else None, g)
            for name, engines in kernels.items():
                engines[f"pytorch {layout}"] = calls[name]
    return kernels


def _torch_nchw(torch, array: np.ndarray, layout: str):
    memory = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(memory_format=memory)


def torch_conv(torch, layout: str, x, w, b, g) -> dict[str, Callable[[], Any]]:
    tx, tg = _torch_nchw(torch, x, layout), _torch_nchw(torch, g, layout)
    tw = _torch_nchw(torch, w.transpose(3, 0, 1, 2), layout)  # (Cout, KH, KW, Cin) -> OIHW
    tb = None if b is None else torch.from_numpy(b)
    bias_sizes = None if b is None else [len(b)]

    def backward(mask: list[bool]) -> Callable[[], Any]:
        return lambda: torch.ops.aten.convolution_backward(
            tg, tx, tw, bias_sizes, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
        )

    return {
        "forward": lambda: torch.ops.aten.convolution(
            tx, tw, tb, [1, 1], [1, 1], [1, 1], False, [0, 0], 1
        ),
        "input grad": backward([True, False, False]),
        "weight grad": backward([False, True, False]),
        "bias grad": backward([False, False, True]),
    }


def pool_kernels(x_shape, torch) -> dict:
    x = _rng_arrays(x_shape)[0]
    pooled = ops.MaxPool2d.forward(np, x, 2, 2)
    g = _rng_arrays(pooled.shape)[0]
    kernels = {
        "forward": {"trainctl": trainctl_kernel(ops.MaxPool2d, [x], kernel=2, stride=2)},
        "backward": {
            "trainctl": trainctl_kernel(ops.MaxPool2dGrad, [g, x, pooled], kernel=2, stride=2)
        },
    }
    if torch is not None:
        aten = torch.ops.aten
        for layout in ("NCHW", "channels_last"):
            tx, tg = _torch_nchw(torch, x, layout), _torch_nchw(torch, g, layout)
            _, indices = aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
            kernels["forward"][f"pytorch {layout}"] = lambda tx=tx: aten.max_pool2d_with_indices(
                tx, [2, 2], [2, 2]
            )
            kernels["backward"][f"pytorch {layout}"] = lambda tx=tx, tg=tg, i=indices: (
                aten.max_pool2d_with_indices_backward(
                    tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, i
                )
            )
    return kernels


def report(model: str, label: str, shape, kernels: dict, args) -> None:
    for name, engines in kernels.items():
        timings = interleaved(engines, args.steps, args.warmup, args.rounds)
        print_timings(
            f"{model:<12} {label:<12} {'x'.join(map(str, shape)):<14} {name:<12}", timings
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    args, limiter, torch = start_run(parser)  # the limiter holds the thread pools for the run
    print(
        f"{'model':<12} {'layer':<12} {'input (NHWC)':<14} {'kernel':<12} {'engine':<22} "
        f"{'median ms':>9} {'p90 ms':>8} {'/ torch':>8}"
    )
    for model in args.models.split(","):
        for label, shape, cout, bias, input_grad in MODELS[model]["convs"]:
            report(model, label, shape, conv_kernels(shape, cout, bias, input_grad, torch), args)
        for label, shape in MODELS[model]["pools"]:
            report(model, label, shape, pool_kernels(shape, torch), args)
    print(f"load average after: {os.getloadavg()}; '/ torch': against the faster PyTorch layout")


if __name__ == "__main__":
    main()
