"""Every op's ONNX lowering, run by onnxruntime, against the op's own forward: each case of
the op table traced, lowered and run (float32, and the integer inputs as they are)."""

import numpy as np
import pytest
from autograd_cases import FORWARD_CASES, GRAD_CASES, Case

from trainctl import backend
from trainctl.autograd import no_grad, ops, tensor
from trainctl.autograd.graph import Value, tracing
from trainctl.autograd.ops import Spec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

from trainctl.export.onnx_builder import OnnxBuilder  # noqa: E402
from trainctl.export.onnx_export import OPSET, lower_graph  # noqa: E402

# Ops that only a training step records (gradients, losses, dropout's training mode,
# BatchNorm's batch statistics, the data-parallel Allreduces of gradients and of synchronised
# BatchNorm's batch statistics): an inference graph never holds them, so they need no lowering.
TRAINING_ONLY = {
    "col2im", "conv2d_input_grad", "conv2d_weight_grad", "unslice", "max_pool2d_grad",
    "scatter_add_rows", "one_hot", "softmax_cross_entropy", "dropout", "allreduce_mean",
    "allreduce_sum", "channel_sum", "channel_center", "channel_dot", "batch_norm_train",
    "batch_norm_train_grad",
}  # fmt: skip

CASES = [case for table in (GRAD_CASES, FORWARD_CASES) for cases in table.values()
         for case in cases]  # fmt: skip
CPU = backend.get_device("cpu")


def test_every_op_has_a_lowering_or_is_training_only():
    missing = {name for name, op in ops.REGISTRY.items() if not hasattr(op, "onnx")}
    assert missing == TRAINING_ONLY


def as_inputs(case: Case) -> list[np.ndarray]:
    return [a.astype(np.float32) if a.dtype.kind == "f" else a for a in case.arrays()]


def traced(case: Case, arrays):
    with tracing(CPU) as tracer, no_grad():
        values = [tracer.graph.add_input(f"x{i}", Spec(a.shape, a.dtype))
                  for i, a in enumerate(arrays)]  # fmt: skip
        out = case.fn(*values)
        tracer.graph.outputs["output"] = out
    return tracer.graph, out


def run_onnx(graph, out: Value, arrays) -> np.ndarray:
    b = OnnxBuilder(batch="x0")
    names = {}
    for value, array in zip(graph.inputs, arrays, strict=True):
        names[value.id] = value.name
        b.shapes[value.name] = array.shape
    result = lower_graph(b, graph, graph, names, {})
    b.nodes.append(helper.make_node("Identity", [result], ["out"]))
    model = helper.make_model(
        helper.make_graph(
            b.nodes, "case",
            [helper.make_tensor_value_info(v.name, b.onnx_type(v.dtype), v.shape)
             for v in graph.inputs],
            [helper.make_tensor_value_info("out", b.onnx_type(out.dtype), out.shape)],
            b.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )  # fmt: skip
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString())
    return session.run(None, {v.name: a for v, a in zip(graph.inputs, arrays, strict=True)})[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_lowering_matches_the_forward(case: Case):
    arrays = as_inputs(case)
    graph, out = traced(case, arrays)
    if not isinstance(out, Value) or any(n.op.name in TRAINING_ONLY for n in graph.nodes):
        pytest.skip("not an inference computation")
    expected = case.fn(*(tensor(a) for a in arrays)).numpy()
    got = run_onnx(graph, out, arrays)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
