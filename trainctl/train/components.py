"""Everything a config describes, built and wired together: data, model, loss, optimizer, step.

`train`, `eval`, `compare` and `graph` all start from `build_components(config)`, so a run
is assembled the same way whichever command asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainctl import backend, nn
from trainctl.autograd import ops
from trainctl.config import Config, ConfigError, ConfigIssue, config_issue
from trainctl.config.document import parse_key
from trainctl.data import DataSplits, Loader, TransformError, dataset_entry, load_splits
from trainctl.data.download_progress import RichDownloadProgress
from trainctl.data.fetch import fetch_dataset
from trainctl.nn.blocks import build_blocks
from trainctl.nn.build import ModelError, build_model
from trainctl.nn.losses import LOSSES
from trainctl.nn.precision import precision_of
from trainctl.nn.python_model import build_python_model
from trainctl.optim import OPTIMIZERS, LossScaler, Optimizer, make_optimizer, make_schedule
from trainctl.train.resources import planned_steps_of
from trainctl.train.step import Step, make_step

Operand = ops.Operand
LossFn = Callable[[Operand, Operand], Operand]

# Losses whose targets are float arrays shaped like the outputs (class labels are converted).
_DENSE_TARGET_LOSSES = ("mse", "bce_with_logits")

# The keys `load_data` reads: together they decide which samples are in which split, so a run
# scored with other values would count samples it trained on as held out.
SPLIT_KEYS = ("seed", "data.dataset", "data.options", "data.path", "data.val_split",
              "data.test_split")  # fmt: skip


@dataclass
class Components:
    config: Config
    device: backend.Device
    dtype: np.dtype
    data: DataSplits
    model: nn.Module
    loss_fn: LossFn
    optimizer: Optimizer
    output_shape: tuple[int, ...]
    loss_scaler: LossScaler | None = None  # float16 mixed precision

    def loader(
        self,
        split: str,
        *,
        training: bool = False,
        batch_size: int | None = None,
        rows: tuple[int, int] | None = None,
    ) -> Loader:
        """Batches of `split` (of its samples [start, stop) with `rows`); training shuffles,
        drops the last batch if asked and augments.

        The loader fits every transform to a sample at once: one that does not fit the data
        is an error at its place in the config."""
        data_config = self.config.data
        dataset = getattr(self.data, split)
        if rows is not None:
            dataset = dataset.subset(np.arange(*rows))
        if training:
            size = batch_size or data_config.batch_size
        else:
            size = batch_size or data_config.eval_batch_size or data_config.batch_size
        try:
            return Loader(
                dataset,
                size,
                shuffle=training and data_config.shuffle,
                drop_last=training and self.config.train.drop_last,
                seed=self.config.seed,
                transforms=[(t.name, t.args) for t in data_config.transforms],
                augment=training,
                prefetch=data_config.prefetch,
            )
        except TransformError as exc:
            key = ("data", "transforms", exc.index, data_config.transforms[exc.index].name)
            raise ConfigError([config_issue(self.config, key, str(exc))]) from None

    def prepare_targets(self, targets: np.ndarray) -> np.ndarray:
        """Targets in the form the loss takes: integer labels become one-hot (or a 0/1
        column for a single binary logit) for losses that compare dense values."""
        if self.config.loss.name not in _DENSE_TARGET_LOSSES:
            return targets
        if np.issubdtype(targets.dtype, np.integer):
            classes = self.output_shape[-1]
            if classes == 1:
                return targets.reshape(-1, 1).astype(self.dtype)
            return np.eye(classes, dtype=self.dtype)[targets]
        return targets.reshape(len(targets), *self.output_shape).astype(self.dtype, copy=False)

    def make_step(self, mode: str | None = None, cuda_graphs: bool = True) -> Step:
        """The step of `mode` (default: the config's); `cuda_graphs=False` keeps graph mode
        from capturing it (data parallelism calls MPI from the host in the middle)."""
        return make_step(
            mode or self.config.mode,
            self.model,
            self.loss_fn,
            self.optimizer,
            device=self.device,
            dtype=self.dtype,
            grad_clip=self.config.train.grad_clip,
            check_numerics=self.config.debug.check_numerics,
            cuda_graphs=cuda_graphs and self.config.graph.cuda_graphs,
            max_traces=self.config.graph.max_traces,
            loss_scaler=self.loss_scaler,
        )

    def total_steps(self) -> int:
        return planned_steps_of(self.config, len(self.data.train))[0]


def make_loss_fn(name: str, args: dict[str, Any]) -> LossFn:
    """The loss a config names, its arguments (e.g. label_smoothing) bound."""
    loss = LOSSES[name].fn
    return lambda out, y: loss(out, y, **args)


def _config_error(config: Config, key: str, message: str, line: int | None = None) -> ConfigError:
    return ConfigError([ConfigIssue(config.source, line, key, message)])


def _layer_line(config: Config, indices: tuple[int, ...]) -> int | None:
    """The line of the layer at `indices` (one index per nesting level) in the config file."""
    layers, line = config.model.layers, None
    for index in indices:
        if layers is None or index >= len(layers):
            break
        line, layers = layers[index].line, layers[index].layers
    return line


def load_data(config: Config, preprocessing: dict[str, Any] | None = None) -> DataSplits:
    """The config's data set, split; the splits depend on the SPLIT_KEYS alone. A run's
    stored `preprocessing` encodes the data as when it trained (no refit)."""
    data_config = config.data
    _check_data_path(config)
    if data_config.download:
        folder = None if data_config.path is None else Path(data_config.path).expanduser()
        fetch_dataset(data_config.dataset, folder, RichDownloadProgress())
    return load_splits(
        data_config.dataset,
        data_config.options,
        data_config.path,
        data_config.val_split,
        data_config.test_split,
        config.seed,
        preprocessing,
    )


def _check_data_path(config: Config) -> None:
    """A data.path that names nothing is an error at that key, saying where it looked."""
    if config.data.path is None or config.data.download:
        return
    where = os.path.abspath(os.path.expanduser(config.data.path))
    if os.path.exists(where):
        return
    key = ("data", "path")
    document = config.document
    folder = os.getcwd() if document is None else document.folder_of(key)
    given = "given with --set" if document is not None and document.overridden(key) else "here"
    entry = dataset_entry(config.data.dataset)
    obtain = f"; get it from {entry.obtain}" if entry.obtain else ""
    message = (
        f"expected data set {entry.name}'s files at {where}, found nothing there "
        f"(a relative path {given} is read from {folder}){obtain}"
    )
    raise ConfigError([config_issue(config, key, message)])


def build_components(
    config: Config,
    *,
    with_data: DataSplits | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Components:
    """Seed the generators, load the data (encoded with a run's stored `preprocessing`),
    build the model on its device, the optimizer."""
    device = backend.get_device(config.device)
    precision = precision_of(config.dtype)
    if precision.name == "mixed_bfloat16" and device.name == "cuda":
        message = "mixed_bfloat16 runs on the CPU only (CuPy has no bfloat16): use mixed_float16"
        raise _config_error(config, "dtype", message)
    dtype = precision.param_dtype
    backend.manual_seed(config.seed)
    data = with_data or load_data(config, preprocessing)
    train = data.train
    try:
        model, output_shape = _build(config, train.inputs.shape[1:], train.inputs.dtype)
    except ModelError as exc:
        if config.model.kind != "layers":
            raise ConfigError([config_issue(config, parse_key(exc.where), exc.message)]) from None
        line = _layer_line(config, exc.indices)
        raise _config_error(config, exc.where, exc.message, line) from None
    model.to(device, dtype)
    model.set_compute_dtype(precision.compute_dtype)
    _check_outputs(config, data, output_shape)

    steps, _ = planned_steps_of(config, len(train))
    optimizer = make_optimizer(
        config.optimizer.name,
        model.parameters(),
        schedule=_schedule(config, steps),
        **{k: v for k, v in config.optimizer.args.items() if k != "lr"},
    )
    return Components(
        config, device, dtype, data, model,
        make_loss_fn(config.loss.name, config.loss.args), optimizer, output_shape,
        LossScaler() if precision.loss_scaling else None,
    )  # fmt: skip


def _build(config: Config, shape: tuple[int, ...], dtype: np.dtype) -> tuple[nn.Module, Any]:
    """The model of any of the three forms, for samples of `shape`, and its output shape."""
    model = config.model
    if model.kind == "python":
        return build_python_model(model.python or "", model.args, shape, dtype)
    if model.kind == "blocks":
        return build_blocks(model.blocks or [], model.output or "", shape, dtype)
    return build_model(model.layers, shape, dtype)


def _schedule(config: Config, total_steps: int):
    schedule = config.schedule
    args = dict(schedule.args)
    if schedule.name == "cosine" and args.get("total_steps") is None:
        args["total_steps"] = max(1, total_steps - schedule.warmup_steps)
    lr = config.optimizer.args.get("lr")
    if lr is None:
        lr = OPTIMIZERS[config.optimizer.name].default_lr
    return make_schedule(
        schedule.name,
        lr,
        warmup_steps=schedule.warmup_steps,
        warmup_start_factor=schedule.warmup_start_factor,
        **args,
    )


def _last_layer_error(config: Config, message: str) -> ConfigError:
    model = config.model
    if model.kind == "python":
        return ConfigError([config_issue(config, ("model", "python"), message)])
    if model.kind == "blocks":
        block = next(b for b in model.blocks or [] if b.name == model.output)
        path: tuple[str | int, ...] = ("model", "blocks", block.name)
        if block.layers:
            path += ("layers", len(block.layers) - 1, block.layers[-1].type)
        return ConfigError([config_issue(config, path, message)])
    layers = model.layers
    key = f"model.layers[{len(layers) - 1}].{layers[-1].type}"
    return _config_error(config, key, message, layers[-1].line)


def _check_outputs(config: Config, data: DataSplits, output_shape: tuple[int, ...]) -> None:
    """The model's output must fit the loss and the data: classes, or target columns."""
    loss = config.loss.name
    positions = tuple(data.train.targets.shape[1:]) if data.task == "classification" else ()
    if positions or loss == "sequence_cross_entropy":
        _check_sequence_outputs(config, data, positions, output_shape)
        return
    if data.task == "classification":
        classes = data.num_classes
        if loss == "cross_entropy" and output_shape != (classes,):
            raise _last_layer_error(
                config,
                f"cross_entropy on {classes} classes needs a last layer with {classes} outputs, "
                f"the model gives samples of shape {output_shape}",
            )
        if loss in _DENSE_TARGET_LOSSES and output_shape not in ((classes,), (1,)):
            raise _last_layer_error(
                config,
                f"{loss} on {classes} classes needs {classes} outputs (one-hot targets) or 1 "
                f"(binary), the model gives samples of shape {output_shape}",
            )
        return
    if loss == "cross_entropy":
        raise _config_error(
            config,
            "loss",
            f"cross_entropy needs class labels, but data set {data.name!r} is regression: use mse",
        )
    target_shape = tuple(data.train.targets.shape[1:]) or (1,)
    if output_shape != target_shape:
        raise _last_layer_error(
            config,
            f"the targets have shape {target_shape} per sample, the model gives "
            f"{output_shape}: make the last layer linear with out: {target_shape[-1]}",
        )


def _check_sequence_outputs(
    config: Config, data: DataSplits, positions: tuple[int, ...], output_shape: tuple[int, ...]
) -> None:
    """Token targets (one per position) and sequence_cross_entropy go together, and the model
    gives a row of vocabulary logits per position."""
    if not positions:
        message = (
            f"sequence_cross_entropy needs a token id per position (the text data set), but "
            f"data set {data.name!r} gives one target per sample: use cross_entropy or mse"
        )
        raise _config_error(config, "loss", message)
    if config.loss.name != "sequence_cross_entropy":
        message = (
            f"data set {data.name!r} gives a token id per position: use sequence_cross_entropy"
        )
        raise _config_error(config, "loss", message)
    expected = (*positions, data.num_classes)
    if output_shape != expected:
        raise _last_layer_error(
            config,
            f"sequence_cross_entropy over a vocabulary of {data.num_classes} needs outputs of "
            f"shape {expected} per sample (a last linear layer with out: {data.num_classes}), "
            f"the model gives {output_shape}",
        )
