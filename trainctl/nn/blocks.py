"""Models as a small DAG of named blocks: `model: {blocks: {...}, output: NAME}` in a config.

Each block takes one or more inputs (the model's `input`, or other blocks), joins several
with `concat` (along the last axis: channels of NHWC images, or features) or `add`, then
runs its own list of layers. Inception-style branches are blocks that share an input and
meet in a concat; a U-Net skip is a concat of an early block with a later one. Shapes are
inferred as for layer lists, block by block in dependency order, and a join whose inputs
do not fit names each of them, its line and its shape.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from trainctl.autograd import ops
from trainctl.nn.build import LayerSpec, ModelError, _build_sequence
from trainctl.nn.layers import Sequential
from trainctl.nn.module import Module

Shape = tuple[int, ...]
INPUT = "input"


class BlockSpec(Protocol):
    """What build_blocks reads of a config's block (config.schema.BlockConfig)."""

    name: str
    inputs: Sequence[str]
    join: str | None
    layers: Sequence[LayerSpec]
    line: int | None


class Blocks(Module):
    """Named blocks run in dependency order; each joins its inputs and runs its layers.

    `wiring` is [(name, inputs, join)] in the order the blocks run; the bodies are the
    submodules of the same names (their parameters are `NAME.INDEX.weight`, ...).
    """

    def __init__(
        self,
        wiring: Sequence[tuple[str, Sequence[str], str | None]],
        bodies: Mapping[str, Module],
        output: str,
    ) -> None:
        super().__init__()
        self.wiring = [(name, tuple(inputs), join) for name, inputs, join in wiring]
        self.output = output
        self.shapes: dict[str, Shape] = {}  # one output sample of each block, once built
        for name, _, _ in self.wiring:
            # registered by name directly: a block may be called `train` or `to` without
            # hiding the Module method of that name
            self._modules[name] = bodies[name]

    def describe(self) -> list[str]:
        """One line per block: what it joins, its layers and the shape of one output sample."""
        lines = []
        for name, inputs, join in self.wiring:
            source = f"{join}({', '.join(inputs)})" if join else inputs[0]
            count = len(self._modules[name]._modules)
            layers = f" -> {count} layer{'s' if count != 1 else ''}" if count else ""
            mark = "  (output)" if name == self.output else ""
            lines.append(f"{name}: {source}{layers} -> {self.shapes.get(name)}{mark}")
        return lines

    def forward(self, x: Any) -> Any:
        values = {INPUT: x}
        for name, inputs, join in self.wiring:
            values[name] = self._modules[name](join_values([values[i] for i in inputs], join))
        return values[self.output]

    def extra_repr(self) -> str:
        joins = (f"{name}={join or ''}({', '.join(inputs)})" for name, inputs, join in self.wiring)
        return f"output={self.output}; " + ", ".join(joins)


def join_values(values: Sequence[Any], join: str | None) -> Any:
    """One input as it is; several concatenated along the last axis, or added."""
    if len(values) == 1:
        return values[0]
    if join == "concat":
        return ops.concatenate(list(values), axis=-1)
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def build_blocks(
    specs: Sequence[BlockSpec], output: str, input_shape: Shape, input_dtype: Any = np.float32
) -> tuple[Blocks, Shape]:
    """The Blocks model for samples of `input_shape` (each block's output shape kept in its
    `shapes`), and the shape of one output sample."""
    by_name = {spec.name: spec for spec in specs}
    shapes: dict[str, Shape] = {INPUT: tuple(input_shape)}
    dtypes = {INPUT: np.dtype(input_dtype)}
    bodies: dict[str, Module] = {}
    order = run_order(specs)
    for name in order:
        spec = by_name[name]
        shape = joined_shape(spec, by_name, shapes)
        where = f"model.blocks.{name}.layers"
        dtype = dtypes[spec.inputs[0]] if len(spec.inputs) == 1 else np.dtype(np.float32)
        if spec.layers:
            bodies[name], shapes[name] = _build_sequence(spec.layers, shape, dtype, where, ())
        else:
            bodies[name], shapes[name] = Sequential(), shape
        dtypes[name] = np.dtype(np.float32) if spec.layers else dtype
    wiring = [(name, by_name[name].inputs, by_name[name].join) for name in order]
    model = Blocks(wiring, bodies, output)
    model.shapes = {name: shapes[name] for name in order}
    return model, shapes[output]


def run_order(specs: Sequence[BlockSpec]) -> list[str]:
    """The blocks in an order where each comes after its inputs, the config's order where it
    allows (Kahn's algorithm, earliest block first); the config checker has refused cycles
    and unknown names."""
    index = {spec.name: position for position, spec in enumerate(specs)}
    waiting = {spec.name: len(set(spec.inputs) - {INPUT}) for spec in specs}
    readers: dict[str, list[str]] = {}
    for spec in specs:
        for source in set(spec.inputs) - {INPUT}:
            readers.setdefault(source, []).append(spec.name)
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = specs[heapq.heappop(ready)].name
        order.append(name)
        for reader in readers.get(name, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, index[reader])
    return order


def joined_shape(
    spec: BlockSpec, by_name: Mapping[str, BlockSpec], shapes: Mapping[str, Shape]
) -> Shape:
    """The shape of one sample after the block's join; a ModelError when its inputs do not
    fit together, naming each input, its line and its shape."""
    given = [shapes[name] for name in spec.inputs]
    first = given[0]
    if len(given) == 1:
        return first
    if spec.join == "concat":
        fits = len(first) > 0 and all(len(s) == len(first) and s[:-1] == first[:-1] for s in given)
        rule = "shapes that differ only in the last axis"
    else:
        fits = all(s == first for s in given)
        rule = "the same shape"
    if not fits:
        described = ", ".join(
            f"{name}{_line_of(by_name.get(name))} gives {shape}"
            for name, shape in zip(spec.inputs, given, strict=True)
        )
        where = f"model.blocks.{spec.name}.inputs"
        raise ModelError(where, (), f"{spec.join} needs {rule}: {described}")
    if spec.join == "concat":
        return (*first[:-1], sum(s[-1] for s in given))
    return first


def _line_of(spec: BlockSpec | None) -> str:
    if spec is None:
        return " (the model's input)"
    return f" (line {spec.line})" if spec.line is not None else ""
