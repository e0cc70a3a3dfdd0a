"""The typed schema of a run config: what the trainer reads.

Named things (layers, losses, metrics, optimizers, transforms) carry every argument of their
registry entry, defaults filled in. The defaults here are what a config that leaves a
section out gets; `trainctl.config.check` builds these objects from a checked YAML file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from trainctl.config.document import Document

MAX_RUN_NAME_LENGTH = 200  # leaves room for a timestamp and suffix in a 255-byte file name
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")


def is_run_name(name: Any) -> bool:
    """Whether `name` is safe as one folder name: 1 to MAX_RUN_NAME_LENGTH letters, digits,
    '.', '_' or '-', and not '.' or '..' (which would name a folder that exists already)."""
    return (
        isinstance(name, str)
        and _RUN_NAME.fullmatch(name) is not None
        and name not in (".", "..")
        and len(name) <= MAX_RUN_NAME_LENGTH
    )


@dataclass(frozen=True)
class NamedConfig:
    """A named thing (loss, metric, optimizer, transform) and all of its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerConfig:
    """One entry of model.layers; `layers` holds the body of a residual block."""

    type: str
    args: dict[str, Any] = field(default_factory=dict)
    layers: list[LayerConfig] | None = None
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class BlockConfig:
    """One named block of model.blocks: its inputs joined (concat on the last axis, or add),
    then its layers (none: just the join)."""

    name: str
    inputs: list[str]
    join: Literal["concat", "add"] | None = None
    layers: list[LayerConfig] = field(default_factory=list)
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ModelConfig:
    """A model is one of: a list of layers, a DAG of named blocks (`blocks`, `output`), or a
    user's Module subclass (`python`: 'FILE.py:Class' with FILE absolute, or
    'package.module:Class'; `args` for its __init__)."""

    layers: list[LayerConfig] = field(default_factory=list)
    blocks: list[BlockConfig] | None = None
    output: str | None = None
    python: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> Literal["layers", "blocks", "python"]:
        if self.python is not None:
            return "python"
        return "layers" if self.blocks is None else "blocks"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    path: str | None = None
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    eval_batch_size: int | None = None
    val_split: float = 0.1
    test_split: float = 0.1
    shuffle: bool = True
    transforms: list[NamedConfig] = field(default_factory=list)
    prefetch: int = 2


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"
    args: dict[str, Any] = field(default_factory=dict)
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0


@dataclass(frozen=True)
class EarlyStoppingConfig:
    metric: str = "loss"
    mode: Literal["min", "max", "auto"] = "auto"
    patience: int = 5
    min_delta: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = 10
    max_steps: int | None = None
    log_every: int = 50
    eval_every: int | None = None
    checkpoint_every: int | None = None
    early_stopping: EarlyStoppingConfig | None = None
    grad_clip: float | None = None
    drop_last: bool = False
    best_metric: str | None = None


# The keys `train --resume RUN --set KEY=VALUE` may change: how long the run goes on, what it
# logs, evaluates and checkpoints, when it stops early, how evaluation and loading are batched,
# whether a missing data set is fetched (its files are checksummed), CUDA graph capture (it
# replays the same kernels), and the numerics checks. None of them changes a step already
# taken or the weights, batches and random draws of the steps that follow (one exception: a
# cosine schedule whose total_steps is null spans the run, so it stretches to a new length
# from the resume on).
# Every other key would make the resumed run a different run.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.max_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.early_stopping",
    "data.eval_batch_size",
    "data.prefetch",
    "data.download",
    "graph.cuda_graphs",
    "debug.check_numerics",
    "threads",
    "distributed",
)


def is_resumable(key: str) -> bool:
    """Whether a resume may change the dotted config `key` (or a key inside it)."""
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_KEYS)


@dataclass(frozen=True)
class DebugConfig:
    check_numerics: bool = False


@dataclass(frozen=True)
class GraphConfig:
    cuda_graphs: bool = True


@dataclass(frozen=True)
class DistributedConfig:
    """Data parallelism over MPI (`trainctl train --nproc N`); ignored by one process."""

    bucket_mb: float = 25.0
    check_every: int = 100


def default_loss() -> NamedConfig:
    return NamedConfig("cross_entropy", {"label_smoothing": 0.0})


def default_optimizer() -> NamedConfig:
    args = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "dampening": 0.0}
    return NamedConfig("sgd", args)


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole run. `source` (the file it came from) and `document` are not part of its
    dict form."""

    name: str
    seed: int = 0
    mode: Literal["eager", "graph"] = "eager"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int | Literal["auto"] = "auto"
    dtype: Literal["float32", "float64", "mixed_float16", "mixed_bfloat16"] = "float32"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig
    loss: NamedConfig = field(default_factory=default_loss)
    metrics: list[NamedConfig] = field(default_factory=lambda: [NamedConfig("accuracy")])
    optimizer: NamedConfig = field(default_factory=default_optimizer)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    source: str = field(default="<string>", compare=False)
    # The checked YAML: where each value came from (a file line or a --set), so a check that
    # runs after loading (the model against the data, the transforms) can place its error.
    document: Document | None = field(default=None, compare=False, repr=False)


NOT_KEYS = ("source", "document")  # fields of Config that are not keys of a config file
