"""`trainctl export RUN --format onnx`: a run's inference graph as an ONNX model.

The model is traced as graph mode traces its evaluation step (eval mode: BatchNorm's running
statistics, no dropout), at two batch sizes: the sizes that differ between the two traces
are the ones that grow with the batch, and the exported model computes them from its input,
so its batch dimension is dynamic. Nodes that read only weights (a convolution's reshaped
kernel) are computed here, once, with the op's own forward, and stored as initializers.
Every other node is lowered by its op's `onnx` method (autograd/ops.py); an op without one
stops the export with a message naming the op and the layer. The run's deterministic input
transforms (normalize) come first in the graph, so the model takes what `predict` takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

import trainctl
from trainctl.autograd.graph import Graph, HostScalar, TracingError, Value
from trainctl.backend import to_host
from trainctl.data.transforms import TRANSFORMS
from trainctl.errors import RunFolderError, TrainctlError
from trainctl.export.onnx_builder import BatchShape, OnnxBuilder
from trainctl.predict.model import Predictor
from trainctl.train.atomic import atomic_write_bytes, describe_os_error
from trainctl.train.model_graph import trace_inference

OPSET = 18
TRACE_BATCHES = (2, 3)  # two sizes tell which shapes grow with the batch


class ExportError(TrainctlError):
    """A model that cannot be exported as asked (an op without a lowering, say)."""


@dataclass
class ExportReport:
    path: Path
    nodes: int
    initializers: int
    parameters: int
    outputs: list[str]


def export_onnx(predictor: Predictor, path: Path) -> ExportReport:
    """Write the run's model to `path` as ONNX and check it with `onnx.checker`."""
    model = onnx_model(predictor)
    onnx.checker.check_model(model, full_check=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {describe_os_error(exc)}") from None
    atomic_write_bytes(path, model.SerializeToString())  # a reader never sees half a model
    graph = model.graph
    return ExportReport(
        path,
        len(graph.node),
        len(graph.initializer),
        sum(int(np.prod(t.dims)) for t in graph.initializer),
        [o.name for o in graph.output],
    )


def onnx_model(predictor: Predictor) -> onnx.ModelProto:
    """The ONNX model of a restored run: inputs `inputs` (N, *sample shape), outputs
    `outputs` (the model's last layer, as `predict` computes it) and, for losses that define
    them, `probabilities`."""
    description = predictor.input
    components = predictor.restored.components
    dtype = components.dtype if description.dtype.kind == "f" else description.dtype
    try:
        traces = [
            trace_inference(components.model, (n, *description.shape), dtype, components.device)
            for n in TRACE_BATCHES
        ]
    except TracingError as exc:  # Python control flow on values has no static graph to export
        raise ExportError(f"ONNX export records the model once, without data: {exc}") from exc
    b = OnnxBuilder(batch="inputs")
    x = _input_transforms(b, predictor, "inputs")
    if np.dtype(dtype) != description.dtype:
        x = b.op("Cast", x, to=b.onnx_type(dtype))
    first, second = (t.graph for t in traces)
    if [n.op.name for n in first.nodes] != [n.op.name for n in second.nodes]:
        raise ExportError(
            "the model traces to different graphs at different batch sizes, so its ONNX "
            "graph cannot have a dynamic batch dimension"
        )
    b.shapes[x] = first.inputs[0].shape
    out = lower_graph(b, first, second, {first.inputs[0].id: x}, traces[0].value_scopes)
    outputs = [_value_info("outputs", traces[0].graph.outputs["output"])]
    b.nodes.append(helper.make_node("Identity", [out], ["outputs"]))
    probabilities = _probabilities(b, predictor.loss, out)
    if probabilities is not None:
        b.nodes.append(helper.make_node("Identity", [probabilities], ["probabilities"]))
        outputs.append(_value_info("probabilities", traces[0].graph.outputs["output"]))
    graph = helper.make_graph(
        b.nodes,
        predictor.restored.config.name,
        [
            helper.make_tensor_value_info(
                "inputs", b.onnx_type(description.dtype), ["batch", *description.shape]
            )
        ],  # fmt: skip
        outputs,
        b.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="trainctl",
        producer_version=trainctl.__version__,
    )
    helper.set_model_props(model, _metadata(predictor))
    return model


def _metadata(predictor: Predictor) -> dict[str, str]:
    description, restored = predictor.input, predictor.restored
    preprocessing = restored.components.data.preprocessing
    return {
        "config_name": restored.config.name,
        "run": restored.run.path.name,
        "checkpoint_step": str(restored.checkpoint_step),
        "trainctl_version": trainctl.__version__,
        "input_layout": description.layout,
        "task": description.task,
        "loss": predictor.loss,
        "classes": json.dumps(
            None if description.class_names is None else list(description.class_names)
        ),
        # A table's encoding (vocabularies, means) stays outside the graph: the model takes
        # the encoded features, and a client encodes its rows with this.
        **({"preprocessing": json.dumps(preprocessing)} if preprocessing is not None else {}),
    }


def _value_info(name: str, value: Value) -> onnx.ValueInfoProto:
    dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
    return helper.make_tensor_value_info(name, dtype, ["batch", *value.shape[1:]])


def _input_transforms(b: OnnxBuilder, predictor: Predictor, x: str) -> str:
    sample = np.zeros((1, *predictor.input.shape), predictor.input.dtype)
    for transform in predictor.restored.config.data.transforms:
        entry = TRANSFORMS[transform.name]
        if not entry.random:
            x = entry.onnx(b, x, transform.args, sample)
    return x


def _probabilities(b: OnnxBuilder, loss: str, logits: str) -> str | None:
    """As `predict.output.output_scores` defines them: softmax over the classes for
    cross_entropy, the sigmoid for bce_with_logits."""
    if loss == "cross_entropy":
        return b.op("Softmax", logits, axis=-1)
    if loss == "bce_with_logits":
        return b.op("Sigmoid", logits)
    return None


# ---------------------------------------------------------------- lowering the traced graph


def lower_graph(
    b: OnnxBuilder, graph: Graph, twin: Graph, names: dict[int, str], scopes: dict[Value, str]
) -> str:
    """Lower `graph` into `b`, its inputs already named in `names` (by value id); the name of
    its output. `twin` is the same graph traced at another batch size (or `graph` itself);
    `scopes` names the layer of each value, for messages."""
    # Both by value id: what each value is called in the ONNX graph, and the arrays of the
    # values that read only weights (computed here, stored as initializers where used).
    folded: dict[int, Any] = {slot.value.id: to_host(slot.current()) for slot in graph.state}
    folded.update({c.id: to_host(c.array) for c in graph.constants})
    for node, other in zip(graph.nodes, twin.nodes, strict=True):
        layer = scopes.get(node.out) or "the model"
        if any(isinstance(i, HostScalar) for i in node.inputs):
            raise ExportError(f"op {node.op.name} in {layer} reads a per-step value")
        values = [i for i in node.inputs if isinstance(i, Value)]
        if all(v.id in folded for v in values):
            operands = [folded[i.id] if isinstance(i, Value) else i for i in node.inputs]
            folded[node.out.id] = node.op.forward(np, *operands, **node.attrs)
            continue
        lowering = getattr(node.op, "onnx", None)
        if lowering is None:
            raise ExportError(
                f"op {node.op.name} (in layer {layer}) has no ONNX lowering, so this model "
                "cannot be exported to ONNX"
            )
        # A Python number takes the dtype of the op's result (of its operands for a test).
        dtype = node.out.dtype if node.out.dtype.kind != "b" else values[-1].dtype
        inputs = [_operand(b, i, names, folded, dtype) for i in node.inputs]
        attrs = _batch_attrs(node.attrs, other.attrs, node.op.name, layer)
        names[node.out.id] = lowering(b, inputs, **attrs)
        b.shapes[names[node.out.id]] = node.out.shape
    output = graph.outputs["output"]
    if output.id in folded:
        raise ExportError("the model's output does not depend on its input")
    return names[output.id]


def _operand(b: OnnxBuilder, x: Any, names, folded, dtype) -> str:
    if isinstance(x, Value):
        if x.id not in names:
            names[x.id] = b.const(folded[x.id], name=b.fresh("weight"))
        return names[x.id]
    return b.const(x, dtype)


def _batch_attrs(attrs: dict, twin: dict, op: str, layer: str) -> dict:
    """`attrs` with each shape that grows with the batch as a BatchShape."""
    out = {}
    small, large = TRACE_BATCHES
    for key, value in attrs.items():
        other = twin[key]
        if value == other:
            out[key] = value
            continue
        if not (isinstance(value, tuple) and len(value) == len(other)):
            raise ExportError(f"op {op} in {layer}: its {key} depends on the batch size")
        per_sample = []
        for a, c in zip(value, other, strict=True):
            k = (c - a) // (large - small) if isinstance(a, int) else None
            if a != c and (k is None or a != k * small or c != k * large):
                raise ExportError(
                    f"op {op} in {layer}: its {key} {value} does not grow in proportion to "
                    "the batch size"
                )
            per_sample.append(0 if a == c else k)
        out[key] = BatchShape(value, per_sample)
    return out
