"""Graph mode facing Python control flow on values: guards, retraces, the bounded cache and
its eager fallback, all bit for bit with eager mode (`autograd/guards.py`)."""

import logging
from pathlib import Path

import numpy as np
import pytest

from trainctl import nn, optim
from trainctl.autograd import ops
from trainctl.autograd.graph import TracingError
from trainctl.backend import CPU, manual_seed
from trainctl.config import load_config
from trainctl.graph_view import render_graph
from trainctl.nn import Module
from trainctl.train.components import build_components
from trainctl.train.model_graph import trace_inference
from trainctl.train.step import make_step

ROOT = Path(__file__).parents[2]
RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 3)).astype(np.float32)
Y = RNG.integers(0, 2, 8)


class SignBranch(Module):
    """Two heads, chosen per batch by the sign of the batch mean."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.body, self.drop = nn.Linear(3, 4), nn.Dropout(dropout)
        self.up, self.down = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        h = self.drop(ops.relu(self.body(x)))
        if (h.mean() - 0.3) * x.mean() > 0:  # depends on the batch, the weights and the mask
            return self.up(h)
        return self.down(h) * 2.0


class HalveWhileLarge(Module):
    """A `while` on a value: the loop count depends on the batch."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)

    def forward(self, x):
        h = self.layer(x)
        while h.abs().max() > 1.0:
            h = h * 0.5
        return h


def run(model_class, batches, mode, evaluate=False, **options):
    """Losses (and eval outputs) of `batches`, the final weights and the step's stats."""
    manual_seed(0)
    model = model_class()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = make_step(mode, model, nn.cross_entropy, optimizer, device=CPU, dtype=np.float32,
                     **options)  # fmt: skip
    results = []
    for x, y in batches:
        results.append(step.train(x, y))
        if evaluate:
            results.append(step.evaluate(x).tobytes())
    weights = {name: p.data.copy() for name, p in model.named_parameters()}
    return results, weights, step.stats()


def assert_same(eager, graph):
    assert graph[0] == eager[0]
    for name, weight in eager[1].items():
        assert np.array_equal(graph[1][name], weight), name


def signed_batches(signs):
    return [(X * sign, Y) for sign in signs]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_a_branch_that_flips_both_ways_matches_eager_bit_for_bit(dropout):
    """With dropout before the `if`, the guard draws the step's own mask without advancing
    the generator: checking never changes what the step computes."""
    batches = signed_batches([1, 1, -1, -1, 1, -1, 1, 1, -1, 1])

    def model():
        return SignBranch(dropout)

    eager = run(model, batches, "eager", evaluate=True)
    graph = run(model, batches, "graph", evaluate=True)
    assert_same(eager, graph)
    stats = graph[2]
    train = [s for s in stats["signatures"] if s["kind"] == "train"]
    assert len(train) == 2  # one trace per branch, kept and reused
    assert {s["guards"][0].endswith("== True") for s in train} == {True, False}
    assert stats["eager_fallbacks"] == 0


def test_guard_checks_and_misses_are_counted():
    """Each replay checks the last trace used first; a miss checks the next, or traces."""
    batches = signed_batches([1, 1, -1, -1, 1])
    _, _, stats = run(SignBranch, batches, "graph")
    # step 1 traces (no check); 2: hit; 3: miss, trace; 4: hit; 5: miss, then hit
    assert (stats["traces"], stats["guard_checks"], stats["guard_misses"]) == (2, 5, 2)


def test_past_max_traces_the_step_runs_eagerly_once_told_and_still_bit_for_bit(caplog):
    batches = signed_batches([1, -1, 1, -1, -1])
    with caplog.at_level(logging.WARNING, logger="trainctl.graph"):
        graph = run(SignBranch, batches, "graph", evaluate=True, max_traces=1)
    eager = run(SignBranch, batches, "eager", evaluate=True)
    assert_same(eager, graph)
    # one training and one evaluation trace; 3 training and 3 evaluation steps fell back
    assert (graph[2]["traces"], graph[2]["eager_fallbacks"]) == (2, 6)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "graph.max_traces=1" in message and "--set graph.max_traces=N" in message
    assert "runs eagerly" in message


def test_a_while_loop_unrolls_once_per_loop_count_with_a_guard_per_iteration():
    batches = [(X * scale, Y) for scale in (0.1, 3.0, 0.1, 10.0, 3.0, 10.0)]
    eager = run(HalveWhileLarge, batches, "eager")
    graph = run(HalveWhileLarge, batches, "graph")
    assert_same(eager, graph)
    guards = [s["guards"] for s in graph[2]["signatures"]]
    assert len(guards) == graph[2]["traces"] == 3  # three loop counts
    for lines in guards:  # the loop ran until its condition was False, once
        assert [line.endswith("== True") for line in lines] == [True] * (len(lines) - 1) + [False]
    assert sorted(len(lines) for lines in guards) == sorted(set(len(g) for g in guards))


def test_tracing_without_data_still_refuses_a_branch_on_a_value():
    """Only a step traced with its batch can read a value: the model summary and export
    trace shapes alone, and say so."""
    with pytest.raises(TracingError, match=r"Python `if`/`while`/bool\(\) .* = greater\("):
        trace_inference(SignBranch(), (8, 3), np.float32, CPU)


def test_render_graph_lists_the_guards_of_the_batch_it_was_given():
    model = SignBranch()
    text = render_graph(model, nn.cross_entropy, optim.SGD(model.parameters(), lr=0.1),
                        X.shape, Y.shape, Y.dtype, device=CPU, dtype=np.float32,
                        batch=(X, Y))  # fmt: skip
    assert "# guards: 1, checked before each replay" in text
    expected = "True" if (np.maximum(X @ model.body.weight.data + model.body.bias.data, 0).mean()
                          - 0.3) * X.mean() > 0 else "False"  # fmt: skip
    assert "# guard 1: bool(greater(mul(sub(mul(sum(relu(%" in text
    assert f") == {expected}\n" in text


def test_the_example_model_flips_during_training_and_stays_bit_for_bit():
    """configs/digits_branching.yaml: its branch flips both ways within 120 steps."""
    config = load_config(str(ROOT / "configs" / "digits_branching.yaml"), ["threads=1"])
    results = []
    for mode in ("eager", "graph"):
        parts = build_components(config)
        step = parts.make_step(mode)
        loader = parts.loader("train", training=True)
        batches = [batch for epoch in range(3) for batch in loader.epoch(epoch)][:120]
        losses = [step.train(x, parts.prepare_targets(y)) for x, y in batches]
        weights = {k: p.data.copy() for k, p in parts.model.named_parameters()}
        results.append((losses, weights, step.stats()))
    assert_same(results[0], results[1])
    stats = results[1][2]
    outcomes = {s["guards"][0].rsplit(" ", 1)[1] for s in stats["signatures"]}
    assert outcomes == {"True", "False"}
    assert stats["guard_misses"] >= 2 and stats["eager_fallbacks"] == 0
