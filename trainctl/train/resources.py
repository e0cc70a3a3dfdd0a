"""Resource sanity before a run allocates anything: the memory a step needs, and its length.

`check_resources` runs once the data is loaded and before the model is built. It walks the
config's layer list with the shape of one sample (arithmetic on shapes, no arrays; a Python
model, whose code alone knows its parameters, is built once to count them) and adds up what
a training step holds at once: the parameters, their gradients and the optimizer's state,
and for one batch every layer's output (kept for the backward pass) plus BatchNorm's
centred input, and, at the backward pass's peak, one chunk of the largest convolution's
unfolded patches (convolutions unfold a few images at a time and keep no patches from
forward to backward: `autograd/ops/conv.py`) with that convolution's input and output
gradients, or the two largest activation gradients in flight, whichever is larger (the
largest gradients come after the largest patches are freed).
Measured against the peak a step allocates (tests/faults/test_resources.py), the estimate
of the digits and CIFAR-10 CNNs comes within 1.5x of it, from below; op temporaries are
left out, so it stays a lower bound: a run it refuses would not have fitted. A run also
must not plan more steps than anyone could wait for. `--force` turns both refusals into
notices.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainctl import backend
from trainctl.autograd.ops.conv import CHUNK_BYTES
from trainctl.autograd.tensor import Tensor
from trainctl.backend import Device
from trainctl.config import Config
from trainctl.data import DataSplits
from trainctl.errors import TrainctlError
from trainctl.nn.blocks import INPUT, BlockSpec, joined_shape, run_order
from trainctl.nn.build import LayerSpec, ModelError, count_parameters
from trainctl.nn.precision import precision_of
from trainctl.nn.python_model import build_python_model
from trainctl.optim import make_optimizer

# A billion updates take eleven days even at 1 ms a step; no config means that on purpose.
MAX_PLANNED_STEPS = 10**9
Shape = tuple[int, ...]


class ResourceError(TrainctlError):
    """A run that asks for more memory or more steps than makes sense (`--force` overrides)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step holds at once (a lower bound), and what they are made of."""

    parameters: int  # learned values (BatchNorm's few running statistics are left out)
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    batch_size: int

    @property
    def total(self) -> int:
        return (
            self.parameter_bytes
            + self.gradient_bytes
            + self.optimizer_bytes
            + (self.activation_bytes)
        )

    def describe(self) -> str:
        return (
            f"about {format_bytes(self.total)} (parameters {format_bytes(self.parameter_bytes)},"
            f" gradients {format_bytes(self.gradient_bytes)}, optimizer state "
            f"{format_bytes(self.optimizer_bytes)}, activations "
            f"{format_bytes(self.activation_bytes)} for a batch of {self.batch_size:,})"
        )


def format_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the estimate


@dataclass
class _Tally:
    parameters: int = 0
    activations: int = 0  # values per sample a training step keeps for the backward pass
    patches: int = 0  # values per sample of the largest convolution's patches
    largest: int = 0  # the largest layer output: gradients in flight are that size
    patch_grads: int = 0  # values per sample of that convolution's input and output gradients


def _linear(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if not shape:
        return None
    tally.parameters += shape[-1] * args["out"] + (args["out"] if args.get("bias") else 0)
    return (*shape[:-1], args["out"])


def _conv2d(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if len(shape) != 3:
        return None
    (h, w, c), k, stride, pad = shape, args["kernel"], args["stride"], args["padding"]
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if oh < 1 or ow < 1:
        return None
    tally.parameters += k * k * c * args["out"] + (args["out"] if args.get("bias") else 0)
    if oh * ow * k * k * c > tally.patches:  # its input and output gradients come with them
        tally.patches, tally.patch_grads = oh * ow * k * k * c, h * w * c + oh * ow * args["out"]
    return (oh, ow, args["out"])


def _pool(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if len(shape) != 3:
        return None
    kernel = args["kernel"]
    stride = args.get("stride") or kernel
    oh, ow = (shape[0] - kernel) // stride + 1, (shape[1] - kernel) // stride + 1
    return (oh, ow, shape[2]) if oh >= 1 and ow >= 1 else None


def _normalization(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if not shape:
        return None
    tally.parameters += 2 * shape[-1]  # scale and shift
    return shape


def _batch_norm(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    """Training keeps its input centred on the batch mean besides its output."""
    if _normalization(shape, args, tally) is None:
        return None
    tally.activations += math.prod(shape)
    return shape


def _embedding(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    tally.parameters += args["num"] * args["dim"]
    return (*shape, args["dim"])


def _positional_embedding(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if len(shape) != 2:
        return None
    tally.parameters += (args.get("max_len") or shape[0]) * shape[1]
    return shape


def _attention(shape: Shape, heads: int, tally: _Tally) -> None:
    """Its q/k/v and output projections, and the (heads, T, T) scores and their softmax."""
    length, dim = shape
    tally.parameters += 4 * dim * dim + 4 * dim
    tally.activations += 3 * length * dim + 2 * heads * length * length


def _self_attention(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if len(shape) != 2 or shape[1] % args["heads"]:
        return None
    _attention(shape, args["heads"], tally)
    return shape


def _transformer_block(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if _self_attention(shape, args, tally) is None:
        return None
    dim, hidden = shape[1], args["mlp_ratio"] * shape[1]
    tally.parameters += 4 * dim + 2 * dim * hidden + hidden + dim  # two norms, the MLP
    tally.activations += shape[0] * hidden
    return shape


def _lstm(shape: Shape, args: dict, tally: _Tally) -> Shape | None:
    if len(shape) != 2:
        return None
    hidden = args["hidden"]
    tally.parameters += (shape[1] + hidden + 1) * 4 * hidden
    tally.activations += shape[0] * 4 * hidden  # the gates of every step
    return (shape[0], hidden)


_SHAPE_RULES = {
    "linear": _linear,
    "conv2d": _conv2d,
    "max_pool2d": _pool,
    "avg_pool2d": _pool,
    "global_avg_pool": lambda shape, args, tally: shape[-1:] if len(shape) == 3 else None,
    "upsample2d": lambda shape, args, tally: (
        (shape[0] * args["scale"], shape[1] * args["scale"], shape[2]) if len(shape) == 3 else None
    ),
    "flatten": lambda shape, args, tally: (math.prod(shape),),
    "batch_norm": _batch_norm,
    "layer_norm": _normalization,
    "embedding": _embedding,
    "positional_embedding": _positional_embedding,
    "self_attention": _self_attention,
    "transformer_block": _transformer_block,
    "lstm": _lstm,
}


def _walk(specs: Sequence[LayerSpec], shape: Shape, tally: _Tally) -> Shape | None:
    """The shape after `specs`, tallying as it goes; None where a layer does not fit (the
    model builder reports that properly; the tally so far is still a lower bound)."""
    for spec in specs:
        if spec.type == "residual":
            if _walk(spec.layers or [], shape, tally) is None:
                return None
        else:
            rule = _SHAPE_RULES.get(spec.type)
            shape = shape if rule is None else rule(shape, dict(spec.args), tally)
            if shape is None:
                return None
        tally.activations += math.prod(shape)
        tally.largest = max(tally.largest, math.prod(shape))
    return shape


def _walk_blocks(blocks: Sequence[BlockSpec], sample: Shape, tally: _Tally) -> None:
    """`_walk` over each block in the order they run, a join's output counted as a layer's."""
    by_name = {block.name: block for block in blocks}
    shapes = {INPUT: sample}
    for name in run_order(blocks):
        block = by_name[name]
        try:
            shape: Shape | None = joined_shape(block, by_name, shapes)
        except ModelError:
            return
        if len(block.inputs) > 1:
            tally.activations += math.prod(shape)
        shape = _walk(block.layers, shape, tally) if block.layers else shape
        if shape is None:
            return
        shapes[name] = shape


def _python_model_parameters(config: Config, sample: Shape, dtype: np.dtype) -> int:
    """The parameters of a Python model, counted on the model: its code alone knows them, so
    it is built here once (its __init__ and a forward on one zero sample run, its activations
    are not counted), and the default generator put back as it was, so that the model
    training builds next draws the same weights."""
    generator = backend.default_generator.state_dict()
    try:
        model, _ = build_python_model(config.model.python or "", config.model.args, sample, dtype)
    except ModelError:
        return 0  # building the real model reports it at its key
    finally:
        backend.default_generator.load_state_dict(generator)
    return count_parameters(model)


def _optimizer_state_arrays(config: Config) -> int:
    """Arrays of state the optimizer keeps per parameter (momentum: 1, Adam: 2)."""
    probe = Tensor(np.zeros(1, np.float32), requires_grad=True)
    try:
        optimizer = make_optimizer(config.optimizer.name, [probe], **config.optimizer.args)
        return len(optimizer.state_names)
    except TrainctlError:
        return 0  # building the real optimizer reports the problem


def estimate_memory(config: Config, data: DataSplits) -> MemoryEstimate:
    """What one training step of `config` on `data` holds at once, at the least."""
    tally = _Tally()
    sample = tuple(data.train.inputs.shape[1:])
    if config.model.kind == "blocks":
        _walk_blocks(config.model.blocks or [], sample, tally)
    elif config.model.kind == "python":
        tally.parameters += _python_model_parameters(config, sample, data.train.inputs.dtype)
    else:
        _walk(config.model.layers, sample, tally)
    itemsize = precision_of(config.dtype).param_dtype.itemsize  # activations: an upper bound
    batch = min(config.data.batch_size, len(data.train))
    evaluated = max((len(split) for split in (data.val, data.test) if split is not None), default=0)
    eval_batch = min(config.data.eval_batch_size or config.data.batch_size, evaluated)
    # every layer's output stays on the tape (or in a planned buffer) until the backward pass
    rows = max(batch, eval_batch)
    held = (tally.activations + math.prod(sample)) * rows * itemsize
    patch_bytes = tally.patches * itemsize
    chunk = min(rows, max(1, CHUNK_BYTES // patch_bytes)) if patch_bytes else 0
    # the patches' chunk and the two largest gradients are never in flight at once
    at_patches = chunk * patch_bytes + tally.patch_grads * rows * itemsize
    activations = held + max(2 * tally.largest * rows * itemsize, at_patches)
    parameter_bytes = tally.parameters * itemsize
    return MemoryEstimate(
        tally.parameters,
        parameter_bytes,
        parameter_bytes,
        parameter_bytes * _optimizer_state_arrays(config),
        activations,
        batch,
    )


# ---------------------------------------------------------------- what is available


def available_memory(device: Device) -> int | None:
    """Bytes the device can still hand out (None when the system does not say)."""
    if device.name == "cuda":
        free, _ = device.xp.cuda.runtime.memGetInfo()
        return int(free) + int(device.xp.get_default_memory_pool().free_bytes())
    return _host_available()


def _host_available() -> int | None:
    """MemAvailable, or free pages where there is no /proc; a cgroup limit lowers it."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


