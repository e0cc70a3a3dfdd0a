"""The eager Tensor: every op runs at once and, when a gradient is wanted, leaves a tape entry.

The tape is the graph of `_ctx` links from outputs back to inputs; `backward()` walks it once in
reverse topological order, calls each op's vjp rule and frees the links it has used.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from trainctl.autograd.ops import Op, Operand
from trainctl.backend import CPU, Device, device_of, get_device, to_host
from trainctl.errors import DeviceError, TrainctlError

DEFAULT_DTYPE = np.dtype(np.float32)
_grad_enabled = True
_op_observer: Callable[[type[Op], float], None] | None = None
_output_watcher: Callable[[type[Op], Any, Tensor | None], None] | None = None
_backward_of: Tensor | None = None  # the tensor whose vjp runs, while a watcher is on
_FREED = "freed"


class AutogradError(TrainctlError):
    """Misuse of the tape, such as a second backward through a freed graph."""


@contextlib.contextmanager
def _setting(name: str, value: Any) -> Iterator[None]:
    """Module global `name` set to `value` inside the block, restored after it."""
    previous = globals()[name]
    globals()[name] = value
    try:
        yield
    finally:
        globals()[name] = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Run ops without recording them (evaluation, optimizer updates, vjp rules)."""
    return _setting("_grad_enabled", False)


def is_grad_enabled() -> bool:
    return _grad_enabled


def observe_ops(callback: Callable[[type[Op], float], None]) -> contextlib.AbstractContextManager:
    """Call `callback(op, seconds)` after each op runs eagerly, backward ops included.

    For op counts and per-op profiles (`trainctl compare --profile`); the device is
    synchronized around each op, so only use it in a pass whose step times are not reported.
    """
    return _setting("_op_observer", callback)


def watch_outputs(
    callback: Callable[[type[Op], Any, Tensor | None], None],
) -> contextlib.AbstractContextManager:
    """Call `callback(op, out, grad_of)` with the output array of each op run eagerly.

    `grad_of` is the tensor whose vjp rule ran the op inside `backward()` (None elsewhere), so
    a checker can say which gradient went wrong. For `debug.check_numerics`; when nothing
    watches, an op pays one comparison with None.
    """
    return _setting("_output_watcher", callback)


def _observed_forward(op: type[Op], device: Device, arrays: list, attrs: dict) -> Any:
    device.synchronize()
    started = time.perf_counter()
    out = op.forward(device.xp, *arrays, **attrs)
    device.synchronize()
    _op_observer(op, time.perf_counter() - started)
    return out


