"""The model's inference graph for TensorBoard's Graphs tab, as a GraphDef.

The model is traced once in eval mode (no dropout, BatchNorm on its running statistics), as
graph mode traces its evaluation step, with each submodule's forward scoped so that every
node is named after the layer that made it: `3_Conv2d/conv2d_17`, its weight
`3_Conv2d/weight`. TensorBoard folds a layer's nodes into one box by that `/` prefix. The
protocol buffers are encoded by hand, like the scalar events (train/events.py), so neither
TensorFlow nor tensorboardX is needed:

    GraphDef  { repeated NodeDef node = 1; }
    NodeDef   { string name = 1; string op = 2; repeated string input = 3;
                map<string, AttrValue> attr = 5; }
    AttrValue { ListValue list = 1; bytes s = 2; DataType type = 6; }
    ListValue { repeated TensorShapeProto shape = 7; }
    TensorShapeProto { repeated Dim dim = 2; }   Dim { int64 size = 1; }
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.autograd import no_grad
from trainctl.autograd.graph import Graph, HostScalar, TracingError, Value, tracing
from trainctl.autograd.ops import Spec
from trainctl.backend import Device
from trainctl.nn import Module
from trainctl.train import protobuf
from trainctl.train.numerics import LayerScopes

# TensorFlow's DataType numbers (types.proto) for the dtypes a trainctl graph holds.
_DATA_TYPES = {
    "float32": 1,
    "float64": 2,
    "int32": 3,
    "uint8": 4,
    "int16": 5,
    "int8": 6,
    "int64": 9,
    "bool": 10,
    "bfloat16": 14,
    "float16": 19,
}


@dataclass
class InferenceGraph:
    """A traced eval-mode forward, with the scope (layer) of each value it made and of each
    module path, for naming its nodes."""

    graph: Graph
    value_scopes: dict[Value, str]
    path_scope: Callable[[str], str]


def trace_inference(
    model: Module, input_shape: Sequence[int], input_dtype: Any, device: Device
) -> InferenceGraph:
    """The model's eval-mode forward on inputs of `input_shape` (batch first), recorded but
    not run. The model is left as it was, its train/eval mode included."""
    path_scope = _path_scopes(model)
    was_training = model.training
    scopes = LayerScopes(model, label=lambda path, _: path_scope(path))
    try:
        with tracing(device, model) as tracer, scopes.recording(tracer.graph):
            x = tracer.graph.add_input("inputs", Spec(tuple(input_shape), np.dtype(input_dtype)))
            model.eval()
            with no_grad():
                out = model(x)
            if not isinstance(out, Value):
                raise TracingError("the model must return a value computed from its input")
            tracer.graph.outputs["output"] = out
    finally:
        scopes.remove()
        model.train(was_training)
    return InferenceGraph(tracer.graph, dict(tracer.graph.origins or {}), path_scope)


def _path_scopes(model: Module) -> Callable[[str], str]:
    """A module path's scope name: '2.body.0' -> '2_Residual/body/0_Linear' (a numbered part
    gets its module's class, so the Graphs tab says what each layer is)."""
    modules = dict(model.named_modules())

    def scope(path: str) -> str:
        parts = path.split(".") if path else []
        named = []
        for depth, part in enumerate(parts):
            module = modules.get(".".join(parts[: depth + 1]))
            named.append(f"{part}_{type(module).__name__}" if part.isdigit() and module else part)
        return "/".join(named)

    return scope


def graph_def(inference: InferenceGraph) -> bytes:
    """The serialized GraphDef of a traced inference graph."""
    graph, scopes = inference.graph, inference.value_scopes
    names: dict[int, str] = {}
    nodes: list[bytes] = []

    def add(value: Value, scope: str, leaf: str, op: str, inputs=(), arguments=None) -> None:
        names[value.id] = f"{scope}/{leaf}" if scope else leaf
        nodes.append(_node(names[value.id], op, inputs, value, arguments or {}))

    for value in graph.inputs:
        add(value, "", value.name or f"input_{value.id}", "Placeholder")
    for slot in graph.state:
        kind, _, name = slot.name.partition(":")
        path, _, leaf = name.rpartition(".")
        add(
            slot.value,
            inference.path_scope(path),
            leaf,
            "Variable" if kind == "param" else "Buffer",
        )
    first_use: dict[int, str] = {}  # a constant goes in the scope of the layer that reads it
    for node in graph.nodes:
        for x in node.inputs:
            if isinstance(x, Value):
                first_use.setdefault(x.id, scopes.get(node.out, ""))
    for value in graph.constants:
        add(value, first_use.get(value.id, ""), f"const_{value.id}", "Const")
    for node in graph.nodes:
        if not isinstance(node.out, Value):
            continue
        inputs = [names[x.id] for x in node.inputs if isinstance(x, Value)]
        arguments = {
            f"arg{i}": repr(float(x) if isinstance(x, HostScalar) else x)
            for i, x in enumerate(node.inputs)
            if not isinstance(x, Value)
        }
        arguments.update({key: repr(attr) for key, attr in node.attrs.items()})
        op = node.op.name
        add(node.out, scopes.get(node.out, ""), f"{op}_{node.out.id}", op, inputs, arguments)
    output = graph.outputs["output"]
    nodes.append(_node("output", "Identity", [names[output.id]], output, {}))
    return b"".join(protobuf.length_delimited(1, node) for node in nodes)


def _node(name: str, op: str, inputs, value: Value, arguments: dict[str, str]) -> bytes:
    """One NodeDef: its output's shape and dtype, and the op's arguments as text attrs."""
    field = protobuf.length_delimited
    out = field(1, name.encode()) + field(2, op.encode())
    out += b"".join(field(3, source.encode()) for source in inputs)
    shape = b"".join(field(2, protobuf.tag(1, 0) + protobuf.varint(n)) for n in value.shape)
    attrs = {"_output_shapes": field(1, field(7, shape))}
    dtype = _DATA_TYPES.get(value.dtype.name)
    if dtype is not None:
        attrs["dtype"] = protobuf.tag(6, 0) + protobuf.varint(dtype)
    attrs.update({key: field(2, text.encode()) for key, text in arguments.items()})
    for key, attr in attrs.items():
        out += field(5, field(1, key.encode()) + field(2, attr))
    return out
