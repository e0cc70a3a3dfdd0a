"""Module and Parameter: the containers layers are built from (PyTorch's model, smaller)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from trainctl.autograd import ops
from trainctl.autograd.tensor import Tensor
from trainctl.backend import Device, get_device, to_host
from trainctl.errors import StateDictError


class Parameter(Tensor):
    """A tensor a module learns: it always requires a gradient."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None, device: str | Device | None = None) -> None:
        super().__init__(data, dtype, device, requires_grad=True)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class Module:
    """A piece of a network: parameters, buffers and submodules found through attributes.

    Assigning a `Parameter` or a `Module` to an attribute registers it; `register_buffer`
    declares non-learned state (BatchNorm running statistics). The rule for state a forward
    pass changes: REBIND the buffer attribute to a new detached tensor
    (`self.running_mean = new_mean`), never write into a buffer's array. Graph mode traces
    the same forward with symbolic values and captures such rebindings as state outputs;
    an in-place write would be invisible to it.
    """

    # The dtype layers compute in under mixed precision (nn/precision.py); None: as stored.
    compute_dtype: np.dtype | None = None

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() first")
        registries = (self._parameters, self._buffers, self._modules)
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        elif name in self._buffers:
            target = self._buffers  # a forward rebinding its state: stays a buffer
        else:
            target = None
        for registry in registries:
            if registry is not target:
                registry.pop(name, None)
        if target is not None:
            target[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None) -> None:
        """Declare `name` as state that is saved and moved with the module but not learned."""
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------ traversal

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every submodule, depth first, each once, with dotted names."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{key}" if name else key, m) for key, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def _named_members(self, registry: str) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for key, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{key}" if prefix else key), value

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) in registration order; a shared parameter appears once."""
        return self._named_members("_parameters")

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers")

    # ------------------------------------------------------------ state

    def _named_state(self) -> Iterator[tuple[str, Module, str, Tensor]]:
        """(dotted name, owner, attribute, tensor) for every parameter, then buffer, per module."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for registry in (module._parameters, module._buffers):
                for key, value in registry.items():
                    if value is None or id(value) in seen:
                        continue
                    seen.add(id(value))
                    yield (f"{prefix}.{key}" if prefix else key), module, key, value

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Host NumPy copies of every parameter and buffer, by dotted name."""
        return OrderedDict(
            (name, np.array(to_host(t.data), copy=True)) for name, _, _, t in self._named_state()
        )

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Copy `state` into the parameters and buffers, cast to their dtypes.

        Nothing is changed unless everything fits. Shape mismatches are always errors; with
        `strict`, so are missing and unexpected names. All problems are reported together.
        """
        own = {name: (module, key, t) for name, module, key, t in self._named_state()}
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        arrays = {}
        mismatched = []
        for name, (_, _, t) in own.items():
            if name not in state:
                continue
            value = state[name]
            array = np.asarray(to_host(value.data if isinstance(value, Tensor) else value))
            if array.shape != tuple(t.shape):
                mismatched.append(f"{name}: expected {tuple(t.shape)}, found {array.shape}")
            arrays[name] = array
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {'; '.join(mismatched)}")
        if problems:
            header = f"cannot load state dict into {type(self).__name__}: "
            raise StateDictError(header + "; ".join(problems))
        for name, array in arrays.items():
            module, key, t = own[name]
            if isinstance(t, Parameter):
                t.data = t.device.asarray(array, dtype=t.dtype)
            else:
                setattr(module, key, Tensor(array, dtype=t.dtype, device=t.device))

    # ------------------------------------------------------------ modes and placement

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, device: str | Device | None = None, dtype: Any = None) -> Module:
        """Move and/or cast parameters and buffers in place (floating-point ones only).

        Parameters keep their identity (only `.data` is rebound), so an optimizer built on
        them stays valid; buffers are rebound to new tensors, as the Module rule asks.
        """
        target = get_device(device) if device is not None else None
        for _, module, key, t in list(self._named_state()):
            moved = _convert(t.data, target or t.device, dtype)
            if isinstance(t, Parameter):
                t.data, t.device = moved, target or t.device
                if t.grad is not None:
                    t.grad = Tensor._wrap(_convert(t.grad.data, t.device, dtype), t.device)
            else:
                setattr(module, key, Tensor._wrap(moved, target or t.device))
        return self

    def set_compute_dtype(self, dtype: Any) -> Module:
        """Compute in `dtype` (float16, bfloat16) in every layer, parameters kept as they are
        (mixed precision); None computes in the parameters' dtype again."""
        for module in self.modules():
            object.__setattr__(module, "compute_dtype", None if dtype is None else np.dtype(dtype))
        return self

    def autocast(self, x: Any) -> Any:
        """`x` in the compute dtype, where one is set and `x` is floating."""
        dtype = self.compute_dtype
        if dtype is None or x is None or x.dtype == dtype or x.dtype.kind not in "fV":
            return x
        return ops.cast(x, dtype)

    def full_precision(self, x: Any) -> Any:
        """`x` in float32 under mixed precision (statistics, means); as it is otherwise."""
        if self.compute_dtype is None or x.dtype == np.float32:
            return x
        return ops.cast(x, np.float32)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # ------------------------------------------------------------ printing

    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of this module's repr."""
        return ""

    def __repr__(self) -> str:
        lines = [f"({key}): " + repr(m).replace("\n", "\n  ") for key, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({self.extra_repr()})"
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _convert(array: Any, device: Device, dtype: Any) -> Any:
    floating = np.issubdtype(array.dtype, np.floating)
    return device.asarray(array, dtype=np.dtype(dtype) if dtype is not None and floating else None)
