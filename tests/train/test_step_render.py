"""render_graph: what `trainctl graph CONFIG --stage ... --format ...` prints."""

import re

import numpy as np
import pytest

from trainctl import nn, optim
from trainctl.autograd.step_graph import StepError
from trainctl.backend import CPU, default_generator, manual_seed
from trainctl.graph_view import render_graph


def _render(**options):
    manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 8), nn.Dropout(0.2), nn.ReLU(), nn.Linear(8, 3)
    )
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    counter = default_generator.counter
    text = render_graph(
        model, nn.cross_entropy, opt, (4, 3, 4), (4,), np.int64, device=CPU, dtype=np.float32,
        **options,
    )  # fmt: skip
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])  # nothing ran
    assert opt.step_count == 0 and not opt.state and default_generator.counter == counter
    return text


def _header(text, comment="# "):
    lines = [line[len(comment) :] for line in text.splitlines() if line.startswith(comment)]
    return lines


def test_the_header_counts_nodes_per_pass_and_buffers():
    header = _header(_render())
    assert (
        header[0] == "training step of Sequential: inputs float32[4, 3, 4], targets int64[4], cpu"
    )
    traced = int(re.match(r"traced: (\d+) nodes", header[1]).group(1))
    passes = [re.match(r"pass (\w+): (\d+) -> (\d+) nodes", line) for line in header[2:-2]]
    assert all(passes) and int(passes[0].group(2)) == traced
    for previous, current in zip(passes, passes[1:], strict=False):
        assert previous.group(3) == current.group(2)
    optimized = int(re.match(r"optimized: (\d+) nodes", header[-2]).group(1))
    assert optimized == int(passes[-1].group(3)) < traced
    buffers, size = map(int, re.match(r"buffers: (\d+), (\d+) bytes", header[-1]).groups())
    assert buffers > 0 and size > 4 * buffers


def test_text_lists_one_line_per_node():
    text = _render(fmt="text")
    optimized = int(re.search(r"optimized: (\d+) nodes", text).group(1))
    nodes = [line for line in text.splitlines() if re.match(r"%[\w:.]+ = \w+\(", line)]
    assert len(nodes) == optimized
    # the parameters share one flat array, each a view of it
    flat = "state %flat:param:1.weight..param:4.bias: float32[131] = param:1.weight[12, 8]@0"
    assert flat in text
    assert re.search(r"^%param:1.weight = reshape\(%\d+, shape=\(12, 8\)\)", text, re.M)
    assert "output loss = %" in text and "output flat:param:1.weight..param:4.bias = %" in text


def test_the_traced_stage_shows_the_graph_as_recorded():
    text = _render(stage="traced")
    traced = int(re.search(r"traced: (\d+) nodes", text).group(1))
    nodes = [line for line in text.splitlines() if re.match(r"%[\w:.]+ = \w+\(", line)]
    assert len(nodes) == traced
    assert "dropout(" in text and "softmax_cross_entropy(" in text  # not lowered yet


def test_dot_is_a_graphviz_digraph():
    dot = _render(fmt="dot")
    assert dot.startswith("// training step") and "digraph step {" in dot
    assert dot.rstrip().endswith("}")
    assert dot.count("->") > 10


def test_code_is_the_generated_python():
    code = _render(fmt="code")
    assert "def step(s_lr, s_grad_factor, seed0, counter0, input0=input0, input1=input1):" in code
    assert "xp.matmul(" in code and "out=" in code
    compile(code, "<rendered>", "exec")  # a valid module
    # The update is traced over concatenations (as eager opt.step() runs it), but the flat
    # state stays flat, each gradient is computed into its slice and the update is written in
    # place: nothing is copied.
    assert "concatenate" not in code and "copyto" not in code
    traced = _render(fmt="code", stage="traced")
    assert "Matmul.forward(xp, " in traced and "out=" not in traced.split("def step")[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stage": "lowered"}, "unknown stage 'lowered': expected one of traced, optimized"),
        ({"fmt": "svg"}, "unknown format 'svg': expected one of text, dot, code"),
    ],
)
def test_bad_stage_or_format_is_a_clear_error(options, message):
    with pytest.raises(StepError, match=message):
        _render(**options)
