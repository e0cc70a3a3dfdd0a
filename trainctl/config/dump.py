"""Writing a config out: as plain values, as YAML, as the keys two configs differ in, and
as the one-line summary `trainctl validate` prints.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, fields
from typing import Any

import yaml

from trainctl.config.document import KeyPath, format_key
from trainctl.config.schema import Config, LayerConfig, ModelConfig, TrainConfig


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
        "model": _model_to_dict(config.model),
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
        "distributed": asdict(config.distributed),
    }
    return copy.deepcopy(result)


def _model_to_dict(model: ModelConfig) -> dict[str, Any]:
    if model.kind == "python":
        return {"python": model.python, "args": model.args}
    if model.kind == "layers":
        return {"layers": [_layer_to_dict(layer) for layer in model.layers]}
    blocks = {
        block.name: {
            "inputs": block.inputs,
            **({"join": block.join} if block.join else {}),
            **(
                {"layers": [_layer_to_dict(layer) for layer in block.layers]}
                if block.layers
                else {}
            ),
        }
        for block in model.blocks or []
    }
    return {"blocks": blocks, "output": model.output}


def _layer_to_dict(layer: LayerConfig) -> dict[str, Any]:
    if layer.layers is None:
        return {layer.type: layer.args}
    nested = [_layer_to_dict(inner) for inner in layer.layers]
    return {layer.type: {**layer.args, "layers": nested} if layer.args else nested}


def dump_config(config: Config) -> str:
    """YAML text of `config_to_dict`: sections in block style, arguments on one line."""
    tree = config_to_dict(config)
    model = tree["model"]
    block_layers = [block.get("layers", []) for block in model.get("blocks", {}).values()]
    for layers in [model.get("layers", []), *block_layers]:
        layers[:] = [_compact(item) for item in layers]
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
    layers = _model_summary(config.model)
    metrics = ", ".join(m.name for m in config.metrics) or "no metrics"
    lr = config.optimizer.args.get("lr")
    optimizer = config.optimizer.name + (f" lr {lr:g}" if lr is not None else "")
    train = config.train
    length = [f"{train.epochs} epochs"] if train.epochs is not None else []
    length += [f"at most {train.max_steps} steps"] if train.max_steps is not None else []
    return (
        f"{config.name}: {layers}, {config.loss.name} loss ({metrics}), {optimizer}, "
        f"{config.schedule.name} schedule, {config.data.dataset} data in batches of "
        f"{config.data.batch_size}, {' / '.join(length)}, {config.mode} mode on "
        f"{config.device} ({config.dtype})"
    )


def _model_summary(model: ModelConfig) -> str:
    """'5 layers', '4 blocks of 9 layers', 'Python model models.py:Net'."""
    if model.kind == "python":
        file, _, cls = (model.python or "").rpartition(":")
        return f"Python model {os.path.basename(file)}:{cls}"
    if model.kind == "blocks":
        blocks = model.blocks or []
        return f"{len(blocks)} blocks of {sum(_count_layers(b.layers) for b in blocks)} layers"
    return f"{_count_layers(model.layers)} layers"


def _count_layers(layers: list[LayerConfig]) -> int:
    return sum(1 + _count_layers(layer.layers or []) for layer in layers)