# ---------------------------------------------------------------- the checks


def planned_steps_of(config: Config, train_samples: int) -> tuple[int, str]:
    """The updates the run plans and the key that decides it (epochs or max_steps)."""
    batch, train = config.data.batch_size, config.train
    per_epoch = train_samples // batch if train.drop_last else math.ceil(train_samples / batch)
    by_epochs = math.inf if train.epochs is None else train.epochs * per_epoch
    by_steps = math.inf if train.max_steps is None else train.max_steps
    if by_steps <= by_epochs:
        return int(by_steps), "train.max_steps"
    return int(by_epochs), "train.epochs"


def check_resources(config: Config, data: DataSplits, device: Device, force: bool) -> list[str]:
    """Refuse (ResourceError) a run that cannot fit or cannot end; the notices to show.

    With `force` the refusals become notices and the run goes ahead.
    """
    notices = []
    samples = len(data.train)
    if config.data.batch_size > samples:
        notices.append(
            f"data.batch_size {config.data.batch_size:,} is larger than the training split "
            f"({samples:,} samples): every step uses the whole split"
        )
    steps, key = planned_steps_of(config, samples)
    if steps > MAX_PLANNED_STEPS:
        problem = (
            f"{config.source}: {key} plans {steps:,} steps, more than {MAX_PLANNED_STEPS:,} "
            f"(at 1 ms a step that is {steps / 1000 / 86400 / 365.25:,.1f} years)"
        )
        if not force:
            raise ResourceError(f"{problem}: lower {key}, or pass --force to start it anyway")
        notices.append(f"{problem}; starting anyway (--force)")
    estimate = estimate_memory(config, data)
    available = available_memory(device)
    if available is not None and estimate.total > available:
        problem = (
            f"{config.source}: a training step needs {estimate.describe()}, but {device} has "
            f"{format_bytes(available)} available"
        )
        if not force:
            raise ResourceError(
                f"{problem}: make the model or data.batch_size smaller, or pass --force to "
                "try anyway"
            )
        notices.append(f"{problem}; trying anyway (--force)")
    return notices
