"""The model's inference graph in the TensorBoard events (the Graphs tab)."""

import numpy as np
import pytest

from trainctl import backend
from trainctl.autograd import tensor
from trainctl.autograd.graph import TracingError
from trainctl.config import parse_config
from trainctl.nn import Module
from trainctl.nn.layers import BatchNorm1d, Dropout, Flatten, Linear, ReLU, Residual, Sequential
from trainctl.train.model_graph import graph_def, trace_inference
from trainctl.train.progress import QuietReporter
from trainctl.train.trainer import TrainOptions, train

graph_pb2 = pytest.importorskip("tensorboard.compat.proto.graph_pb2")

CPU = backend.get_device("cpu")


def model():
    body = Sequential(Linear(16, 16), ReLU())
    return Sequential(Flatten(), Linear(12, 16), BatchNorm1d(16), Dropout(0.5), Residual(body),
                      Linear(16, 3))  # fmt: skip


def parsed(inference) -> dict:
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(graph_def(inference))
    return {node.name: node for node in graph.node}


def test_nodes_are_named_by_layer_and_every_input_resolves():
    nodes = parsed(trace_inference(model(), (5, 3, 4), np.float32, CPU))
    assert nodes["inputs"].op == "Placeholder"
    assert nodes["1_Linear/weight"].op == "Variable"
    assert nodes["2_BatchNorm1d/running_mean"].op == "Buffer"
    assert nodes["4_Residual/body/0_Linear/bias"].op == "Variable"
    assert any(n.startswith("4_Residual/body/1_ReLU/relu_") for n in nodes)
    for node in nodes.values():
        for source in node.input:
            assert source in nodes, f"{node.name} reads {source}, which is not a node"
    output = nodes["output"]
    shape = [d.size for d in output.attr["_output_shapes"].list.shape[0].dim]
    assert shape == [5, 3] and output.attr["dtype"].type == 1  # DT_FLOAT


def test_the_graph_is_the_eval_mode_forward():
    """No dropout node, and BatchNorm reads its running statistics, not the batch's."""
    net = model()
    nodes = parsed(trace_inference(net, (5, 12), np.float32, CPU))
    ops = {node.op for node in nodes.values()}
    assert not any("dropout" in op for op in ops)
    readers = [n for n in nodes.values() if "2_BatchNorm1d/running_mean" in n.input]
    assert readers, "BatchNorm in eval mode reads its running mean"
    assert net.training, "the model is left in the mode it was in"


def test_tracing_leaves_the_model_as_it_was_even_when_it_fails():
    class Branchy(Module):
        def __init__(self):
            super().__init__()
            self.inner = Linear(4, 2)

        def forward(self, x):
            y = self.inner(x)
            return y if y.sum() > 0 else -y

    net = Branchy()
    net.eval()
    with pytest.raises(TracingError, match="data-dependent control flow"):
        trace_inference(net, (2, 4), np.float32, CPU)
    assert not net.training
    assert all("forward" not in m.__dict__ for _, m in net.named_modules())


CONFIG = """
name: graph-events
data: {dataset: digits, batch_size: 32}
model: {layers: [flatten, {linear: {out: 8}}, relu, {linear: {out: 10}}]}
optimizer: {name: sgd, lr: 0.1}
train: {max_steps: 3}
"""


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_training_writes_the_graph_tensorboard_reads(tmp_path, mode):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    config = parse_config(CONFIG, "test.yaml", [f"mode={mode}"])
    result = train(config, TrainOptions(runs_root=tmp_path), QuietReporter())
    events = accumulator.EventAccumulator(str(result.run.path / "tensorboard"))
    events.Reload()
    assert events.Tags()["graph"]
    names = {node.name for node in events.Graph().node}
    assert {"inputs", "1_Linear/weight", "3_Linear/bias", "output"} <= names
    assert "train/loss" in events.Tags()["scalars"]


def test_tracing_keeps_the_forwards_check_numerics_wrapped():
    """The trainer writes the graph after check_numerics scoped the layers: they stay scoped."""
    from trainctl.train.numerics import LayerScopes

    net = model()
    scopes = LayerScopes(net)
    wrapped = {path: m.__dict__["forward"] for path, m in net.named_modules() if path}
    trace_inference(net, (2, 12), np.float32, CPU)
    assert {path: m.__dict__["forward"] for path, m in net.named_modules() if path} == wrapped
    net(tensor(np.ones((2, 12), np.float32)))
    assert scopes.current == ""
