"""What an op's ONNX lowering writes with: nodes, constants and shapes of an ONNX graph.

Each primitive op declares its own lowering as `Op.onnx(b, inputs, **attrs) -> name`, where
`b` is an OnnxBuilder and `inputs` are the ONNX names of its operands; the lowering only
calls the builder, so `autograd/ops.py` never imports onnx.

Shapes that grow with the batch (a reshape to (N*T, D), a broadcast to (N, C)) were found by
tracing at two batch sizes: such a shape arrives as a BatchShape, and `shape()` builds it
from the input's batch size at run time, so the exported model takes any batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


class BatchShape(tuple):
    """A shape some of whose sizes are a multiple of the batch size: `per_sample[i]` is that
    multiple (0 where the size is fixed)."""

    per_sample: tuple[int, ...]

    def __new__(cls, shape: Sequence[int], per_sample: Sequence[int]) -> BatchShape:
        made = super().__new__(cls, shape)
        made.per_sample = tuple(per_sample)
        return made


class OnnxBuilder:
    """Nodes and initializers of one ONNX graph, with fresh names."""

    def __init__(self, batch: str) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # as traced, of the names that have one
        self._batch_input = batch
        self._batch_size: str | None = None
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """One node with one output; its name."""
        out = self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def const(self, value: Any, dtype: Any = None, name: str | None = None) -> str:
        """An initializer holding `value` (cast to `dtype` when given)."""
        array = np.asarray(value, dtype=dtype)
        name = name or self.fresh("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        self.shapes[name] = array.shape
        return name

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The shape `name` had when the model was traced (batch size included)."""
        return self.shapes[name]

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, np.int64).reshape(-1))

    @staticmethod
    def onnx_type(dtype: Any) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def shape(self, shape: Sequence[int]) -> str:
        """An int64 shape tensor: fixed, or built from the batch size where it grows with it."""
        per_sample = getattr(shape, "per_sample", None)
        if per_sample is None or not any(per_sample):
            return self.ints(shape)
        parts = [
            self.op("Mul", self._batch(), self.ints([k])) if k else self.ints([size])
            for size, k in zip(shape, per_sample, strict=True)
        ]
        return self.op("Concat", *parts, axis=0)

    def _batch(self) -> str:
        """The batch size of the graph's input, as a one-element int64 tensor."""
        if self._batch_size is None:
            shape = self.op("Shape", self._batch_input)
            self._batch_size = self.op("Slice", shape, self.ints([0]), self.ints([1]))
        return self._batch_size

    def basic_index(self, x: str, index: tuple) -> str:
        """x[index] for NumPy basic indexing (ints, slices, None, Ellipsis)."""
        shape = self.shape_of(x)
        if any(item is Ellipsis for item in index):
            at = index.index(Ellipsis)
            fill = len(shape) - (len(index) - 1 - sum(item is None for item in index))
            index = index[:at] + (slice(None),) * fill + index[at + 1 :]
        starts, ends, axes, steps, dropped, added = [], [], [], [], [], []
        axis = kept = 0  # the axis of x an item indexes; the axis of the result it makes
        for item in index:
            if item is None:
                added.append(kept)
                kept += 1
                continue
            if isinstance(item, slice):
                start, stop, step = item.indices(shape[axis])
                if (start, stop, step) != (0, shape[axis], 1):
                    if step < 0 and stop < 0:
                        stop = -shape[axis] - 1  # ONNX: to the very start
                    starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
                kept += 1
            else:
                item = int(item) % shape[axis]
                starts.append(item), ends.append(item + 1), axes.append(axis), steps.append(1)
                dropped.append(axis)
            axis += 1
        out = x
        if axes:
            out = self.op(
                "Slice", out, self.ints(starts), self.ints(ends), self.ints(axes), self.ints(steps)
            )
        if dropped:
            out = self.op("Squeeze", out, self.ints(dropped))
        if added:
            out = self.op("Unsqueeze", out, self.ints(added))
        return out
