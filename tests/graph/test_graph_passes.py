"""Each pass on small hand-built graphs: it does what it claims, nothing else, and the graph
computes the same numbers before and after."""

import numpy as np
import pytest
from graph_helpers import run_graph

from trainctl.autograd import ops
from trainctl.autograd.graph import Graph, HostScalar, RngKey
from trainctl.autograd.kernels import FUSED, SUB_AT, UNIFORM
from trainctl.autograd.ops import Spec
from trainctl.autograd.passes import (
    PASSES,
    PIPELINE,
    PassError,
    common_subexpressions,
    dead_code,
    flatten_updates,
    fold_constants,
    fuse_elementwise,
    lower_dropout,
    lower_softmax,
    optimize,
    simplify,
)
from trainctl.backend import CPU

F32 = np.dtype(np.float32)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3)).astype(np.float32)
Y = RNG.standard_normal((4, 3)).astype(np.float32)


def _graph(*shapes):
    graph = Graph(CPU)
    inputs = [graph.add_input(f"x{i}", Spec(shape, F32)) for i, shape in enumerate(shapes)]
    return graph, inputs


def _ops(graph):
    return [node.op.name for node in graph.nodes]


def _same_numbers(before, after, *arrays):
    for a, b in zip(run_graph(before, *arrays), run_graph(after, *arrays), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- dead code


def test_dead_code_drops_only_what_no_output_needs():
    graph, (x,) = _graph((4, 3))
    kept = ops.exp(x)
    ops.tanh(x) * 2.0  # never used
    graph.outputs["out"] = kept + 1.0
    after = dead_code(graph)
    assert _ops(graph) == ["exp", "tanh", "mul", "add"]
    assert _ops(after) == ["exp", "add"]
    assert [n.out for n in after.nodes] == [graph.nodes[0].out, graph.nodes[3].out]
    _same_numbers(graph, after, X)


def test_dead_code_keeps_a_graph_without_dead_nodes():
    graph, (x,) = _graph((4, 3))
    graph.outputs["out"] = ops.exp(x) * 2.0
    assert dead_code(graph).nodes == graph.nodes


# ---------------------------------------------------------------- common subexpressions


def test_cse_merges_identical_nodes_and_redirects_their_users():
    graph, (x,) = _graph((4, 3))
    a, b = ops.exp(x), ops.exp(x)
    graph.outputs["out"] = a * b
    after = common_subexpressions(graph)
    assert _ops(after) == ["exp", "mul"]
    assert after.nodes[1].inputs == (a, a)
    _same_numbers(graph, after, X)


def test_cse_keeps_nodes_that_differ_in_attributes_inputs_or_literals():
    graph, (x, y) = _graph((4, 3), (4, 3))
    graph.outputs.update(
        s0=x.sum(axis=0), s1=x.sum(axis=1), ex=ops.exp(x), ey=ops.exp(y), m1=x * 1, m2=x * 2
    )
    assert len(common_subexpressions(graph).nodes) == len(graph.nodes)


def test_cse_merges_draws_with_the_same_key_only():
    graph, (x,) = _graph((4, 3))
    a = ops.dropout(x, 0.5, RngKey(0, 0))
    b = ops.dropout(x, 0.5, RngKey(0, 0))
    c = ops.dropout(x, 0.5, RngKey(0, 1))
    graph.outputs.update(a=a, b=b, c=c)
    after = common_subexpressions(graph)
    assert len(after.nodes) == 2
    assert after.outputs["a"] is after.outputs["b"] is a and after.outputs["c"] is c


def test_cse_merges_equal_small_constants():
    graph, (x,) = _graph((4, 3))
    one = graph.constant(np.full((3,), 2.0, np.float32))
    two = graph.constant(np.full((3,), 2.0, np.float32))
    graph.outputs["out"] = x * one + x * two
    after = common_subexpressions(graph)
    assert _ops(after) == ["mul", "add"]
    _same_numbers(graph, after, X)


# ---------------------------------------------------------------- constant folding


def test_fold_runs_constant_nodes_once_with_the_ops_forward():
    graph, (x,) = _graph((4, 3))
    c = graph.constant(np.arange(3, dtype=np.float32))
    folded_part = ops.exp(c) * 0.5
    graph.outputs["out"] = x + folded_part
    after = fold_constants(graph)
    assert _ops(after) == ["add"]
    constant = after.nodes[0].inputs[1]
    assert constant.array is not None
    np.testing.assert_array_equal(constant.array, np.exp(np.arange(3, dtype=np.float32)) * 0.5)
    _same_numbers(graph, after, X)


def test_fold_leaves_draws_inputs_and_host_numbers_alone():
    graph, (x,) = _graph((4, 3))
    c = graph.constant(np.ones((4, 3), np.float32))
    lr = graph.add_scalar("lr", 0.1)
    graph.outputs.update(
        drop=ops.dropout(c, 0.5, RngKey(0, 0)), scaled=c * lr, plain=x * 2.0, host=lr * 2.0
    )
    assert _ops(fold_constants(graph)) == _ops(graph)


# ---------------------------------------------------------------- algebraic simplification


@pytest.mark.parametrize(
    "build",
    [
        lambda x: x * 1.0,
        lambda x: 1 * x,
        lambda x: x / 1.0,
        lambda x: x - 0.0,
        lambda x: ops.power(x, 1),
        lambda x: ops.neg(ops.neg(x)),
        lambda x: x.transpose(1, 0).transpose(1, 0),
        lambda x: x.reshape(3, 4).reshape(12).reshape(4, 3),
    ],
    ids=["x*1", "1*x", "x/1", "x-0", "x**1", "neg_neg", "transpose_twice", "reshape_chain"],
)
def test_simplify_removes_exact_identities(build):
    graph, (x,) = _graph((4, 3))
    graph.outputs["out"] = ops.exp(build(x))
    after = dead_code(simplify(graph))
    assert _ops(after) == ["exp"]
    assert after.nodes[0].inputs == (x,)
    _same_numbers(graph, after, X)


def test_simplify_merges_a_transpose_pair_and_a_reshape_pair():
    graph, (x,) = _graph((2, 3, 4))
    a = x.transpose(1, 0, 2).transpose(0, 2, 1)
    b = x.reshape(6, 4).reshape(4, 6)
    graph.outputs.update(a=ops.exp(a), b=ops.exp(b))
    after = dead_code(simplify(graph))
    assert sorted(_ops(after)) == ["exp", "exp", "reshape", "transpose"]
    transpose = next(n for n in after.nodes if n.op.name == "transpose")
    assert transpose.inputs == (x,) and transpose.attrs["axes"] == (1, 2, 0)
    _same_numbers(graph, after, RNG.standard_normal((2, 3, 4)).astype(np.float32))


@pytest.mark.parametrize(
    "build",
    [
        lambda g, x: x + 0.0,  # -0.0 + 0.0 is +0.0: not an identity bit for bit
        lambda g, x: x * g.constant(np.ones((2, 4, 3), np.float32)),  # x * 1 that broadcasts
        lambda g, x: x.transpose(1, 0).reshape(12).reshape(3, 4),  # reshape of a strided view
        lambda g, x: x * 1.5,
    ],
    ids=["x+0", "broadcasting_x*1", "strided_reshape", "x*1.5"],
)
def test_simplify_leaves_everything_else(build):
    graph, (x,) = _graph((4, 3))
    graph.outputs["out"] = build(graph, x)
    assert _ops(simplify(graph)) == _ops(graph)


# ---------------------------------------------------------------- lowering


def test_lower_dropout_computes_what_dropout_forward_computes():
    graph, (x,) = _graph((4, 3))
    graph.generators.append((None, 1))
    graph.outputs["out"] = ops.dropout(x, 0.25, RngKey(0, 0))
    after = lower_dropout(graph)
    assert _ops(after) == ["uniform", "greater_equal", "mul", "mul"]
    seed_and_counter = (5, 11)
    for plan in (False, True):
        from trainctl.autograd.compile import compile_graph

        program = compile_graph(after, {}, plan)
        program.inputs[0][...] = X
        (got,) = program.function(*seed_and_counter)
        want = ops.Dropout.forward(np, X, 0.25, seed_and_counter)
        np.testing.assert_array_equal(got, want)


def test_forward_and_backward_dropout_share_one_draw_after_cse():
    graph, (x, g) = _graph((4, 3), (4, 3))
    key = RngKey(0, 0)
    graph.outputs.update(y=ops.dropout(x, 0.5, key), gx=ops.dropout(g, 0.5, key))
    after = common_subexpressions(lower_dropout(graph))
    assert [node.op for node in after.nodes].count(UNIFORM) == 1


def test_lower_softmax_shares_the_exponentials_of_the_loss_and_its_gradient():
    graph, (logits,) = _graph((4, 3))
    labels = graph.add_input("labels", Spec((4,), np.dtype(np.int64)))
    loss = ops.softmax_cross_entropy(logits, labels)
    grad = ops.softmax(logits, 1) - ops.one_hot(labels, 3, F32)
    graph.outputs.update(loss=loss, grad=grad)
    after = dead_code(common_subexpressions(lower_softmax(graph)))
    names = _ops(after)
    assert names.count("exp") == 1 and names.count("max") == 1 and names.count("sum") == 1
    assert SUB_AT in [node.op for node in after.nodes]
    assert "softmax" not in names and "one_hot" not in names
    labels_value = np.array([0, 2, 1, 2])
    _same_numbers(graph, after, X, labels_value)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_lowered_losses_equal_the_fused_ops(smoothing):
    graph, (logits,) = _graph((4, 3))
    labels = graph.add_input("labels", Spec((4,), np.dtype(np.int64)))
    graph.outputs.update(
        loss=ops.softmax_cross_entropy(logits, labels, smoothing),
        log_probs=ops.log_softmax(logits, 0),
        probs=ops.softmax(logits, 0),
    )
    after = lower_softmax(graph)
    assert not {"softmax", "log_softmax", "softmax_cross_entropy"} & set(_ops(after))
    _same_numbers(graph, after, X, np.array([0, 2, 1, 2]))


def test_lower_softmax_keeps_a_broadcast_one_hot_subtraction():
    graph, (probs,) = _graph((4, 3))
    labels = graph.add_input("labels", Spec((4,), np.dtype(np.int64)))
    graph.outputs["out"] = probs - ops.one_hot(labels, 3, np.float64)  # another dtype
    assert _ops(lower_softmax(graph)) == _ops(graph)


# ---------------------------------------------------------------- fusion


def test_fuse_merges_a_chain_and_stops_at_shared_values():
    graph, (x, y) = _graph((4, 3), (4, 3))
    shared = ops.exp(x * 2.0)  # used twice: ends a chain
    graph.outputs["out"] = ops.tanh(shared + y) * shared
    after = fuse_elementwise(graph)
    assert [node.op for node in after.nodes] == [FUSED, FUSED]
    first, second = after.nodes
    assert [m.op.name for m in first.attrs["body"]] == ["mul", "exp"]
    assert [m.op.name for m in second.attrs["body"]] == ["add", "tanh", "mul"]
    assert second.inputs == (shared, y)
    for plan in (False, True):
        for a, b in zip(
            run_graph(graph, X, Y, plan_memory=plan),
            run_graph(after, X, Y, plan_memory=plan),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)


def test_fuse_does_not_cross_reductions_or_shape_changes():
    graph, (x, b) = _graph((4, 3), (3,))
    row = ops.exp(b) * 2.0  # shape (3,): not part of the (4, 3) chain it feeds
    graph.outputs["out"] = ops.exp(x + row).sum(axis=0) * 3.0
    after = fuse_elementwise(graph)
    assert _ops(after) == ["fused", "fused", "sum", "mul"]
    assert [m.op.name for m in after.nodes[1].attrs["body"]] == ["add", "exp"]


def test_fuse_keeps_a_fused_value_that_is_an_output():
    graph, (x,) = _graph((4, 3))
    inner = ops.exp(x)
    graph.outputs.update(inner=inner, out=inner * 2.0)
    assert _ops(fuse_elementwise(graph)) == ["exp", "mul"]


def test_fused_chains_with_host_numbers_run_in_place():
    graph, (p, buf, g) = _graph((4, 3), (4, 3), (4, 3))
    lr = graph.add_scalar("lr", 0.1)
    new_buf = 0.9 * buf + g
    graph.outputs.update(buf=new_buf, p=p - lr * new_buf)
    after = fuse_elementwise(graph)
    assert [node.op for node in after.nodes] == [FUSED, FUSED]
    assert isinstance(after.nodes[1].inputs[0], HostScalar)
    got = run_graph(after, X, Y, X * Y, scalars=(0.25,))
    want = run_graph(graph, X, Y, X * Y, scalars=(0.25,), plan_memory=False)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the pipeline


def test_optimize_records_each_pass_and_skips_disabled_ones():
    graph, (x,) = _graph((4, 3))
    graph.outputs["out"] = ops.exp(x * 1.0) + ops.exp(x * 1.0)
    optimized, records = optimize(graph, disabled=("fuse",))
    assert [r.name for r in records] == [name for name in PIPELINE if name != "fuse"]
    assert records[0].nodes_before == len(graph.nodes)
    assert all(r.nodes_after == records[i + 1].nodes_before for i, r in enumerate(records[:-1]))
    assert _ops(optimized) == ["exp", "add"]
    none, records = optimize(graph, disabled=tuple(PASSES))
    assert records == [] and none.nodes == graph.nodes


def test_optimize_rejects_unknown_pass_names():
    graph, _ = _graph((4, 3))
    message = r"unknown passes 'fusion': expected some of simplify, fold, "
    with pytest.raises(PassError, match=message):
        optimize(graph, disabled=("fusion",))


# ---------------------------------------------------------------- flat state


def _flat(values):
    return ops.concatenate([ops.reshape(v, (v.size,)) for v in values])


def _update_graph(shapes, order=None, unchanged=False):
    """As step_graph traces an update: p <- p - 0.5 * g over the concatenation p of state slots
    p_i of `shapes`, and g of the gradients g_i = x_i.sum(axis=0) (reductions, as gradients
    are), each p_i's new value the slice of the result at its place (`order` permutes which
    slice goes to which slot); an unchanging state slot m_i too when `unchanged`."""
    graph = Graph(CPU)
    xs = [graph.add_input(f"x{i}", Spec((2, *shape), F32)) for i, shape in enumerate(shapes)]
    params = [graph.add_state(f"param:p{i}", Spec(s, F32), None) for i, s in enumerate(shapes)]
    flat = _flat(params)
    new = flat - 0.5 * _flat([x.sum(axis=0) for x in xs])
    if unchanged:
        ms = [graph.add_state(f"opt:{i}.m", Spec(s, F32), None) for i, s in enumerate(shapes)]
        new = new * _flat(ms)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    order = order or range(len(shapes))
    for i, j in enumerate(order):
        part = new[int(offsets[j]) : int(offsets[j + 1])]
        graph.outputs[f"param:p{i}"] = ops.reshape(part, params[i].shape)
    return graph


def _run_with_state(graph, arrays, state):
    """Run once with state arrays laid out as GraphStep lays them out (flat slots: views)."""
    from trainctl.autograd.compile import compile_graph
    from trainctl.autograd.passes import FlatState

    slots = {}
    for slot in graph.state:
        if isinstance(slot.source, FlatState):
            flat = np.empty(slot.value.shape, np.float32)
            for m in slot.source.members:
                view = flat[m.offset : m.offset + int(np.prod(m.shape))].reshape(m.shape)
                view[...] = state[m.name]
            slots[slot.name] = flat
        else:
            slots[slot.name] = state[slot.name].copy()
    program = compile_graph(graph, slots)
    for target, array in zip(program.inputs, arrays, strict=True):
        target[...] = array
    program.function()
    return slots, program


def test_flatten_keeps_a_flat_update_flat_between_steps():
    shapes = [(3, 4), (4,), (2, 2)]
    graph = _update_graph(shapes)
    after = flatten_updates(graph)
    flat_slots = [slot for slot in after.state if slot.name.startswith("flat:")]
    assert len(flat_slots) == 1 and len(after.state) == 1
    members = flat_slots[0].source.members
    assert [m.name for m in members] == ["param:p0", "param:p1", "param:p2"]
    assert [m.offset for m in members] == [0, 12, 16]
    assert set(after.outputs) == {flat_slots[0].name}
    assert [n.op.name for n in after.nodes].count("concatenate") == 1  # the gradients'
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, *s)).astype(np.float32) for s in shapes]
    state = {f"param:p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    before, _ = _run_with_state(graph, arrays, state)
    flat, program = _run_with_state(fuse_elementwise(after), arrays, state)
    for m in members:
        got = flat[flat_slots[0].name][m.offset : m.offset + int(np.prod(m.shape))]
        np.testing.assert_array_equal(got.reshape(m.shape), before[m.name])
    assert "concatenate" not in program.source  # each sum wrote into its slice


def test_flatten_keeps_state_no_update_changes_flat_without_writing_it():
    graph = _update_graph([(3, 4), (4,)], unchanged=True)
    after = flatten_updates(graph)
    names = sorted(slot.name for slot in after.state)
    assert names == ["flat:opt:0.m..opt:1.m", "flat:param:p0..param:p1"]
    assert set(after.outputs) == {"flat:param:p0..param:p1"}


def test_flatten_lays_a_slot_out_once_when_two_concatenations_read_it():
    graph = Graph(CPU)
    params = [
        graph.add_state(f"param:p{i}", Spec(s, F32), None) for i, s in enumerate([(2, 3), (4,)])
    ]
    new = _flat(params) * 0.5 + _flat(params)  # two concatenation nodes of the same slots
    graph.outputs["param:p0"] = ops.reshape(new[0:6], (2, 3))
    graph.outputs["param:p1"] = new[6:10]
    after = flatten_updates(graph)
    assert [slot.name for slot in after.state] == ["flat:param:p0..param:p1"]
    assert [n.op.name for n in after.nodes].count("concatenate") == 1  # of views of the flat one


def test_flatten_leaves_a_layout_whose_new_values_are_elsewhere():
    graph = _update_graph([(3, 4), (4,), (4,)], order=(0, 2, 1))  # p1 gets p2's slice
    assert flatten_updates(graph) is graph


def test_a_concatenation_copies_the_parts_it_cannot_place():
    graph = Graph(CPU)
    x = graph.add_input("x", Spec((2, 3), F32))
    computed = ops.exp(x).reshape(6)
    graph.outputs["out"] = ops.concatenate([computed, x.reshape(6)]) * 2.0
    from trainctl.autograd.compile import compile_graph

    program = compile_graph(graph, {})
    body = program.source.split("def step")[1]
    assert "parts=(1,)" in body and "xp.concatenate" not in body  # only x is copied
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    program.inputs[0][...] = data
    (out,) = program.function()
    np.testing.assert_array_equal(out, np.concatenate([np.exp(data).ravel(), data.ravel()]) * 2)
