"""SGD, Adam, AdamW and RMSprop: each a pure update rule over operands plus one shared eager loop.

The rule `update_rule(param, grad, state, **step_scalars) -> (new_param, new_state)` uses only
Python operators and `trainctl.autograd.ops`, so it runs on eager tensors and traces on graph
values alike. Constant hyperparameters are attributes, frozen into a trace; values that change
every update come from `step_scalars()`. All per-parameter state starts at zero, which is what
lets one rule (and one trace) serve the first update too: SGD's "buffer = grad on the first
update" is a per-step scalar `grad_factor` (1 on the first update, 1 - dampening after;
unused when dampening is 0).

The clock is global: `step_count` counts `step()` calls, and Adam's bias corrections and SGD's
first-update factor follow it. PyTorch counts per parameter; the two differ only for a parameter
that has no gradient on some updates (it is skipped, but the clock still moves).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from trainctl.autograd import Tensor, no_grad, zeros
from trainctl.errors import OptimizerError, StateDictError
from trainctl.optim.checks import check_arguments, check_names, real_in
from trainctl.optim.flat import FlatGroup
from trainctl.optim.schedules import ConstantLR, Schedule

State = dict[str, Any]  # state name -> operand shaped like its parameter


class Optimizer:
    """The eager loop, state dicts and the learning-rate clock; subclasses supply the rule."""

    kind: ClassVar[str]
    default_lr: ClassVar[float | None] = None

    def __init__(self, params: Iterable[Tensor], lr: float | None, schedule: Schedule | None):
        self.params = _check_params(self._owner, params)
        self.schedule = self._resolve_schedule(lr, schedule)
        self.step_count = 0
        self.state: dict[int, State] = {}
        self._flat_groups: dict[tuple, FlatGroup] = {}  # by dtype and device

    @property
    def _owner(self) -> str:
        return type(self).__name__

    def _resolve_schedule(self, lr: float | None, schedule: Schedule | None) -> Schedule:
        if schedule is None:
            if lr is None and self.default_lr is None:
                raise OptimizerError(f"{self._owner} needs a learning rate: pass lr=")
            lr = self.default_lr if lr is None else lr
            return ConstantLR(real_in(self._owner, "lr", lr))
        if not isinstance(schedule, Schedule):
            raise OptimizerError(
                f"{self._owner}: schedule must be a Schedule (see make_schedule), "
                f"got {type(schedule).__name__}"
            )
        if lr is not None and real_in(self._owner, "lr", lr) != schedule.base_lr:
            raise OptimizerError(
                f"{self._owner}: lr={lr} disagrees with the schedule's base_lr="
                f"{schedule.base_lr}; pass the same value or leave lr out"
            )
        return schedule

    @property
    def lr(self) -> float:
        """The learning rate the next `step()` will use."""
        return self.schedule.lr_at(self.step_count)

    # ------------------------------------------------------------ the rule (graph mode uses these)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the per-parameter state; every entry has its parameter's shape and dtype."""
        return ()

    def hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def step_scalars(self) -> dict[str, float]:
        """Host floats the next update takes (keyword arguments of `update_rule`); pure."""
        return {"lr": self.lr}

    def update_rule(self, param: Any, grad: Any, state: State, **scalars: Any) -> tuple[Any, State]:
        raise NotImplementedError

    def init_state(self, param: Tensor) -> dict[str, Tensor]:
        return {name: zeros(param.shape, param.dtype, param.device) for name in self.state_names}

    # ------------------------------------------------------------ eager use

    def step(self) -> None:
        """Apply the rule to every parameter that has a gradient, then advance the clock.

        The parameters of each dtype are updated as one flat array (`flat.py`): the same
        bits as one update per parameter, in a fixed number of array calls."""
        active = [i for i, p in enumerate(self.params) if p.grad is not None]
        for index in active:
            _check_grad(self._owner, index, self.params[index])
        scalars = self.step_scalars()
        with no_grad():
            for indices in self.flat_groups(active):
                self._update_flat(indices, scalars)
        self.step_count += 1

    def flat_groups(self, indices: list[int]) -> list[list[int]]:
        """The parameters `indices` in the groups one update covers as one flat array (graph
        mode traces the same groups): by dtype and device, each in index order."""
        groups: dict[tuple, list[int]] = {}
        for index in indices:
            param = self.params[index]
            groups.setdefault((param.dtype, param.device.name), []).append(index)
        return list(groups.values())

    def _update_flat(self, indices: list[int], scalars: dict[str, float]) -> None:
        members = [(i, self.params[i]) for i in indices]
        storage = (members[0][1].dtype, members[0][1].device.name)
        group = self._flat_groups.get(storage)
        if group is None or group.indices != tuple(indices):  # one kept per dtype: the latest
            group = self._flat_groups[storage] = FlatGroup(tuple(indices), [p for _, p in members])
        states = [self.state[i] if i in self.state else self.init_state(p) for i, p in members]
        param = group.gather("param", [p.data for _, p in members])
        grad = group.concatenate([p.grad.data for _, p in members])
        state = {
            name: group.gather(name, [entry[name].data for entry in states])
            for name in self.state_names
        }
        new_param, new_state = self.update_rule(param, grad, state, **scalars)
        for (_, p), view in zip(members, group.scatter("param", new_param), strict=True):
            p.data = view
        entries: list[State] = [{} for _ in members]
        for name, value in new_state.items():
            for entry, view in zip(entries, group.scatter(name, value), strict=True):
                entry[name] = Tensor._wrap(view, group.device)
        for index, entry in zip(indices, entries, strict=True):
            self.state[index] = entry

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def state_dict(self) -> dict[str, Any]:
        """Host copies of everything a resume needs; `hyperparameters` is only a record."""
        return {
            "kind": self.kind,
            "step_count": self.step_count,
            "hyperparameters": self.hyperparameters(),
            "param_shapes": [list(p.shape) for p in self.params],
            "state": {
                index: {name: np.array(t.numpy()) for name, t in entry.items()}
                for index, entry in sorted(self.state.items())
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the clock and per-parameter state (all or nothing).

        Hyperparameters come from the constructor (the config), not from the state dict, so a
        resume may change them on purpose. State keys may be ints or digit strings.
        """
        owner = self._owner
        if not isinstance(state_dict, Mapping):
            raise StateDictError(f"{owner}: a state dict is a mapping, got {type(state_dict)}")
        keys = ("kind", "step_count", "param_shapes", "state")
        missing = [key for key in keys if key not in state_dict]
        if missing:
            raise StateDictError(f"{owner}: the state dict has no {', '.join(missing)}")
        if state_dict["kind"] != self.kind:
            raise StateDictError(
                f"the state dict is for optimizer {state_dict['kind']!r}, "
                f"this optimizer is {self.kind!r}"
            )
        shapes = [tuple(shape) for shape in state_dict["param_shapes"]]
        if len(shapes) != len(self.params):
            raise StateDictError(
                f"{owner}: the state dict is for {len(shapes)} parameters, "
                f"this optimizer has {len(self.params)}"
            )
        for index, (shape, param) in enumerate(zip(shapes, self.params, strict=True)):
            if shape != param.shape:
                raise StateDictError(
                    f"{owner}: parameter {index} has shape {param.shape}, "
                    f"the state dict has {shape}"
                )
        step_count = state_dict["step_count"]
        if not isinstance(step_count, numbers.Integral) or step_count < 0:
            raise StateDictError(f"{owner}: step_count must be an integer >= 0, got {step_count!r}")
        if not isinstance(state_dict["state"], Mapping):
            raise StateDictError(f"{owner}: 'state' must map parameter indices to their state")
        state = {}
        for key, entry in state_dict["state"].items():
            index = _param_index(owner, key, len(self.params))
            state[index] = self._load_entry(index, entry)
        self.step_count, self.state = int(step_count), state

    def _load_entry(self, index: int, entry: Mapping[str, Any]) -> dict[str, Tensor]:
        param = self.params[index]
        if not isinstance(entry, Mapping):
            raise StateDictError(f"{self._owner}: the state of parameter {index} is not a mapping")
        if sorted(entry) != sorted(self.state_names):
            raise StateDictError(
                f"{self._owner}: parameter {index} has state {sorted(entry)} in the state dict, "
                f"this optimizer keeps {sorted(self.state_names)} (were its settings changed?)"
            )
        tensors = {}
        for name in self.state_names:
            array = np.array(entry[name], dtype=param.dtype)  # a copy, cast to the parameter
            if array.shape != param.shape:
                raise StateDictError(
                    f"{self._owner}: state {name!r} of parameter {index} has shape "
                    f"{array.shape}, the parameter has {param.shape}"
                )
            tensors[name] = Tensor(array, device=param.device)
        return tensors

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{self._owner}({settings}, params={len(self.params)})"


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch semantics.

    g = grad + weight_decay * p; buf = momentum * buf + (1 - dampening) * g, buf = g on the
    first update; p -= lr * (g + momentum * buf if nesterov else buf) (p -= lr * g without
    momentum).
    """

    kind = "sgd"

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        self.momentum = real_in("SGD", "momentum", momentum, 0.0, 1.0)
        self.dampening = real_in("SGD", "dampening", dampening, 0.0, 1.0, high_closed=True)
        self.weight_decay = real_in("SGD", "weight_decay", weight_decay)
        self.nesterov = _check_bool("SGD", "nesterov", nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise OptimizerError(
                f"SGD: nesterov=True needs momentum in (0, 1) and dampening = 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}"
            )
        super().__init__(params, lr, schedule)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "base_lr": self.schedule.base_lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "dampening": self.dampening,
        }

    def step_scalars(self) -> dict[str, float]:
        grad_factor = 1.0 if self.step_count == 0 else 1.0 - self.dampening
        return {"lr": self.lr, "grad_factor": grad_factor}

    def update_rule(
        self, param: Any, grad: Any, state: State, *, lr: Any, grad_factor: Any
    ) -> tuple[Any, State]:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if not self.momentum:
            return param - lr * grad, {}
        # With dampening 0 the factor is always 1: skip the multiply (a trace-time decision).
        damped = grad_factor * grad if self.dampening else grad
        buf = self.momentum * state["momentum_buffer"] + damped
        direction = grad + self.momentum * buf if self.nesterov else buf
        return param - lr * direction, {"momentum_buffer": buf}


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, bias-corrected (PyTorch's Adam).

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). The default lr is 1e-3.
    """

    kind = "adam"
    default_lr = 1e-3
    decoupled_weight_decay = False

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float | None = None,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        owner = type(self).__name__
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise OptimizerError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = real_in(owner, "betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = real_in(owner, "betas[1]", betas[1], 0.0, 1.0)
        self.eps = real_in(owner, "eps", eps)
        self.weight_decay = real_in(owner, "weight_decay", weight_decay)
        super().__init__(params, lr, schedule)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "base_lr": self.schedule.base_lr,
            "betas": [self.beta1, self.beta2],
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def step_scalars(self) -> dict[str, float]:
        t = self.step_count + 1
        return {
            "lr": self.lr,
            "bias_correction1": 1.0 - self.beta1**t,
            "bias_correction2": 1.0 - self.beta2**t,
        }

    def update_rule(
        self,
        param: Any,
        grad: Any,
        state: State,
        *,
        lr: Any,
        bias_correction1: Any,
        bias_correction2: Any,
    ) -> tuple[Any, State]:
        if self.weight_decay and self.decoupled_weight_decay:
            param = param * (1.0 - lr * self.weight_decay)
        elif self.weight_decay:
            grad = grad + self.weight_decay * param
        exp_avg = self.beta1 * state["exp_avg"] + (1.0 - self.beta1) * grad
        exp_avg_sq = self.beta2 * state["exp_avg_sq"] + (1.0 - self.beta2) * (grad * grad)
        denom = exp_avg_sq.sqrt() / bias_correction2**0.5 + self.eps
        new_param = param - (lr / bias_correction1) * (exp_avg / denom)
        return new_param, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam update."""

    kind = "adamw"
    decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float | None = None,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, schedule=schedule)


class RMSprop(Optimizer):
    """RMSprop, PyTorch semantics; the default lr is 1e-2.

    s = alpha s + (1 - alpha) g^2; avg = sqrt(s - a^2) + eps with a = alpha a + (1 - alpha) g
    when centered, else sqrt(s) + eps; buf = momentum buf + g / avg and p -= lr * buf with
    momentum, else p -= lr * g / avg.
    """

    kind = "rmsprop"
    default_lr = 1e-2

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float | None = None,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        centered: bool = False,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        self.alpha = real_in("RMSprop", "alpha", alpha, 0.0, 1.0)
        self.eps = real_in("RMSprop", "eps", eps)
        self.momentum = real_in("RMSprop", "momentum", momentum, 0.0, 1.0)
        self.weight_decay = real_in("RMSprop", "weight_decay", weight_decay)
        self.centered = _check_bool("RMSprop", "centered", centered)
        super().__init__(params, lr, schedule)

    @property
    def state_names(self) -> tuple[str, ...]:
        return (
            ("square_avg",)
            + (("grad_avg",) if self.centered else ())
            + (("momentum_buffer",) if self.momentum else ())
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "base_lr": self.schedule.base_lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "centered": self.centered,
        }

    def update_rule(self, param: Any, grad: Any, state: State, *, lr: Any) -> tuple[Any, State]:
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        square_avg = self.alpha * state["square_avg"] + (1.0 - self.alpha) * (grad * grad)
        new_state = {"square_avg": square_avg}
        if self.centered:
            grad_avg = self.alpha * state["grad_avg"] + (1.0 - self.alpha) * grad
            avg = (square_avg - grad_avg * grad_avg).sqrt() + self.eps
            new_state["grad_avg"] = grad_avg
        else:
            avg = square_avg.sqrt() + self.eps
        if not self.momentum:
            return param - lr * (grad / avg), new_state
        buf = self.momentum * state["momentum_buffer"] + grad / avg
        new_state["momentum_buffer"] = buf
        return param - lr * buf, new_state


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
}