class Tensor(Operand):
    """An array on a device, with an optional gradient and a link to the op that made it."""

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "__weakref__")

    def __init__(
        self,
        data: Any,
        dtype: Any = None,
        device: str | Device | None = None,
        requires_grad: bool = False,
    ) -> None:
        if isinstance(data, Tensor):
            data = data.data
        if device is not None:
            target = get_device(device)
        elif isinstance(data, (np.ndarray, np.generic, list, tuple, int, float, bool)):
            target = CPU
        else:
            target = device_of(data)
        python_float = isinstance(data, float) or (
            isinstance(data, (list, tuple)) and np.asarray(data).dtype == np.float64
        )
        if dtype is None and python_float:
            dtype = DEFAULT_DTYPE
        self.data = target.asarray(data, dtype=dtype)
        self.device = target
        self.requires_grad = requires_grad
        self.grad: Tensor | None = None
        self._ctx: Any = None

    @classmethod
    def _wrap(
        cls, data: Any, device: Device, ctx: Any = None, requires_grad: bool = False
    ) -> Tensor:
        """Fast constructor for op outputs: no conversion, no checks."""
        t = cls.__new__(cls)
        t.data, t.device, t.requires_grad, t.grad, t._ctx = data, device, requires_grad, None, ctx
        return t

    @staticmethod
    def _apply(op: type[Op], inputs: tuple, attrs: dict) -> Tensor:
        device = None
        arrays = []
        needs_grad = False
        for x in inputs:
            if isinstance(x, Tensor):
                if device is None:
                    device = x.device
                elif x.device is not device:
                    raise DeviceError(f"{op.name}: operands on {device} and {x.device}")
                arrays.append(x.data)
                needs_grad = needs_grad or x.requires_grad
            else:
                arrays.append(x)
        try:
            if _op_observer is None:
                out = op.forward(device.xp, *arrays, **attrs)
            else:
                out = _observed_forward(op, device, arrays, attrs)
        except (ValueError, IndexError, TypeError):
            op.infer(*inputs, **attrs)  # the shape rule explains bad operands with a ShapeError
            raise
        if isinstance(out, np.generic):  # NumPy turns 0-d results into scalars; keep arrays
            out = np.asarray(out)
        if _output_watcher is not None:
            _output_watcher(op, out, _backward_of)
        if needs_grad and _grad_enabled and op.differentiable:
            return Tensor._wrap(out, device, (op, inputs, attrs), True)
        return Tensor._wrap(out, device)

    # ------------------------------------------------------------ properties and conversion

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def numpy(self) -> np.ndarray:
        """A host NumPy array (a copy when the tensor lives on a GPU)."""
        return to_host(self.data)

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise AutogradError(f"item() needs a single value, tensor has shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> Tensor:
        """The same data, cut off from the tape."""
        return Tensor._wrap(self.data, self.device)

    def to(self, device: str | Device) -> Tensor:
        target = get_device(device)
        if target is self.device:
            return self
        return Tensor._wrap(target.asarray(self.data), target, requires_grad=self.requires_grad)

    def __len__(self) -> int:
        return self.shape[0]

    def __bool__(self) -> bool:
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.numpy()!r}, device={self.device}{grad})"

    # ------------------------------------------------------------ autograd

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires it.

        `grad` is the upstream gradient; it may be left out only for a single-value tensor.
        """
        if not self.requires_grad:
            raise AutogradError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.size != 1:
                raise AutogradError(
                    f"backward() without a gradient needs a single-value tensor, got {self.shape}"
                )
            grad = self.device.xp.ones(self.shape, dtype=self.dtype)
        upstream = grad if isinstance(grad, Tensor) else Tensor(grad, self.dtype, self.device)
        if upstream.shape != self.shape:
            raise AutogradError(f"backward() gradient {upstream.shape} != tensor {self.shape}")

        if self._ctx is None:  # a leaf: d(self)/d(self) is the identity
            self.grad = _owned(upstream) if self.grad is None else self.grad + upstream
            return
        grads: dict[int, Tensor] = {id(self): upstream.detach()}
        global _backward_of
        watched = _output_watcher is not None
        with no_grad():
            try:
                for node in reversed(topological_order(self, tape_inputs)):
                    g = grads.pop(id(node), None)
                    op, inputs, attrs = node._ctx
                    if g is not None:  # None: reached only through non-differentiable inputs
                        if watched:
                            _backward_of = node
                        thunks = op.vjp(g, node, *inputs, **attrs)
                        for x, thunk in zip(inputs, thunks, strict=False):
                            if thunk is not None and isinstance(x, Tensor) and x.requires_grad:
                                _accumulate(x, thunk(), grads, op)
                    if not retain_graph:
                        node._ctx = _FREED
            finally:
                _backward_of = None


def _accumulate(x: Tensor, gx: Tensor, grads: dict[int, Tensor], op: type[Op]) -> None:
    if gx.shape != x.shape:
        raise AutogradError(f"vjp of {op.name} gave gradient {gx.shape} for input {x.shape}")
    if x._ctx is None:
        x.grad = _owned(gx) if x.grad is None else x.grad + gx
    elif id(x) in grads:
        grads[id(x)] = grads[id(x)] + gx
    else:
        grads[id(x)] = gx


def _owned(g: Tensor) -> Tensor:
    """A writable copy: a vjp may return a read-only broadcast view, or the very array it gave
    another leaf (`a + b`), and optimizers may update `.grad` in place."""
    return Tensor._wrap(g.data.copy(), g.device)


def topological_order(root: Any, parents: Callable[[Any], Iterable[Any]]) -> list[Any]:
    """`root` and everything it depends on, each after all its `parents` (iterative: deep
    graphs are fine). Eager `backward()` and graph `gradients()` both walk this order.

    A node is marked when it is expanded, not when it is pushed, so a node used by two
    consumers is placed after both have been reached.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        stack.extend((x, False) for x in parents(node) if id(x) not in visited)
    return order


def tape_inputs(node: Tensor) -> list[Tensor]:
    """The inputs of `node`'s tape entry that have tape entries of their own."""
    if node._ctx is _FREED:
        raise AutogradError(
            "backward() through a graph that was already freed: "
            "pass retain_graph=True to the first backward()"
        )
    return [x for x in node._ctx[1] if isinstance(x, Tensor) and x._ctx is not None]


# ---------------------------------------------------------------- constructors


def tensor(
    data: Any, dtype: Any = None, device: str | Device | None = None, requires_grad: bool = False
) -> Tensor:
    """A tensor from a list, scalar or array; Python floats become float32 by default."""
    return Tensor(data, dtype, device, requires_grad)


def zeros(shape: tuple[int, ...], dtype: Any = DEFAULT_DTYPE, device: Any = "cpu") -> Tensor:
    target = get_device(device)
    return Tensor._wrap(target.xp.zeros(shape, dtype=dtype), target)


def ones(shape: tuple[int, ...], dtype: Any = DEFAULT_DTYPE, device: Any = "cpu") -> Tensor:
    target = get_device(device)
    return Tensor._wrap(target.xp.ones(shape, dtype=dtype), target)
