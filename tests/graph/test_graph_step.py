"""GraphStep: one trace per input signature, cached; state written back where eager mode puts
it; statistics for the run folder; steady-state steps that allocate (almost) nothing."""

import logging
import tracemalloc

import numpy as np
import pytest
from graph_helpers import batches_of

from trainctl import nn, optim
from trainctl.autograd import chunk_threads
from trainctl.autograd.graph import TracingError
from trainctl.autograd.passes import PassError
from trainctl.backend import CPU, default_generator, manual_seed
from trainctl.train.step import GraphStep, StepError, make_step


def _setup(dropout=0.0, optimizer=None):
    manual_seed(0)
    layers = [nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    model = nn.Sequential(*layers, nn.Linear(8, 3))
    opt = (optimizer or (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)))(model.parameters())
    step = make_step("graph", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    return model, opt, step


def _batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def test_make_step_builds_a_graph_step():
    _, _, step = _setup()
    assert isinstance(step, GraphStep) and step.traces == 0


def test_a_new_signature_retraces_once_and_says_so(caplog):
    _, _, step = _setup()
    full, partial = _batch(5), _batch(3)
    with caplog.at_level(logging.DEBUG, logger="trainctl.graph"):
        step.train(*full)
        step.train(*full)
        assert step.traces == 1
        step.train(*partial)  # the last partial batch of an epoch
        assert step.traces == 2
        step.train(*full)
        step.train(*partial)
        step.train(full[0].astype(np.float32), full[1])  # same signature after the cast
        assert step.traces == 2
        step.evaluate(full[0])
        step.evaluate(full[0])
        assert step.traces == 3
    messages = [r.getMessage() for r in caplog.records if "tracing" in r.getMessage()]
    assert len(messages) == 3
    assert "training step for input signature ((3, 6)" in messages[1]
    assert "evaluation step" in messages[2]


def test_a_batch_of_the_traced_dtype_is_read_in_place_and_any_other_is_copied():
    results = []
    for float64 in (False, True):
        _, _, step = _setup()
        x, y = _batch()
        x = x if float64 else x.astype(np.float32)
        step.train(x, y)
        (compiled,) = step.traced.compiled
        own_inputs = compiled.program.inputs[0]
        own_inputs.fill(np.nan)
        results.append(step.train(x, y))
        copied = not np.isnan(own_inputs).any()
        assert copied == float64
        if copied:
            np.testing.assert_array_equal(own_inputs, x.astype(np.float32))
    assert results[0] == results[1]  # float64 data is cast to the float32 the step traced


def test_state_lands_where_opt_step_puts_it():
    model, opt, step = _setup()
    x, y = _batch()
    weight = model[0].weight
    step.train(x, y)
    data = weight.data
    step.train(x, y)
    assert model[0].weight is weight and weight.data is data  # updated in place
    assert opt.step_count == 2
    assert sorted(opt.state) == list(range(6))
    assert set(opt.state[0]) == {"momentum_buffer"}
    assert isinstance(model[1].running_mean.numpy(), np.ndarray)
    assert model[1]._buffers["running_mean"] is model[1].running_mean
    assert not np.allclose(model[1].running_mean.numpy(), 0)


def test_loaded_state_is_picked_up_before_the_next_replay():
    model, opt, step = _setup()
    x, y = _batch()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    opt_before = opt.state_dict()
    first = step.train(x, y)
    step.train(x, y)
    model.load_state_dict(before)
    fresh = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(opt_before)
    opt.load_state_dict(opt_before)
    assert step.train(x, y) == first


def test_the_generator_counter_moves_as_in_eager_mode():
    _, _, step = _setup(dropout=0.5)
    x, y = _batch()
    start = default_generator.counter
    step.train(x, y)
    step.train(x, y)
    assert default_generator.counter == start + 2
    step.evaluate(x)
    assert default_generator.counter == start + 2


def test_stats_report_traces_passes_and_buffers():
    _, _, step = _setup()
    step.train(*_batch())
    stats = step.stats()
    assert stats["traces"] == 1 and stats["trace_seconds"] > 0 and stats["compile_seconds"] > 0
    (signature,) = stats["signatures"]
    assert signature["kind"] == "train" and signature["shapes"] == [[5, 6], [5]]
    assert signature["nodes_traced"] > signature["nodes_optimized"] > 0
    passes = signature["passes"]
    assert passes[0]["before"] == signature["nodes_traced"]
    assert passes[-1]["after"] == signature["nodes_optimized"]
    assert signature["buffers"] > 0 and signature["buffer_bytes"] >= 4 * signature["buffers"]


def test_a_loss_that_is_not_traced_is_an_error():
    manual_seed(0)
    model = nn.Linear(6, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    from trainctl.autograd import Tensor

    step = make_step(
        "graph", model, lambda out, y: Tensor(np.float32(1)), opt, device=CPU, dtype=np.float32
    )
    with pytest.raises(TracingError, match="loss function must return a value"):
        step.train(*_batch())


def test_unknown_pass_names_fail_when_the_step_is_made():
    manual_seed(0)
    model = nn.Linear(6, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(PassError, match="unknown passes 'nope'"):
        make_step(
            "graph",
            model,
            nn.cross_entropy,
            opt,
            device=CPU,
            dtype=np.float32,
            disabled_passes=("nope",),
        )
    with pytest.raises(StepError, match="unknown mode"):
        make_step("jit", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)


def _peak_bytes(step, x, y, steps):
    """The most memory a run of `steps` steps holds above where it started."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(steps):
            step.train(x, y)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, current - start


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_steady_state_step_allocates_a_small_constant(monkeypatch, dropout):
    """After the first step, replays write into preallocated buffers. What a step still
    allocates is a few Python objects and NumPy's own iterator buffer for broadcasting ufuncs
    (8192 elements, freed at once): the same for 3 steps as for 30 and for batch 64 as for
    256, nothing is kept, and eager mode needs many times more. (Kernels shared out over
    threads, from 1M elements, also make a future and a closure a call, freed at once, whose
    peak varies with the threads' timing: this model is below that size, as it is here.)"""
    monkeypatch.setattr(chunk_threads, "MIN_SHARED_ELEMENTS", 1 << 20)
    manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(784, 128), nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    model = nn.Sequential(*layers, nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    graph = make_step("graph", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    peaks = []
    for batch in (64, 256):
        x, y = batches_of((batch, 28, 28, 1), "labels", n=1, classes=10)[0]
        for _ in range(40):  # NumPy's and Python's own caches settle first
            graph.train(x, y)
        peak_few, kept_few = _peak_bytes(graph, x, y, 3)
        peak_many, kept_many = _peak_bytes(graph, x, y, 30)
        assert abs(peak_many - peak_few) < 2048
        assert kept_few < 2048 and kept_many < 2048  # nothing accumulates from step to step
        peaks.append(peak_many)
    assert abs(peaks[1] - peaks[0]) < 4096  # independent of the batch size, too
    assert peaks[0] < 64 * 1024
    eager = make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    eager.train(x, y)
    eager_peak, _ = _peak_bytes(eager, x, y, 3)
    assert eager_peak > 10 * max(peaks)


def test_evaluating_before_training_moves_the_state_into_flat_arrays():
    """The training step keeps parameters in one flat array; an evaluation compiled before it
    had arrays of its own, so it is compiled again (one more trace) and sees the updates."""
    model, opt, step = _setup()
    x, y = _batch()
    before = step.evaluate(x)
    step.train(x, y)
    assert step.traces == 2
    after = step.evaluate(x)
    assert step.traces == 3
    assert not np.allclose(before, after)
    eager_model, eager_opt, _ = _setup()
    eager = make_step(
        "eager", eager_model, nn.cross_entropy, eager_opt, device=CPU, dtype=np.float32
    )
    eager.evaluate(x)
    eager.train(x, y)
    np.testing.assert_allclose(after, eager.evaluate(x), rtol=1e-6)
    flat = step.traced.storage.arrays["param:0.weight"].base
    assert flat is not None and model[0].weight.data.base is flat
