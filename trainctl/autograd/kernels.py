"""Kernels: the ops that only lowering passes create.

A kernel is an `Op` with a forward (into `out=` like every op) and a shape rule but no vjp:
it appears after autodiff, so `ops.REGISTRY` keeps exactly one definition per primitive and
both modes differentiate the same ones. `Fused` and `Loop` hold a chain of elementwise nodes
(attribute `body`) that the code generator renders as one kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.ops import ANY, Op, Reduction, Scratch, Spec
from trainctl.errors import DataError


class Kernel(Op, register=False):
    differentiable = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(register=False)


class Uniform(Kernel):
    """Uniform [0, 1) draws for a key (dropout's mask, drawn once per key)."""

    infer = staticmethod(lambda key, shape, dtype: Spec(shape, dtype))
    forward = staticmethod(
        lambda xp, key, shape, dtype, out=None: backend.uniform(xp, key, shape, dtype, out=out)
    )


class FlatIndex(Kernel):
    """labels[i] + i * classes: where each sample's label sits in (N*C,). It range-checks the
    labels first (out of range would pick from the neighbouring row), unless `checked`: the
    host checks them before a captured device program runs."""

    label_input = 0
    infer = staticmethod(lambda labels, classes: Spec(tuple(labels.shape), labels.dtype))
    prepare = staticmethod(
        lambda xp, labels, classes: {
            "rows": xp.arange(labels.shape[0], dtype=labels.dtype) * classes
        }
    )

    @staticmethod
    def forward(xp, labels, classes, out=None, rows=None, checked=False):
        if rows is None:
            rows = xp.arange(labels.shape[0], dtype=labels.dtype) * classes
        # Seen as unsigned, a negative label is huge: one max checks both ends of the range.
        if not checked and labels.view(f"uint{8 * labels.dtype.itemsize}").max() >= classes:
            labels_outside(labels, classes)
        return xp.add(labels, rows, out=out)


def check_labels(labels: np.ndarray, classes: int) -> None:
    """The host-side check of a batch's class labels (device-scalar programs)."""
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        labels_outside(labels, classes)


def labels_outside(labels: Any, classes: int) -> None:
    low, high = int(labels.min()), int(labels.max())
    raise DataError(
        f"class labels must be in [0, {classes}) for {classes} outputs, "
        f"found labels in [{low}, {high}]"
    )


def _take(xp, flat, index, out):
    # The labels are range-checked, so NumPy can skip its own check and the buffered `out`
    # that mode="raise" implies; CuPy's take has no mode.
    clip = {"mode": "clip"} if xp is np else {}
    return xp.take(flat, index, out=out, **clip)


class Pick(Kernel):
    """out[i] = x[i, labels[i]], through flat indices."""

    infer = staticmethod(lambda x, index: Spec(tuple(index.shape), x.dtype))
    forward = staticmethod(lambda xp, x, index, out=None: _take(xp, x.reshape(-1), index, out))


class SubAt(Kernel):
    """x - one_hot(labels): one subtraction per row."""

    overwrites = frozenset({0})
    infer = staticmethod(lambda x, index: Spec(tuple(x.shape), x.dtype))
    scratch = staticmethod(lambda out, x, index: [Scratch(tuple(index.shape), out.dtype)])

    @staticmethod
    def forward(xp, x, index, out=None, scratch=None):
        if out is None:
            out = x.copy()
        elif x is not out:
            xp.copyto(out, x)
        flat = out.reshape(-1)
        picked = _take(xp, flat, index, scratch[0] if scratch else None)
        xp.subtract(picked, 1, out=picked)
        flat[index] = picked
        return out


class Mean(Reduction, Kernel):
    """NumPy's mean: a sum, then one division by the count (not a multiply)."""

    function = "mean"


class Select(Kernel):
    """where(compare(x, y), a, 0), `compare` a comparison op's name: ReLU's and maximum's
    backward, computed as a mask of all ones or zeros and'ed with a's bits."""

    kind, overwrites, exact_loop = "elementwise", ANY, ANY
    expression = "lambda x, y, a: a if compare(x, y) else 0"
    infer = staticmethod(lambda x, y, a, compare: Spec(tuple(a.shape), a.dtype))
    scratch = staticmethod(
        lambda out, x, y, a, compare: [Scratch(out.shape, ops.mask_dtype(out.dtype))]
    )

    @staticmethod
    def forward(xp, x, y, a, compare, out=None, scratch=None):
        out = xp.empty(a.shape, a.dtype) if out is None else out
        mask = scratch[0] if scratch else xp.empty(out.shape, ops.mask_dtype(out.dtype))
        getattr(xp, ops.REGISTRY[compare].ufunc)(x, y, out=mask)
        xp.negative(mask, out=mask)
        return xp.bitwise_and(a.view(mask.dtype), mask, out=out.view(mask.dtype)).view(out.dtype)


class Fused(Kernel):
    """A chain of elementwise nodes (attribute `body`) computed as one: on CuPy one generated
    kernel (which may write over any input), on NumPy its members' forwards in turn, laid out
    by `fused_layout`."""

    kind = "elementwise"
    infer = staticmethod(lambda *xs, body: Spec(body[-1].out.shape, body[-1].out.dtype))

    @classmethod
    def overwritable(cls, node: Any, xp: Any) -> set[int]:
        if xp is not np:
            return set(range(len(node.inputs)))
        _, root_only, spine_only = _spine(node, xp)
        return root_only | spine_only

    @classmethod
    def scratch_of(cls, node: Any, xp: Any, alias: int | None) -> list[Scratch]:
        return [] if xp is not np else fused_layout(node, xp, alias)[1]


class Loop(Kernel):
    """An elementwise chain (attribute `body`) compiled into one Numba loop (NumPy)."""

    overwrites = ANY
    infer = staticmethod(lambda *xs, body: Spec(body[-1].out.shape, body[-1].out.dtype))


UNIFORM, FLAT_INDEX, PICK, SUB_AT, MEAN, SELECT, FUSED, LOOP = (
    Uniform, FlatIndex, Pick, SubAt, Mean, Select, Fused, Loop
)  # fmt: skip


def body_of(node: Any) -> tuple:
    """The members a node computes: a fused chain's or a loop's body, else the node itself."""
    return node.attrs.get("body", (node,))


def fused_layout(node: Any, xp: Any, alias: int | None) -> tuple[dict, list[Scratch]]:
    """Where each member of a fused chain writes on NumPy, and the scratch that needs.

    The spine (see `_spine`) is computed in place in one buffer wherever dtype and shape match
    the root, other members each in a scratch buffer. Spine layout (the default): that buffer
    is the output. Root layout (`alias` an input only the root may overwrite): the spine runs
    in a scratch buffer and only the root writes the output, so the root may overwrite its
    input (p - lr * buf lands in p's own array). `target[member]` is (place, scratch positions
    of the member's own scratch), the place "out" or a scratch position.
    """
    body = node.attrs["body"]
    root = body[-1]
    spine, root_only, spine_only = _spine(node, xp)
    target: dict = {}
    scratch: list[Scratch] = []
    chain: Any = "out"
    if alias in root_only and alias not in spine_only:  # the root layout
        chain = 0
        scratch.append(Scratch(root.out.shape, root.out.dtype))
    for member in body:
        if member is root:
            place: Any = "out"
        elif member in spine and _alike(member, root):
            place = chain
        else:
            place = len(scratch)
            scratch.append(Scratch(member.out.shape, member.out.dtype))
        own = member.op.scratch_of(member, xp, None)
        target[member] = (place, list(range(len(scratch), len(scratch) + len(own))))
        scratch += own
    return target, scratch


def _spine(node: Any, xp: Any) -> tuple[list, set[int], set[int]]:
    """The spine of a fused chain, its root and the chain of first overwritable fused inputs
    below it, and the inputs the output buffer may replace: in the root layout those only the
    root reads, in the spine layout those only the first member reads, when it starts the
    spine with the root's shape and dtype."""
    body = node.attrs["body"]
    members = {m.out: m for m in body}
    spine = [body[-1]]
    while True:  # down through inputs the member may overwrite
        below = spine[-1]
        inner = next(
            (members[x] for x in below.inputs if x in members and _overwrites(below, x, xp)), None
        )
        if inner is None:
            break
        spine.append(inner)

    def only(member: Any) -> set[int]:
        return {
            p
            for p, leaf in enumerate(node.inputs)
            if all(m is member for m in body if leaf in m.inputs) and _overwrites(member, leaf, xp)
        }

    starts = body[0] is spine[-1] and _alike(spine[-1], spine[0])
    return spine, only(spine[0]), only(spine[-1]) if starts else set()


def _alike(a: Any, b: Any) -> bool:
    return a.out.shape == b.out.shape and a.out.dtype == b.out.dtype


def _overwrites(member: Any, leaf: Any, xp: Any) -> bool:
    """Whether `member`'s forward may write over `leaf` while reading it (an exact overlap)."""
    positions = {p for p, x in enumerate(member.inputs) if x is leaf}
    return bool(positions) and positions <= member.op.overwritable(member, xp)