def make_optimizer(name: str, params: Iterable[Tensor], **kwargs: Any) -> Optimizer:
    """The optimizer called `name` (see OPTIMIZERS). Example: make_optimizer("sgd", ps, lr=0.1)."""
    cls = check_names("optimizer", name, OPTIMIZERS)
    accepted = [arg for arg in inspect.signature(cls).parameters if arg != "params"]
    check_arguments(f"optimizer {name!r}", kwargs, accepted)
    return cls(params, **kwargs)


# ---------------------------------------------------------------- checks


def _check_params(owner: str, params: Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise OptimizerError(
            f"{owner}: params must be an iterable of tensors (e.g. model.parameters()), "
            "got a single Tensor"
        )
    params = list(params)
    if not params:
        raise OptimizerError(f"{owner}: got an empty parameter list")
    seen: dict[int, int] = {}
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            kind = type(param).__name__
            raise OptimizerError(f"{owner}: parameter {index} is a {kind}, not a Tensor")
        if not param.requires_grad:
            raise OptimizerError(
                f"{owner}: parameter {index} does not require grad; pass only trainable tensors"
            )
        if id(param) in seen:
            raise OptimizerError(
                f"{owner}: parameter {index} is the same tensor as parameter {seen[id(param)]}"
            )
        seen[id(param)] = index
    return params


def _check_grad(owner: str, index: int, param: Tensor) -> None:
    grad = param.grad
    if not isinstance(grad, Tensor):
        raise OptimizerError(
            f"{owner}: the grad of parameter {index} is a {type(grad).__name__}, not a Tensor"
        )
    if grad.shape != param.shape or grad.dtype != param.dtype:
        raise OptimizerError(
            f"{owner}: parameter {index} is {param.dtype}{list(param.shape)} but its grad is "
            f"{grad.dtype}{list(grad.shape)}"
        )


def _check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptimizerError(f"{owner}: {name} must be true or false, got {value!r}")
    return bool(value)


def _param_index(owner: str, key: Any, count: int) -> int:
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or not 0 <= key < count:
        raise StateDictError(f"{owner}: state key {key!r} is not a parameter index in [0, {count})")
    return int(key)
