"""The op test table: gradient cases for every differentiable primitive (and the composites),
forward cases with a NumPy reference for a representative set and every non-differentiable op.

Keyed by op name, so `test_every_registered_op_is_covered` can hold the table against
`ops.REGISTRY`: a new primitive cannot land without a case here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from echo_comm import echo_collectives

from trainctl.autograd import Tensor, ops, tensor
from trainctl.distributed.reduce import (
    GradientReducer,
    RankMean,
    allreduce_mean,
    allreduce_sum,
)
from trainctl.nn import functional

Maker = Callable[[np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Case:
    """`fn(*tensors)` built from leaves made by `inputs`; `ref(*arrays)` is a NumPy oracle."""

    op: str
    label: str
    inputs: tuple[Maker, ...]
    fn: Callable[..., Tensor]
    ref: Callable[..., np.ndarray] | None = None

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}"

    def arrays(self, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [make(rng) for make in self.inputs]


# ---------------------------------------------------------------- input makers (float64)


def normal(*shape: int) -> Maker:
    return lambda rng: rng.standard_normal(shape)


def positive(*shape: int) -> Maker:
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def nonzero(*shape: int) -> Maker:
    """Values at least 0.2 away from zero: relu and abs are smooth there."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)


def grid(*shape: int, offset: float = 0.0) -> Maker:
    """Distinct values 0.3 apart (shuffled), so max and pooling have no ties; two grids with
    offsets 0 and 0.1 never come within 0.1 of each other, so maximum has no ties either."""

    def make(rng: np.random.Generator) -> np.ndarray:
        n = int(np.prod(shape))
        return ((rng.permutation(n) - n / 2) * 0.3 + offset).reshape(shape)

    return make


def rounded(*shape: int) -> Maker:
    """Small whole numbers: comparisons and pooling then meet ties."""
    return lambda rng: np.round(2 * rng.standard_normal(shape))


def integers(high: int, *shape: int) -> Maker:
    """Integer labels or indices in [0, high)."""
    return lambda rng: rng.integers(0, high, shape)


def like(ref: Tensor, array) -> Tensor:
    """A constant (labels, indices, masks) on the device of `ref`."""
    return tensor(np.asarray(array), device=ref.device)


# ---------------------------------------------------------------- helpers built on the ops


def conv2d(x, w, stride: int = 1, padding: int = 0):
    """NHWC convolution as im2col + one GEMM; `w` is (KH, KW, Cin, Cout)."""
    kh, kw, cin, cout = w.shape
    cols = ops.im2col(x, kh, kw, stride, padding)
    n, oh, ow = cols.shape[:3]
    out = ops.reshape(cols, (n * oh * ow, kh * kw * cin)) @ ops.reshape(w, (kh * kw * cin, cout))
    return ops.reshape(out, (n, oh, ow, cout))


