"""The run config: a typed schema, read from YAML with every problem reported at once.

`load_config` reads a file (`config_yaml`), applies `--set key.path=value` overrides and
checks every value against the schema (`config_schema`) and the registries of named things:
layers, losses, metrics, data sets, transforms, optimizers, schedules (`config_check`). The
result is a `Config` in which every named thing carries all of its arguments, defaults
filled in, so the trainer never looks a default up. Anything wrong raises one `ConfigError`
listing every issue with its file, line and key path.

Two defaults depend on other settings and are resolved at load time: `metrics` left out is
`[accuracy]` for a classification or binary loss and `[]` for regression, and
`train.best_metric` / `early_stopping.mode` are never null / auto in a loaded Config (the
first metric, else loss; max for metrics where higher is better, else min).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from trainctl.config_check import Registries, check_document, load_registries
from trainctl.config_schema import (
    Config,
    DataConfig,
    DebugConfig,
    EarlyStoppingConfig,
    LayerConfig,
    ModelConfig,
    NamedConfig,
    ScheduleConfig,
    TrainConfig,
)
from trainctl.config_yaml import (
    KeyPath,
    apply_overrides,
    format_key,
    override_origin,
    read_document,
)
from trainctl.errors import ConfigError, ConfigIssue

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DataConfig",
    "DebugConfig",
    "EarlyStoppingConfig",
    "LayerConfig",
    "ModelConfig",
    "NamedConfig",
    "Registries",
    "ScheduleConfig",
    "TrainConfig",
    "config_differences",
    "config_issue",
    "config_to_dict",
    "dump_config",
    "load_config",
    "load_registries",
    "parse_config",
    "summary",
]


# ---------------------------------------------------------------- loading

MAX_CONFIG_BYTES = 1 << 20  # configs are a few kilobytes; YAML reads about 1 MB a second


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, relative_to: Path | None = None
) -> Config:
    """The Config in the YAML file at `path`, with `--set` overrides applied; ConfigError
    lists every problem. Relative file paths in it (data.path) are read from the file's
    folder, or from `relative_to`."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)  # /dev/zero, or a huge file, is not read whole
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        issue = ConfigIssue(source, None, "", f"cannot read the file: {reason}")
        raise ConfigError([issue]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        message = f"expected a config of at most {MAX_CONFIG_BYTES:,} bytes, found a larger file"
        raise ConfigError([ConfigIssue(source, None, "", message)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"expected UTF-8 text, found the byte 0x{raw[exc.start]:02x}"
        raise ConfigError([ConfigIssue(source, line, "", message)]) from None
    folder = Path(os.path.abspath(Path(path).parent if relative_to is None else relative_to))
    return parse_config(text, source, overrides, folder=folder)


def parse_config(
    text: str,
    source: str = "<string>",
    overrides: Sequence[str] = (),
    *,
    folder: Path | None = None,
) -> Config:
    """The Config in YAML `text`; `source` names it in messages and gives the default name.
    Relative file paths in `text` are read from `folder` (None: the current folder)."""
    doc = read_document(text, source)
    doc.folder = folder
    if not isinstance(doc.data, dict):  # a syntax error, an empty file: the issues say which
        raise ConfigError(doc.issues)
    apply_overrides(doc, tuple(overrides))
    config = check_document(doc, load_registries())
    if doc.issues:
        rank = {override_origin(override): index for index, override in enumerate(overrides)}
        raise ConfigError(sorted(doc.issues, key=lambda i: (rank.get(i.file, -1), i.line or 0)))
    return config


def config_issue(config: Config, path: KeyPath, message: str) -> ConfigIssue:
    """A problem at `path` found after loading, placed like the loader's own: the file and
    line of the value, or the `--set` that wrote it."""
    if config.document is None:  # a Config made in Python
        return ConfigIssue(config.source, None, format_key(path), message)
    return config.document.issue_at(path, message)


# ---------------------------------------------------------------- writing and comparing


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain values in schema order, every default filled in; loads back to an equal Config.

    Named list items (layers, metrics, transforms) are always `{name: {arguments}}`.
    """
    data, train = config.data, config.train
    early = train.early_stopping
    result = {
        "name": config.name,
        "seed": config.seed,
        "mode": config.mode,
        "device": config.device,
        "threads": config.threads,
        "dtype": config.dtype,
        "data": {
            "dataset": data.dataset,
            "path": data.path,
            "download": data.download,
            "options": data.options,
            "batch_size": data.batch_size,
            "eval_batch_size": data.eval_batch_size,
            "val_split": data.val_split,
            "test_split": data.test_split,
            "shuffle": data.shuffle,
            "transforms": [{t.name: t.args} for t in data.transforms],
            "prefetch": data.prefetch,
        },
        "model": {"layers": [_layer_to_dict(layer) for layer in config.model.layers]},
        "loss": {"name": config.loss.name, **config.loss.args},
        "metrics": [{m.name: m.args} for m in config.metrics],
        "optimizer": {"name": config.optimizer.name, **config.optimizer.args},
        "schedule": {
            "name": config.schedule.name,
            **config.schedule.args,
            "warmup_steps": config.schedule.warmup_steps,
            "warmup_start_factor": config.schedule.warmup_start_factor,
        },
        "train": {
            **{f.name: getattr(train, f.name) for f in fields(TrainConfig)},
            "early_stopping": None if early is None else asdict(early),
        },
        "debug": asdict(config.debug),
        "graph": asdict(config.graph),
    }
    return copy.deepcopy(result)


def _layer_to_dict(layer: LayerConfig) -> dict[str, Any]:
    if layer.layers is None:
        return {layer.type: layer.args}
    nested = [_layer_to_dict(inner) for inner in layer.layers]
    return {layer.type: {**layer.args, "layers": nested} if layer.args else nested}


def dump_config(config: Config) -> str:
    """YAML text of `config_to_dict`: sections in block style, arguments on one line."""
    tree = config_to_dict(config)
    tree["model"]["layers"] = [_compact(item) for item in tree["model"]["layers"]]
    tree["metrics"] = [_compact(item) for item in tree["metrics"]]
    tree["data"]["transforms"] = [_compact(item) for item in tree["data"]["transforms"]]
    return yaml.dump(tree, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class _Flow(dict):
    """A mapping written on one line."""


def _compact(item: dict[str, Any]) -> Any:
    """{relu: {}} -> relu; {linear: {...}} with its arguments on one line; nested layers too."""
    ((name, value),) = item.items()
    if isinstance(value, list):
        return {name: [_compact(inner) for inner in value]}
    if isinstance(value, dict) and "layers" in value:
        return {name: {**value, "layers": [_compact(inner) for inner in value["layers"]]}}
    return {name: _Flow(value)} if value else name


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes `_Flow` mappings and lists of plain values on one line."""


def _represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
    flat = all(not isinstance(item, (dict, list)) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


_Dumper.add_representer(
    _Flow, lambda dumper, value: dumper.represent_mapping("tag:yaml.org,2002:map", value, True)
)
_Dumper.add_representer(list, _represent_list)


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between `a` and `b` (`source` is not compared)."""
    return _differences(config_to_dict(a), config_to_dict(b), ())


def _differences(a: Any, b: Any, path: KeyPath) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict) and not _renamed(a, b):
        keys = list(a) + [key for key in b if key not in a]
        return [
            d
            for key in keys
            for d in _differences(a.get(key, _ABSENT), b.get(key, _ABSENT), path + (key,))
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in _differences(x, y, path + (i,))]
    same = isinstance(a, bool) == isinstance(b, bool) and a == b
    return [] if same else [format_key(path)]


_ABSENT = object()


def _renamed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two list items `{name: arguments}` of different names: the item differs as a whole."""
    return len(a) == len(b) == 1 and a.keys() != b.keys()


def summary(config: Config) -> str:
    """One line saying what the run does, for `trainctl validate`."""
    layers = _count_layers(config.model.layers)
    metrics = ", ".join(m.name for m in config.metrics) or "no metrics"
    lr = config.optimizer.args.get("lr")
    optimizer = config.optimizer.name + (f" lr {lr:g}" if lr is not None else "")
    train = config.train
    length = [f"{train.epochs} epochs"] if train.epochs is not None else []
    length += [f"at most {train.max_steps} steps"] if train.max_steps is not None else []
    return (
        f"{config.name}: {layers} layers, {config.loss.name} loss ({metrics}), {optimizer}, "
        f"{config.schedule.name} schedule, {config.data.dataset} data in batches of "
        f"{config.data.batch_size}, {' / '.join(length)}, {config.mode} mode on "
        f"{config.device} ({config.dtype})"
    )


def _count_layers(layers: list[LayerConfig]) -> int:
    return sum(1 + _count_layers(layer.layers or []) for layer in layers)
