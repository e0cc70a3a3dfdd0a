"""`infer` (what graph mode traces with) against what `forward` really produces, and the
errors bad shapes raise: every primitive application in every case, forward and backward."""

import numpy as np
import pytest
from autograd_cases import FORWARD_CASES, GRAD_CASES, Case, integers

from trainctl.autograd import Tensor, ops, tensor
from trainctl.errors import ShapeError, TrainctlError

ALL_CASES = [
    case for table in (GRAD_CASES, FORWARD_CASES) for cases in table.values() for case in cases
]


@pytest.fixture
def recorded(monkeypatch) -> list:
    """Every (op, inputs, attrs, output) that runs eagerly while the test runs."""
    calls = []
    apply = Tensor._apply

    def recording(op, inputs, attrs):
        out = apply(op, inputs, attrs)
        calls.append((op, inputs, attrs, out))
        return out

    monkeypatch.setattr(Tensor, "_apply", staticmethod(recording))
    return calls


def check_infer(calls) -> set[str]:
    for op, inputs, attrs, out in calls:
        spec = op.infer(*inputs, **attrs)
        assert (tuple(spec.shape), np.dtype(spec.dtype)) == (out.shape, out.dtype), (
            f"{op.name}{tuple(getattr(x, 'shape', x) for x in inputs)} {attrs}"
        )
    return {op.name for op, *_ in calls}


def run_case(case: Case, dtype, device) -> Tensor:
    """The case with its float inputs in `dtype`, then a backward pass when it records one."""
    xs = []
    for a in case.arrays():
        floating = np.issubdtype(a.dtype, np.floating)
        xs.append(tensor(a, dtype if floating else None, device, requires_grad=floating))
    out = case.fn(*xs)
    if out.requires_grad:
        upstream = np.random.default_rng(1).standard_normal(out.shape)
        out.backward(tensor(upstream, out.dtype, device))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_infer_matches_forward(case: Case, dtype, recorded, device):
    run_case(case, dtype, device)
    names = check_infer(recorded)
    if case.op in ops.REGISTRY:
        assert case.op in names


# Integer and bool operands: the dtype rules NumPy applies (true division and sums promote).
INT_CASES = {
    "add_int": ((integers(5, 3, 4), integers(5, 4)), ops.add),
    "add_py_int": ((integers(5, 3, 4),), lambda x: x + 2),
    "add_py_float": ((integers(5, 3, 4),), lambda x: x + 0.5),
    "sub_left_scalar": ((integers(5, 3, 4),), lambda x: 2 - x),
    "mul_int": ((integers(5, 3, 4), integers(5, 3, 1)), ops.mul),
    "div_int": ((integers(5, 3, 4), lambda rng: rng.integers(1, 5, (4,))), ops.div),
    "div_py_int": ((integers(5, 3, 4),), lambda x: x / 2),
    "maximum_int": ((integers(5, 3, 4), integers(5, 4)), ops.maximum),
    "compare_int": ((integers(5, 3, 4),), lambda x: (x > 2, x >= 2, x < 1, ops.equal(x, 3))),
    "where_int": ((integers(5, 3, 4), integers(5, 4)), lambda a, b: ops.where(a > 2, a, b)),
    "neg_abs_relu": ((integers(5, 3, 4),), lambda x: (-x, ops.absolute(x - 2), ops.relu(x - 2))),
    "pow_int": ((integers(5, 3, 4),), lambda x: x**2),
    "pow_half": ((integers(5, 3, 4),), lambda x: x**0.5),
    "cast_to_float32": ((integers(5, 3, 4),), lambda x: x.astype(np.float32)),
    "sum": ((integers(5, 3, 4),), lambda x: (x.sum(), x.sum(axis=0, keepdims=True))),
    "sum_bool": ((integers(5, 3, 4),), lambda x: ((x > 2).sum(), (x > 2).sum(axis=1))),
    "mean_bool": ((integers(5, 6),), lambda x: (x > 2).mean()),
    "max": ((integers(5, 3, 4),), lambda x: (x.max(), x.max(axis=(0, 1)))),
    "shapes": (
        (integers(5, 3, 4),),
        lambda x: (x.reshape(4, 3), x.T, ops.broadcast_to(x, (2, 3, 4)), x[1:, ::-1]),
    ),
    "unslice": ((integers(5, 2, 2),), lambda x: ops.unslice(x, (3, 3), (slice(1, 3), slice(0, 2)))),
    "concatenate_int": (
        (integers(5, 2, 3), integers(5, 1, 3)),
        lambda a, b: ops.concatenate([a, b]),
    ),
    "concatenate_mixed": (
        (integers(5, 2, 3), integers(5, 1, 3)),
        lambda a, b: ops.concatenate([a, b.astype(np.float32)]),
    ),
    "matmul_int": ((integers(5, 2, 3, 4), integers(5, 4, 2)), ops.matmul),
    "gather_scatter": (
        (integers(9, 5, 3), integers(5, 6)),
        lambda t, i: (ops.gather_rows(t, i), ops.scatter_add_rows(t, i[:5], 5)),
    ),
    "one_hot": ((integers(4, 2, 3),), lambda y: ops.one_hot(y, 4)),
    "images": (
        (integers(9, 1, 5, 5, 2),),
        lambda x: (
            ops.im2col(x, 3, 3, 2, 1),
            ops.max_pool2d(x, 2),
            ops.col2im(ops.im2col(x, 2, 2), x.shape, 2, 2),
        ),
    ),
}


