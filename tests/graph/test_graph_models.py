"""Graph mode against eager mode, bit for bit, on the model forms beyond a layer list: a DAG
of blocks with concat and add joins, and models written in Python (residual, branches)."""

from pathlib import Path

import numpy as np
import pytest

from trainctl import backend
from trainctl.config import load_config, parse_config
from trainctl.train.components import build_components

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHORT = ["data.batch_size=16", "data.val_split=0", "data.test_split=0"]

# Dropout and BatchNorm in blocks, an add and a concat skip: random draws and running
# statistics must match too.
BLOCKS = """
name: blocks-state
seed: 5
data: {dataset: digits}
model:
  blocks:
    down: {layers: [{conv2d: {out: 4, padding: 1}}, batch_norm, relu]}
    low: {layers: [{max_pool2d: {kernel: 2}}, {conv2d: {out: 4, padding: 1}}, relu]}
    up: {layers: [{upsample2d: {scale: 2}}, {dropout: {p: 0.3}}]}
    same: {inputs: [down, up], join: add}
    skip: {inputs: [down, same], join: concat, layers: [flatten, {dropout: {p: 0.2}}]}
    head: {layers: [{linear: {out: 10}}]}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
"""


def _run(config, mode: str, steps: int = 4):
    components = build_components(config)
    loader = components.loader("train", training=True)
    step = components.make_step(mode)
    losses = []
    for inputs, targets in loader.epoch(0):
        losses.append(step.train(inputs, components.prepare_targets(targets)))
        if len(losses) == steps:
            break
    return {
        "losses": np.array(losses),
        "state": components.model.state_dict(),
        "optimizer": components.optimizer.state_dict()["state"],
        "counter": backend.default_generator.counter,
        "outputs": step.evaluate(inputs),
    }


def _assert_identical(eager, graph):
    np.testing.assert_array_equal(graph["losses"], eager["losses"])
    assert graph["state"].keys() == eager["state"].keys()
    for name, value in eager["state"].items():
        np.testing.assert_array_equal(graph["state"][name], value, err_msg=name)
    for index, entry in eager["optimizer"].items():
        for name, value in entry.items():
            np.testing.assert_array_equal(graph["optimizer"][index][name], value)
    assert graph["counter"] == eager["counter"]
    np.testing.assert_array_equal(graph["outputs"], eager["outputs"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: load_config(CONFIGS / "digits_inception.yaml", SHORT),
        lambda: load_config(CONFIGS / "digits_python.yaml", SHORT),
        lambda: load_config(CONFIGS / "digits_unet.yaml", SHORT),
        lambda: parse_config(BLOCKS, "blocks.yaml", SHORT),
    ],
    ids=["inception", "python_residual_cnn", "unet", "blocks_dropout_batchnorm"],
)
def test_graph_mode_matches_eager_bit_for_bit(make):
    eager = _run(make(), "eager")
    graph = _run(make(), "graph")
    assert np.all(np.isfinite(eager["losses"])) and eager["losses"][0] != eager["losses"][-1]
    _assert_identical(eager, graph)


def test_a_python_model_with_a_branch_and_concat(tmp_path):
    (tmp_path / "nets.py").write_text(
        "from trainctl import nn\n"
        "from trainctl.autograd import ops\n\n\n"
        "class TwoPaths(nn.Module):\n"
        "    def __init__(self, input_shape, hidden):\n"
        "        super().__init__()\n"
        "        self.flat = nn.Flatten()\n"
        "        features = input_shape[0] * input_shape[1] * input_shape[2]\n"
        "        self.left = nn.Linear(features, hidden)\n"
        "        self.right = nn.Sequential(nn.Linear(features, hidden), nn.Dropout(0.2))\n"
        "        self.norm = nn.BatchNorm1d(2 * hidden)\n"
        "        self.out = nn.Linear(2 * hidden, 10)\n\n"
        "    def forward(self, x):\n"
        "        x = self.flat(x)\n"
        "        both = ops.concatenate([ops.relu(self.left(x)), ops.tanh(self.right(x))], -1)\n"
        "        return self.out(self.norm(both))\n"
    )
    text = "data: {dataset: digits}\nmodel: {python: nets.py:TwoPaths, args: {hidden: 6}}\n"
    make = lambda: parse_config(text, "m.yaml", SHORT, folder=tmp_path)  # noqa: E731
    _assert_identical(_run(make(), "eager"), _run(make(), "graph"))
