"""What `trainctl graph` prints: a training step's graph as IR text or Graphviz DOT, or its
generated code, under a header of node counts per pass, buffers and bytes, and guards.

Presentation only: it traces and compiles through `autograd.jit.TracedStep` like graph mode
does, and reads the IR; the engine itself never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd.compile import compile_graph
from trainctl.autograd.graph import Graph, HostScalar, Value, node_text, operand_label
from trainctl.autograd.guards import guard_lines
from trainctl.autograd.jit import TracedStep
from trainctl.autograd.ops import Spec
from trainctl.autograd.step_graph import LossFn, StepDefinition, StepError, StepOptions
from trainctl.backend import Device

STAGES = ("traced", "optimized")
FORMATS = ("text", "dot", "code")


def render_graph(
    model: Any,
    loss_fn: LossFn,
    optimizer: Any,
    inputs_shape: Sequence[int],
    targets_shape: Sequence[int],
    targets_dtype: Any,
    *,
    device: Device,
    dtype: Any,
    inputs_dtype: Any = None,
    options: StepOptions | None = None,
    stage: str = "optimized",
    fmt: str = "text",
    batch: Sequence[Any] | None = None,
) -> str:
    """The training step's graph as `trainctl graph` prints it: IR text, Graphviz DOT or the
    generated Python source, under a header of node counts per pass, buffers and bytes.

    `stage="traced"` shows the graph as recorded (its code: one forward call per node);
    nothing runs and the model, optimizer and generators are left as they were. With a
    `batch` (inputs, targets), a model that branches on values is traced for that batch, and
    the header lists the guards the graph is specialised on.
    """
    if stage not in STAGES:
        raise StepError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    if fmt not in FORMATS:
        raise StepError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    options = replace(options or StepOptions(), plan_memory=stage == "optimized")
    definition = StepDefinition(model, loss_fn, optimizer, device, np.dtype(dtype), options)
    step = TracedStep(definition)
    inputs = Spec(tuple(inputs_shape), np.dtype(inputs_dtype or dtype))
    signature = step.signature("train", inputs, Spec(tuple(targets_shape), targets_dtype))
    traced, _ = step.trace(signature, batch)
    optimized, records, program = step.compile(traced)
    shown = optimized if stage == "optimized" else traced
    if stage == "traced":
        program = compile_graph(traced, step.storage.arrays, plan_memory=False)
    header = [
        f"training step of {type(model).__name__}: inputs {signature[2]}{list(signature[1])}, "
        f"targets {signature[4]}{list(signature[3])}, {device}",
        f"traced: {len(traced.nodes)} nodes",
        *(f"pass {r.name}: {r.nodes_before} -> {r.nodes_after} nodes" for r in records),
        f"optimized: {len(optimized.nodes)} nodes",
        f"buffers: {program.buffers}, {program.buffer_bytes} bytes"
        + ("" if stage == "optimized" else " (the traced stage allocates as it runs)"),
    ]
    if traced.guards:
        header.append(
            f"guards: {len(traced.guards)}, checked before each replay (the graph is specialised "
            "on these outcomes; another outcome traces again)"
        )
        header += guard_lines(traced)
    if fmt == "code":
        return "\n".join("# " + line for line in header) + "\n" + program.source
    body = format_graph(shown) if fmt == "text" else graph_to_dot(shown)
    comment = "# " if fmt == "text" else "// "
    return "\n".join(comment + line for line in header) + "\n" + body + "\n"


def format_graph(graph: Graph) -> str:
    """The IR as text: inputs, state, constants, one line per node, then the outputs."""
    lines = [f"input {v.label}: {v.dtype}{list(v.shape)}" for v in graph.inputs]
    lines += [f"input {s.label}: host" for s in graph.scalars]
    for slot in graph.state:
        line = f"state {slot.value.label}: {slot.value.dtype}{list(slot.value.shape)}"
        if hasattr(slot.source, "describe"):  # a layout of storage, such as a flat array's
            line += " = " + slot.source.describe()
        lines.append(line)
    for index, (_, draws) in enumerate(graph.generators):
        lines.append(f"input rng{index}: generator counter (+{draws} per step)")
    used = {id(x) for node in graph.nodes for x in node.inputs}
    used |= {id(v) for v in graph.outputs.values()}
    for c in graph.constants:
        if id(c) in used:
            lines.append(f"const {c.label}: {c.dtype}{list(c.shape)} = {_preview(c.array)}")
    lines += [node_text(node) for node in graph.nodes]
    lines += [f"output {name} = {operand_label(v)}" for name, v in graph.outputs.items()]
    return "\n".join(lines)


def _preview(array: Any) -> str:
    host = backend.to_host(array)
    if host.size <= 4:
        return np.array2string(host, separator=", ")
    first = host.reshape(-1)[0]
    if np.all(host == first):
        return f"full({first!r})"
    return f"array of {math.prod(host.shape)} values"


def graph_to_dot(graph: Graph) -> str:
    """Graphviz DOT of the graph: inputs as boxes, nodes as ellipses, edges along data flow."""
    lines = ["digraph step {", "  rankdir=TB;", '  node [fontname="monospace", fontsize=10];']

    def ident(x: Any) -> str:
        return f"v{x.id}"

    for v in graph.inputs + [s.value for s in graph.state]:
        lines.append(f'  {ident(v)} [shape=box, label="{v.label}\\n{list(v.shape)}"];')
    for s in graph.scalars:
        lines.append(f'  {ident(s)} [shape=box, label="{s.label}\\nhost"];')
    drawn_constants = set()
    for node in graph.nodes:
        shape = "host" if isinstance(node.out, HostScalar) else list(node.out.shape)
        lines.append(f'  {ident(node.out)} [label="{node.op.name}\\n{shape}"];')
        for x in node.inputs:
            if isinstance(x, Value) and x.array is not None and x.id not in drawn_constants:
                drawn_constants.add(x.id)
                label = f"const\\n{list(x.shape)}"
                lines.append(f'  {ident(x)} [shape=box, style=dashed, label="{label}"];')
            if isinstance(x, (Value, HostScalar)):
                lines.append(f"  {ident(x)} -> {ident(node.out)};")
    for name, v in graph.outputs.items():
        out_id = f"out_{len(lines)}"
        lines.append(f'  {out_id} [shape=box, style=bold, label="{name}"];')
        lines.append(f"  {ident(v)} -> {out_id};")
    lines.append("}")
    return "\n".join(lines)