def conv2d_reference(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """The textbook loop over output positions."""
    kh, kw, _, cout = w.shape
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, wd, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def conv2d_input_grad_reference(g, w, x_shape, stride: int, padding: int) -> np.ndarray:
    """Each output position's g @ W^T added back onto the window it read."""
    kh, kw = w.shape[:2]
    n, h, wd, c = x_shape
    padded = np.zeros((n, h + 2 * padding, wd + 2 * padding, c))
    for i in range(g.shape[1]):
        for j in range(g.shape[2]):
            piece = np.einsum("no,hwco->nhwc", g[:, i, j], w)
            padded[:, i * stride : i * stride + kh, j * stride : j * stride + kw] += piece
    return padded[:, padding : padding + h, padding : padding + wd]


def conv2d_weight_grad_reference(x, g, kh: int, kw: int, stride: int, padding: int):
    """The sum over output positions of window (x) outer g."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.zeros((kh, kw, x.shape[3], g.shape[3]))
    for i in range(g.shape[1]):
        for j in range(g.shape[2]):
            patch = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out += np.einsum("nhwc,no->hwco", patch, g[:, i, j])
    return out


def max_pool_reference(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    n, h, w, c = x.shape
    oh, ow = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = x[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel, :]
            out[:, i, j, :] = window.max(axis=(1, 2))
    return out


def max_pool_grad_reference(g, x, kernel: int, stride: int) -> np.ndarray:
    """Each window's gradient goes to its first maximum in row-major order (PyTorch's rule)."""
    n, oh, ow, c = g.shape
    grad = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    window = x[
                        b, i * stride : i * stride + kernel, j * stride : j * stride + kernel, ch
                    ]
                    di, dj = np.unravel_index(np.argmax(window), window.shape)
                    grad[b, i * stride + di, j * stride + dj, ch] += g[b, i, j, ch]
    return grad


def cross_entropy_reference(logits: np.ndarray, labels: np.ndarray, smoothing: float) -> np.ndarray:
    """-sum(target * log_softmax) with target = (1 - e) * one_hot + e / C, as in PyTorch."""
    classes = logits.shape[1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = (1 - smoothing) * np.eye(classes)[labels] + smoothing / classes
    return -(target * log_probs).sum(axis=1)


def softmax_reference(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------- gradient cases

GRAD_CASES: dict[str, list[Case]] = {}


def grad_case(op: str, label: str, inputs: tuple[Maker, ...], fn, ref=None) -> None:
    GRAD_CASES.setdefault(op, []).append(Case(op, label, inputs, fn, ref))


# Binary broadcasting ops: each against every broadcasting pattern, Python scalars both sides.
BINARY = {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div}
BINARY_REFS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
BROADCAST_SHAPES = {
    "same": ((3, 4), (3, 4)),
    "row": ((3, 4), (4,)),
    "outer": ((3, 1), (1, 4)),
    "rank3": ((2, 3, 4), (3, 1)),
    "0d": ((3, 4), ()),
    "0d_left": ((), (3, 4)),
}
for _name, _fn in BINARY.items():
    _right = positive if _name == "div" else normal  # keep denominators away from zero
    for _label, (_sa, _sb) in BROADCAST_SHAPES.items():
        grad_case(_name, _label, (normal(*_sa), _right(*_sb)), _fn, BINARY_REFS[_name])
    grad_case(_name, "scalar_right", (normal(3, 4),), lambda x, f=_fn: f(x, 1.5))
    grad_case(_name, "scalar_left", (_right(3, 4),), lambda x, f=_fn: f(1.5, x))

for _label, (_sa, _sb) in BROADCAST_SHAPES.items():
    grad_case("maximum", _label, (grid(*_sa), grid(*_sb, offset=0.1)), ops.maximum, np.maximum)
grad_case("maximum", "scalar_right", (grid(3, 4),), lambda x: ops.maximum(x, 0.05))
grad_case("maximum", "scalar_left", (grid(3, 4),), lambda x: ops.maximum(0.05, x))

_COND = np.array(
    [[True, False, True, False], [False, False, True, True], [True, True, False, True]]
)
grad_case(
    "where",
    "same",
    (normal(3, 4), normal(3, 4)),
    lambda a, b: ops.where(like(a, _COND), a, b),
    lambda a, b: np.where(_COND, a, b),
)
grad_case(
    "where", "broadcast", (normal(1, 4), normal(3, 1)), lambda a, b: ops.where(like(a, _COND), a, b)
)
grad_case(
    "where",
    "column_cond_0d_b",
    (normal(3, 4), normal()),
    lambda a, b: ops.where(like(a, _COND[:, :1]), a, b),
)
grad_case("where", "scalar_false", (normal(3, 4),), lambda a: ops.where(like(a, _COND), a, 0.0))
grad_case("where", "scalar_true", (normal(4),), lambda b: ops.where(like(b, _COND), -2.0, b))

grad_case("neg", "2d", (normal(3, 4),), ops.neg, np.negative)
grad_case("neg", "0d", (normal(),), ops.neg)
grad_case("exp", "2d", (normal(3, 4),), ops.exp, np.exp)
grad_case("log", "2d", (positive(3, 4),), ops.log, np.log)
grad_case("sqrt", "2d", (positive(3, 4),), ops.sqrt, np.sqrt)
grad_case("tanh", "2d", (normal(3, 4),), ops.tanh, np.tanh)
grad_case(
    "sigmoid",
    "2d",
    (lambda rng: 3 * rng.standard_normal((3, 4)),),
    ops.sigmoid,
    lambda x: 0.5 * (1 + np.tanh(x / 2)),
)
grad_case(
    "silu",
    "2d",
    (lambda rng: 3 * rng.standard_normal((3, 4)),),
    ops.silu,
    lambda x: x * 0.5 * (1 + np.tanh(x / 2)),
)
grad_case(
    "softplus",
    "2d",
    (lambda rng: 3 * rng.standard_normal((3, 4)),),
    ops.softplus,
    lambda x: np.logaddexp(0, x),
)
grad_case("softplus", "large", (lambda rng: 200 * rng.standard_normal((3, 4)),), ops.softplus)
for _alpha in (1.0, 0.3):
    grad_case(
        "elu",
        f"away_from_kink_alpha={_alpha}",
        (nonzero(3, 4),),
        lambda x, a=_alpha: ops.elu(x, a),
        lambda x, a=_alpha: np.where(x > 0, x, a * (np.exp(x) - 1)),
    )
grad_case("relu", "away_from_kink", (nonzero(3, 4),), ops.relu, lambda x: np.maximum(x, 0))
grad_case("abs", "away_from_kink", (nonzero(3, 4),), ops.absolute, np.abs)
for _exponent in (2, 3, -1, 0.5, 1.5, -2.5):
    grad_case(
        "pow",
        f"exponent={_exponent}",
        (positive(3, 4),),
        lambda x, e=_exponent: ops.power(x, e),
        lambda x, e=_exponent: x**e,
    )
grad_case("pow", "odd_power_negative_base", (normal(3, 4),), lambda x: x**3)
# cast(x, x.dtype) returns x itself; the primitive is applied directly to check its float64 rule.
grad_case(
    "cast", "float64", (normal(3, 4),), lambda x: ops.apply(ops.Cast, x, dtype=np.dtype("f8"))
)
grad_case(
    "cast",
    "float64_in_chain",
    (normal(3, 4),),
    lambda x: ops.apply(ops.Cast, x * x, dtype=np.dtype("f8")) * 2.0,
)

REDUCE_AXES = {
    "all": (None, False),
    "all_keep": (None, True),
    "axis0": (0, False),
    "axis1_keep": (1, True),
    "neg_axis": (-1, False),
    "axes02": ((0, 2), False),
    "axes02_keep": ((0, 2), True),
}
for _label, (_axis, _keep) in REDUCE_AXES.items():
    grad_case(
        "sum",
        _label,
        (normal(2, 3, 4),),
        lambda x, a=_axis, k=_keep: ops.reduce_sum(x, a, k),
        lambda x, a=_axis, k=_keep: np.sum(x, axis=a, keepdims=k),
    )
    grad_case(
        "max",
        _label,
        (grid(2, 3, 4),),
        lambda x, a=_axis, k=_keep: ops.reduce_max(x, a, k),
        lambda x, a=_axis, k=_keep: np.max(x, axis=a, keepdims=k),
    )
    grad_case(
        "mean",
        _label,
        (normal(2, 3, 4),),
        lambda x, a=_axis, k=_keep: ops.mean(x, a, k),
        lambda x, a=_axis, k=_keep: np.mean(x, axis=a, keepdims=k),
    )
grad_case("sum", "0d", (normal(),), lambda x: x.sum())

for _label, _shape in {"2x6": (2, 6), "flat": (12,), "infer_-1": (-1, 2), "3d": (2, 1, 6)}.items():
    grad_case(
        "reshape",
        _label,
        (normal(3, 4),),
        lambda x, s=_shape: ops.reshape(x, s),
        lambda x, s=_shape: np.reshape(x, s),
    )
grad_case("reshape", "0d_to_1x1", (normal(),), lambda x: ops.reshape(x, (1, 1)))

for _label, _axes in {
    "default": None,
    "102": (1, 0, 2),
    "201": (2, 0, 1),
    "neg": (-1, 0, 1),
}.items():
    grad_case(
        "transpose",
        _label,
        (normal(2, 3, 4),),
        lambda x, a=_axes: ops.transpose(x, a),
        lambda x, a=_axes: np.transpose(x, a),
    )
grad_case(
    "swapaxes",
    "0_2",
    (normal(2, 3, 4),),
    lambda x: ops.swapaxes(x, 0, 2),
    lambda x: np.swapaxes(x, 0, 2),
)
grad_case("swapaxes", "neg", (normal(2, 3, 4),), lambda x: ops.swapaxes(x, -1, -2))

for _label, (_from, _to) in {
    "row": ((4,), (3, 4)),
    "column_rank3": ((3, 1), (2, 3, 4)),
    "0d": ((), (2, 3)),
}.items():
    grad_case(
        "broadcast_to",
        _label,
        (normal(*_from),),
        lambda x, s=_to: ops.broadcast_to(x, s),
        lambda x, s=_to: np.broadcast_to(x, s),
    )

for _label, (_shape, _to) in {
    "to_row": ((3, 4), (4,)),
    "to_column": ((2, 3, 4), (3, 1)),
    "to_0d": ((3, 4), ()),
    "same": ((3, 4), (3, 4)),
}.items():
    grad_case("sum_to", _label, (normal(*_shape),), lambda x, s=_to: ops.sum_to(x, s))

GETITEM_INDEX = {
    "int": 1,
    "negative_int": -2,
    "slice": (slice(None), slice(1, 3)),
    "reverse": slice(None, None, -1),
    "negative_step": (slice(1, None), None, slice(None, None, -2)),
    "none": (None, slice(None), slice(None, None, 2)),
    "ellipsis": (Ellipsis, -1),
    "int_and_slice": (0, slice(3, 0, -1), 2),
}
for _label, _index in GETITEM_INDEX.items():
    grad_case(
        "getitem", _label, (normal(3, 4, 5),), lambda x, i=_index: x[i], lambda x, i=_index: x[i]
    )

for _label, (_shape, _big, _index) in {
    "block": ((2, 2), (4, 5), (slice(1, 3), slice(0, 4, 2))),
    "row_int": ((5,), (3, 5), (1,)),
    "reversed": ((3, 2), (3, 4), (slice(None, None, -1), slice(3, 0, -2))),
}.items():
    grad_case(
        "unslice", _label, (normal(*_shape),), lambda x, s=_big, i=_index: ops.unslice(x, s, i)
    )

for _label, (_shapes, _axis) in {
    "axis0": (((2, 3), (1, 3), (4, 3)), 0),
    "axis1": (((2, 3), (2, 1)), 1),
    "axis_neg": (((2, 3, 1), (2, 3, 2)), -1),
    "axis1_rank3": (((2, 1, 2), (2, 3, 2), (2, 2, 2)), 1),
}.items():
    grad_case(
        "concatenate",
        _label,
        tuple(normal(*s) for s in _shapes),
        lambda *xs, a=_axis: ops.concatenate(xs, a),
        lambda *xs, a=_axis: np.concatenate(xs, a),
    )

for _label, (_sa, _sb) in {
    "2d": ((3, 4), (4, 2)),
    "batched": ((2, 3, 4), (2, 4, 5)),
    "batch_broadcast": ((2, 1, 3, 4), (5, 4, 2)),
    "matrix_times_batch": ((3, 4), (2, 4, 5)),
}.items():
    grad_case("matmul", _label, (normal(*_sa), normal(*_sb)), ops.matmul, np.matmul)

IM2COL_CONFIGS = {
    "k3_s1_p0": ((2, 5, 5, 2), 3, 3, 1, 0),
    "k3_s2_p1": ((1, 5, 6, 2), 3, 3, 2, 1),
    "k2_s2_p0": ((2, 4, 4, 1), 2, 2, 2, 0),
    "k2x3_s1_p1": ((1, 4, 3, 2), 2, 3, 1, 1),
}
for _label, (_shape, _kh, _kw, _stride, _pad) in IM2COL_CONFIGS.items():
    _cfg = (_kh, _kw, _stride, _pad)
    grad_case("im2col", _label, (normal(*_shape),), lambda x, c=_cfg: ops.im2col(x, *c))
    _cols = ops.Im2col.infer(np.empty(_shape), *_cfg).shape
    grad_case("col2im", _label, (normal(*_cols),), lambda c, s=_shape, k=_cfg: ops.col2im(c, s, *k))
grad_case(
    "conv",
    "k3_s2_p1",
    (normal(2, 5, 5, 2), normal(3, 3, 2, 3)),
    lambda x, w: conv2d(x, w, 2, 1),
    lambda x, w: conv2d_reference(x, w, 2, 1),
)
grad_case(
    "conv",
    "k2_s1_p0",
    (normal(1, 4, 4, 3), normal(2, 2, 3, 2)),
    conv2d,
    lambda x, w: conv2d_reference(x, w, 1, 0),
)

# The CPU's conv op and its two gradients (ops/conv.py), each against its textbook loop.
for _label, (_x, _w, _stride, _pad) in {
    "k3_s1_p1": ((2, 5, 5, 2), (3, 3, 2, 3), 1, 1),
    "k3_s2_p1": ((1, 5, 6, 3), (3, 3, 3, 2), 2, 1),
    "k2_s1_p0_one_channel": ((2, 4, 4, 1), (2, 2, 1, 4), 1, 0),
}.items():
    _g = (
        _x[0],
        *ops.Conv2d.infer(np.empty(_x), np.empty(_w), stride=_stride, padding=_pad).shape[1:],
    )
    grad_case(
        "conv2d",
        _label,
        (normal(*_x), normal(*_w)),
        lambda x, w, s=_stride, p=_pad: ops.conv2d(x, w, s, p),
        lambda x, w, s=_stride, p=_pad: conv2d_reference(x, w, s, p),
    )
    grad_case(
        "conv2d_input_grad",
        _label,
        (normal(*_g), normal(*_w)),
        lambda g, w, x=_x, s=_stride, p=_pad: ops.conv2d_input_grad(g, w, x, s, p),
        lambda g, w, x=_x, s=_stride, p=_pad: conv2d_input_grad_reference(g, w, x, s, p),
    )
    grad_case(
        "conv2d_weight_grad",
        _label,
        (normal(*_x), normal(*_g)),
        lambda x, g, k=_w[:2], s=_stride, p=_pad: ops.conv2d_weight_grad(x, g, *k, s, p),
        lambda x, g, k=_w[:2], s=_stride, p=_pad: conv2d_weight_grad_reference(x, g, *k, s, p),
    )

grad_case(
    "conv2d",
    "k3_s1_p1_bias",
    (normal(3, 4, 4, 2), normal(3, 3, 2, 3), normal(3)),
    lambda x, w, b: ops.conv2d(x, w, 1, 1, bias=b),
    lambda x, w, b: conv2d_reference(x, w, 1, 1) + b,
)

for _label, (_shape, _kernel, _stride) in {
    "k2_s2": ((2, 4, 4, 3), 2, 2),
    "k3_s1_overlap": ((1, 5, 5, 2), 3, 1),
    "k3_s2_overlap": ((2, 5, 7, 1), 3, 2),
    "k2_s2_odd_size": ((1, 5, 5, 2), 2, 2),
}.items():
    grad_case(
        "max_pool2d",
        _label,
        (grid(*_shape),),
        lambda x, k=_kernel, s=_stride: ops.max_pool2d(x, k, s),
        lambda x, k=_kernel, s=_stride: max_pool_reference(x, k, s),
    )

for _axis in (-1, 0, 1):
    grad_case(
        "softmax",
        f"axis{_axis}",
        (normal(2, 3, 4),),
        lambda x, a=_axis: ops.softmax(x, a),
        lambda x, a=_axis: softmax_reference(x, a),
    )
    grad_case(
        "log_softmax",
        f"axis{_axis}",
        (normal(2, 3, 4),),
        lambda x, a=_axis: ops.log_softmax(x, a),
        lambda x, a=_axis: np.log(softmax_reference(x, a)),
    )

_LABELS = np.array([0, 3, 1, 3, 2])
for _smoothing in (0.0, 0.1, 0.3):
    grad_case(
        "softmax_cross_entropy",
        f"smoothing={_smoothing}",
        (normal(5, 4),),
        lambda z, e=_smoothing: ops.softmax_cross_entropy(z, like(z, _LABELS), e),
        lambda z, e=_smoothing: cross_entropy_reference(z, _LABELS, e),
    )
grad_case(
    "softmax_cross_entropy",
    "mean_loss",
    (normal(5, 4),),
    lambda z: ops.mean(ops.softmax_cross_entropy(z, like(z, _LABELS), 0.1)),
)

_ROWS = np.array([0, 2, 2, 4, 0, 2])  # repeated indices: gradients must add up
_ROWS_2D = np.array([[1, 1, 0], [3, 1, 3]])
grad_case(
    "gather_rows",
    "repeated",
    (normal(5, 3),),
    lambda t: ops.gather_rows(t, like(t, _ROWS)),
    lambda t: t[_ROWS],
)
grad_case(
    "gather_rows",
    "2d_indices",
    (normal(4, 2),),
    lambda t: ops.gather_rows(t, like(t, _ROWS_2D)),
    lambda t: t[_ROWS_2D],
)
grad_case(
    "scatter_add_rows",
    "repeated",
    (normal(6, 3),),
    lambda x: ops.scatter_add_rows(x, like(x, _ROWS), 5),
)
grad_case(
    "scatter_add_rows",
    "2d_indices",
    (normal(2, 3, 2),),
    lambda x: ops.scatter_add_rows(x, like(x, _ROWS_2D), 4),
)

grad_case("dropout", "p0.5", (normal(4, 5),), lambda x: ops.dropout(x, 0.5, (3, 7)))
grad_case("dropout", "p0.2_3d", (normal(2, 3, 4),), lambda x: ops.dropout(x, 0.2, (0, 1)))


def _small_convnet(x, w, b, v):
    """conv -> bias -> relu -> overlapping max-pool -> flatten -> linear -> smoothed CE."""
    h = ops.relu(conv2d(x, w, 1, 1) + b)
    h = ops.max_pool2d(h, 3, 2)
    logits = ops.reshape(h, (h.shape[0], -1)) @ v
    return ops.mean(ops.softmax_cross_entropy(logits, like(x, [1, 2]), 0.1))


grad_case(
    "graph",
    "small_convnet",
    (normal(2, 5, 5, 2), normal(3, 3, 2, 3), normal(3), normal(12, 3)),
    _small_convnet,
)
grad_case(
    "graph",
    "shared_subexpression",
    (normal(3, 4),),
    lambda x: ops.tanh(x) * ops.exp(x) + ops.tanh(x).sum(axis=0),
)

# ---------------------------------------------------------------- forward-only cases

FORWARD_CASES: dict[str, list[Case]] = {}


def forward_case(op: str, label: str, inputs: tuple[Maker, ...], fn, ref) -> None:
    FORWARD_CASES.setdefault(op, []).append(Case(op, label, inputs, fn, ref))


for _name, _fn, _ref in (
    ("greater", ops.greater, np.greater),
    ("greater_equal", ops.greater_equal, np.greater_equal),
    ("equal", ops.equal, np.equal),
):
    forward_case(_name, "row", (rounded(3, 4), rounded(4)), _fn, _ref)
    forward_case(
        _name, "scalar", (rounded(3, 4),), lambda x, f=_fn: f(x, 0.0), lambda x, f=_ref: f(x, 0.0)
    )
    forward_case(
        _name,
        "scalar_left",
        (rounded(3, 4),),
        lambda x, f=_fn: f(0.0, x),
        lambda x, f=_ref: f(0.0, x),
    )

forward_case(
    "one_hot", "1d", (integers(4, 5),), lambda y: ops.one_hot(y, 4), lambda y: np.eye(4)[y]
)
forward_case(
    "one_hot",
    "2d_float64",
    (integers(3, 2, 3),),
    lambda y: ops.one_hot(y, 3, np.float64),
    lambda y: np.eye(3)[y],
)
for _label, (_shape, _kernel, _stride, _pooled) in {
    "k2_s2": ((2, 4, 4, 3), 2, 2, (2, 2, 2, 3)),
    "k3_s1_overlap": ((1, 5, 5, 2), 3, 1, (1, 3, 3, 2)),
    "k3_s2_overlap": ((2, 5, 7, 1), 3, 2, (2, 2, 3, 1)),
}.items():
    # Rounded inputs tie often, so the first-maximum rule is what gets checked.
    forward_case(
        "max_pool2d_grad",
        _label,
        (normal(*_pooled), rounded(*_shape)),
        lambda g, x, k=_kernel, s=_stride: ops.max_pool2d_grad(g, x, ops.max_pool2d(x, k, s), k, s),
        lambda g, x, k=_kernel, s=_stride: max_pool_grad_reference(g, x, k, s),
    )


forward_case(
    "allreduce_mean",
    "three_ranks_in_buckets",
    (rounded(5, 3),),
    lambda x: allreduce_mean(x.reshape(15), GradientReducer(echo_collectives(3), bucket_bytes=16)),
    lambda x: x.reshape(15),
)
grad_case(
    "allreduce_sum",
    "three_ranks",
    (normal(2, 3),),
    lambda x: allreduce_sum(x, echo_collectives(3)),
    lambda x: 3 * x,
)

for _label, _shape in {"2d": (5, 3), "nhwc": (2, 3, 2, 4)}.items():
    grad_case(
        "channel_sum",
        _label,
        (normal(*_shape),),
        ops.channel_sum,
        lambda x: x.reshape(-1, x.shape[-1]).sum(axis=0),
    )
    grad_case(
        "channel_center",
        _label,
        (normal(*_shape), normal(_shape[-1])),
        ops.channel_center,
        lambda x, mean: x - mean,
    )
    grad_case(
        "channel_dot",
        _label,
        (normal(*_shape), normal(*_shape)),
        ops.channel_dot,
        lambda a, b: (a * b).reshape(-1, a.shape[-1]).sum(axis=0),
    )


def batch_norm_reference(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])
    return (x - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + 1e-5) * w + b


def _batch_norm(w, b, x, across=None):
    """Training-mode BatchNorm (the composite that records `batch_norm_train`). x comes last:
    drawn first, it would equal gradcheck's output weights, which BatchNorm's gradient
    projects to almost nothing."""
    stats = like(x, np.zeros(x.shape[-1]))
    return functional.batch_norm(x, w, b, stats, stats + 1.0, True, across=across)[0]


for _label, _shape in {"2d": (6, 3), "nhwc": (2, 3, 2, 3)}.items():
    grad_case(
        "batch_norm_train",
        _label,
        (positive(3), normal(3), normal(*_shape)),
        _batch_norm,
        batch_norm_reference,
    )
grad_case(
    "batch_norm_train",
    "synchronised_three_ranks",  # every rank holds the same shard: the statistics are its own
    (positive(3), normal(3), normal(2, 3, 2, 3)),
    lambda w, b, x: _batch_norm(w, b, x, RankMean(echo_collectives(3))),
    batch_norm_reference,
)
forward_case(
    "batch_norm_train_grad",
    "nhwc",
    (normal(2, 3, 2, 4), normal(2, 3, 2, 4), normal(4), normal(4), normal(4)),
    ops.batch_norm_train_grad,
    lambda g, c, m, k, a: (g - m - c * k) * a,
)