@pytest.mark.parametrize("int_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("name", INT_CASES)
def test_infer_matches_forward_on_integers(name, int_dtype, recorded, device):
    makers, fn = INT_CASES[name]
    rng = np.random.default_rng(0)
    fn(*(tensor(make(rng).astype(int_dtype), device=device) for make in makers))
    assert recorded
    check_infer(recorded)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (np.int32, np.int32, np.int32),
        (np.int32, np.int64, np.int64),
        (np.float32, np.int64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.bool_, np.bool_, np.bool_),
    ],
    ids=["i32+i32", "i32+i64", "f32+i64", "f32+f64", "bool+bool"],
)
def test_mixed_dtypes_promote_like_numpy(a, b, expected, recorded):
    x, y = tensor(np.ones(3, a)), tensor(np.ones(3, b))
    assert (x * y).dtype == expected
    check_infer(recorded)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_infer_with_numpy_scalars(dtype, recorded):
    x = tensor(np.ones(3, dtype))
    out = [x * np.float32(2), np.float32(2) * x, x + np.float64(1), np.int64(3) - x]
    assert out[0].dtype == out[1].dtype == dtype
    check_infer(recorded)


# ---------------------------------------------------------------- shape errors

BAD_SHAPES = {
    "matmul_inner": (
        lambda: tensor(np.ones((3, 4))) @ tensor(np.ones((3, 2))),
        "inner sizes differ",
    ),
    "matmul_batch": (
        lambda: tensor(np.ones((2, 3, 4))) @ tensor(np.ones((3, 4, 2))),
        "batch shapes",
    ),
    "matmul_vector": (
        lambda: tensor(np.ones((3, 4))) @ tensor(np.ones(4)),
        "2 or more dims, got shapes (3, 4) and (4,)",
    ),
    "reshape_size": (lambda: tensor(np.ones((3, 4))).reshape(5, 2), "cannot reshape (3, 4)"),
    "broadcast_binary": (lambda: tensor(np.ones((3, 4))) + tensor(np.ones(3)), "(3, 4), (3,)"),
    "broadcast_to": (lambda: ops.broadcast_to(tensor(np.ones(3)), (4,)), "cannot broadcast"),
    "broadcast_to_fewer_dims": (
        lambda: ops.broadcast_to(tensor(np.ones((2, 3))), (3,)),
        "cannot broadcast",
    ),
    "advanced_index_list": (lambda: tensor(np.ones(4))[[0, 1]], "basic indexing"),
    "advanced_index_array": (lambda: tensor(np.ones(4))[np.array([0, 1])], "basic indexing"),
    "advanced_index_tensor": (lambda: tensor(np.ones(4))[tensor([0, 1])], "basic indexing"),
    "concatenate": (
        lambda: ops.concatenate([tensor(np.ones((2, 3))), tensor(np.ones((2, 4)))], 0),
        "cannot concatenate",
    ),
    "concatenate_axis": (
        lambda: ops.concatenate([tensor(np.ones((2, 3)))] * 2, axis=2),
        "out of range",
    ),
    "sum_axis": (lambda: tensor(np.ones((2, 3))).sum(axis=2), "axis 2 is out of range"),
    "softmax_axis": (lambda: ops.softmax(tensor(np.ones((2, 3))), 2), "out of range"),
    "transpose_perm": (lambda: tensor(np.ones((2, 3, 4))).transpose(0, 0, 1), "permutation"),
    "transpose_axis": (lambda: tensor(np.ones((2, 3))).transpose(0, 3), "out of range"),
    "im2col_rank": (lambda: ops.im2col(tensor(np.ones((4, 4, 2))), 2, 2), "4-d NHWC"),
    "im2col_window": (lambda: ops.im2col(tensor(np.ones((1, 2, 2, 1))), 3, 3), "does not fit"),
    "max_pool_rank": (lambda: ops.max_pool2d(tensor(np.ones((4, 4, 2))), 2), "4-d NHWC"),
    "max_pool_window": (lambda: ops.max_pool2d(tensor(np.ones((1, 2, 2, 1))), 3), "does not fit"),
    "cross_entropy_labels_shape": (
        lambda: ops.softmax_cross_entropy(tensor(np.ones((3, 4))), tensor([0, 1])),
        "(N,) labels",
    ),
    "cross_entropy_float_labels": (
        lambda: ops.softmax_cross_entropy(tensor(np.ones((3, 4))), tensor([0.0, 1.0, 2.0])),
        "must be integers",
    ),
    "gather_float_indices": (
        lambda: ops.gather_rows(tensor(np.ones((3, 4))), tensor([0.0, 1.0])),
        "must be integers",
    ),
}


@pytest.mark.parametrize("name", BAD_SHAPES)
def test_bad_shapes_raise_shape_error(name):
    fn, message = BAD_SHAPES[name]
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fn()
    assert issubclass(ShapeError, TrainctlError)


def test_out_of_range_index_is_an_index_error():
    # Python's iteration protocol over rows relies on IndexError, so it is not a ShapeError.
    x = tensor(np.arange(6.0).reshape(3, 2))
    with pytest.raises(IndexError):
        x[3]
    assert [row.numpy().tolist() for row in x] == [[0, 1], [2, 3], [4, 5]]


def test_pow_exponent_must_be_a_constant():
    x = tensor(np.ones(3))
    with pytest.raises(TypeError, match="constant exponent"):
        x ** tensor(np.ones(3))
