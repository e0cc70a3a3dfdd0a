"""Checking a config Document against the schema and the registries, every issue at once.

The walk follows the schema, not the file: each value is checked where the schema expects
it, named things are looked up in the registries (layers, losses, metrics, data sets,
transforms, optimizers, schedules) and their arguments resolved against the entries'
`Arg`s. A wrong value is recorded as an issue and replaced by its default, so the checks
after it still run; the Config built is discarded when there is any issue.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from trainctl.config.document import Document, KeyPath, quote_key
from trainctl.config.keys import (
    DATA_ARGS,
    DEBUG_ARGS,
    EARLY_STOPPING_ARGS,
    GRAPH_ARGS,
    SCHEDULE_ARGS,
    TOP_ARGS,
    TRAIN_ARGS,
)
from trainctl.config.registries import Registries
from trainctl.config.schema import (
    MAX_RUN_NAME_LENGTH,
    NOT_KEYS,
    Config,
    DataConfig,
    DebugConfig,
    EarlyStoppingConfig,
    GraphConfig,
    LayerConfig,
    ModelConfig,
    NamedConfig,
    ScheduleConfig,
    TrainConfig,
    default_loss,
    default_optimizer,
    is_run_name,
)
from trainctl.spec import Arg, ArgError, Entry, describe

_TOP_KEYS = tuple(f.name for f in fields(Config) if f.name not in NOT_KEYS)
_DATA_KEYS = tuple(f.name for f in fields(DataConfig))
_TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
_DEBUG_KEYS = tuple(f.name for f in fields(DebugConfig))
_GRAPH_KEYS = tuple(f.name for f in fields(GraphConfig))
_NESTED_LAYERS = "residual"  # the one layer type whose value is a list of layers


def check_document(doc: Document, registries: Registries) -> Config:
    """The Config that `doc` describes; problems are added to `doc.issues` (the Config is
    then only partly right and must not be used)."""
    return _Checker(doc, registries).config()


def _default_name(source: str) -> str:
    """The file's stem, made into a safe run name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem)[:MAX_RUN_NAME_LENGTH]
    return name.strip("-.") or "run"


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _found(value: Any) -> str:
    """What was found, as a phrase; short lists and mappings are shown in full."""
    if value == [] or value == {}:
        return f"an empty {'list' if value == [] else 'mapping'}"
    text = _flow(value)
    return text if len(text) <= 60 else describe(value)


def _flow(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{quote_key(key)}: {_flow(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    return describe(value)


class _Checker:
    """Walks a Document along the schema, building a Config and recording every issue.

    Where a value is wrong the walk goes on with the default, so that later checks still
    run; the Config built is thrown away when there is any issue.
    """

    def __init__(self, doc: Document, registries: Registries) -> None:
        self.doc, self.reg = doc, registries

    def issue(self, path: KeyPath, expected: str, found: str, hint: str = "") -> None:
        self.doc.issue(path, f"expected {expected}, found {found}{hint}")

    # ------------------------------------------------------------ generic pieces

    def section(self, parent: Mapping[str, Any], path: KeyPath) -> dict[str, Any]:
        """The mapping at `path` (its key is path[-1]); absent or null is empty: all defaults."""
        value = parent.get(path[-1])
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.issue(path, "a mapping", _found(value))
            return {}
        return value

    def unknown_keys(
        self, mapping: Mapping[str, Any], path: KeyPath, allowed: Sequence[str], what: str
    ) -> bool:
        """Report each key not in `allowed`; True when there was none."""
        unknown = [key for key in mapping if key not in allowed]
        for key in unknown:
            expected = f"{what} ({', '.join(allowed)})" if allowed else what
            self.issue(path + (key,), expected, repr(key), _did_you_mean(key, allowed))
        return not unknown

    def value(self, mapping: Mapping[str, Any], path: KeyPath, arg: Arg) -> tuple[Any, bool]:
        """The checked value at `path` (its key is path[-1]) or the default, and whether ok."""
        key = path[-1]
        if key not in mapping:
            if arg.required:
                self.issue(path, f"{arg.expected()} (required)", "nothing")
                return None, False
            return copy.deepcopy(arg.default), True
        found = mapping[key]
        try:
            return arg.check(found), True
        except ArgError as exc:
            hint = ""
            if arg.choices and found is not None:
                hint = _did_you_mean(found, map(str, arg.choices))
            self.issue(path, exc.expected, _found(exc.found), hint)
            return (None if arg.required else copy.deepcopy(arg.default)), False

    def values(
        self, mapping: Mapping[str, Any], path: KeyPath, args: Mapping[str, Arg]
    ) -> tuple[dict[str, Any], bool]:
        checked = {name: self.value(mapping, path + (name,), arg) for name, arg in args.items()}
        return {name: v for name, (v, _) in checked.items()}, all(ok for _, ok in checked.values())

    def arguments(
        self, entry: Entry, given: Mapping[str, Any], path: KeyPath, also: Sequence[str] = ()
    ) -> tuple[dict[str, Any], bool]:
        """`given` resolved against the entry's args; keys in `also` are the caller's."""
        rest = {key: v for key, v in given.items() if key not in also}
        allowed = [*also, *entry.args]
        what = (
            f"an argument of {entry.name}" if allowed else f"no arguments ({entry.name} has none)"
        )
        known = self.unknown_keys(rest, path, allowed, what)
        args, ok = self.values(rest, path, entry.args)
        return args, ok and known

    def lookup(
        self, registry: Mapping[str, Entry], name: Any, path: KeyPath, kind: str
    ) -> Entry | None:
        if isinstance(name, str) and name in registry:
            return registry[name]
        hint = _did_you_mean(name, registry) if isinstance(name, str) else ""
        self.issue(path, f"{_a(kind)} ({', '.join(registry)})", _found(name), hint)
        return None

    def flat_named(
        self,
        value: Any,
        path: KeyPath,
        registry: Mapping[str, Entry],
        kind: str,
        default_name: str,
        also: Sequence[str] = (),
    ) -> tuple[NamedConfig, bool] | None:
        """`name`, or {name: ..., argument: ...}, name defaulting (loss, optimizer, schedule)."""
        if isinstance(value, str):
            name, given, name_path = value, {}, path
        elif isinstance(value, dict):
            name, given, name_path = value.get("name", default_name), value, path + ("name",)
        else:
            self.issue(path, f"{_a(kind)} name, or a mapping of name: and arguments", _found(value))
            return None
        entry = self.lookup(registry, name, name_path, kind)
        if entry is None:
            return None
        args, ok = self.arguments(entry, given, path, ("name", *also))
        return NamedConfig(entry.name, args), ok

    def item_named(
        self, item: Any, path: KeyPath, registry: Mapping[str, Entry], kind: str
    ) -> tuple[Entry, Any, KeyPath] | None:
        """A list item `name` or `name: arguments`: its entry, raw arguments and their path."""
        if isinstance(item, str):
            name, raw = item, None
        elif isinstance(item, dict) and len(item) == 1:
            ((name, raw),) = item.items()
        elif isinstance(item, dict) and item:
            self.several_keys(item, path, registry, kind)
            return None
        else:
            self.issue(path, f"{_a(kind)}: a name or name: {{arguments}}", _found(item))
            return None
        entry = self.lookup(registry, name, path, kind)
        return None if entry is None else (entry, raw, path + (name,))

    def several_keys(
        self, item: dict[str, Any], path: KeyPath, registry: Mapping[str, Entry], kind: str
    ) -> None:
        names = [key for key in item if key in registry]
        if len(names) == 1 and all(
            key in registry[names[0]].args for key in item if key not in names
        ):
            # `- linear:` with `out: 10` on the next line, level with `linear` instead of under it
            self.issue(path, f"the arguments of {names[0]} indented under it", "them beside it")
        else:
            found = f"a mapping with the keys {', '.join(map(quote_key, item))}"
            self.issue(path, f"one {kind} per list item (- name: {{arguments}})", found)

    def item_arguments(self, entry: Entry, raw: Any, path: KeyPath) -> dict[str, Any]:
        if raw is not None and not isinstance(raw, dict):
            self.issue(path, f"a mapping of the arguments of {entry.name}", _found(raw))
            return {}
        return self.arguments(entry, raw or {}, path)[0]

    def named_list(
        self, value: Any, path: KeyPath, registry: Mapping[str, Entry], kind: str
    ) -> list[NamedConfig]:
        """metrics, data.transforms: a list of `name` or `name: arguments`; null is empty."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.issue(path, f"a list of {kind}s", _found(value))
            return []
        result = []
        for index, item in enumerate(value):
            parsed = self.item_named(item, path + (index,), registry, kind)
            if parsed is not None:
                entry, raw, args_path = parsed
                result.append(NamedConfig(entry.name, self.item_arguments(entry, raw, args_path)))
        return result

    # ------------------------------------------------------------ the sections

    def config(self) -> Config:
        top = self.doc.data
        self.unknown_keys(top, (), _TOP_KEYS, "a top-level key")
        plain, _ = self.values(top, (), TOP_ARGS)
        data = self.data(self.section(top, ("data",)))
        model = self.model(top)
        loss, loss_ok = self.loss(top.get("loss"))
        metrics = self.metrics(top, loss if loss_ok else None)
        optimizer, optimizer_ok = self.optimizer(top.get("optimizer"))
        train = self.train(self.section(top, ("train",)), metrics)
        lr = optimizer.args.get("lr") if optimizer_ok else None
        schedule = self.schedule(top.get("schedule"), lr)
        debug = self.debug(self.section(top, ("debug",)))
        graph = self.graph(self.section(top, ("graph",)))
        return Config(
            name=self.run_name(top),
            **plain,
            data=data,
            model=model,
            loss=loss,
            metrics=metrics,
            optimizer=optimizer,
            schedule=schedule,
            train=train,
            debug=debug,
            graph=graph,
            source=self.doc.source,
            document=self.doc,
        )

    def run_name(self, top: Mapping[str, Any]) -> str:
        name = top.get("name")
        if "name" not in top or is_run_name(name):
            return name if "name" in top else _default_name(self.doc.source)
        if isinstance(name, (int, float)):
            hint = " (write it in quotes)"
        elif isinstance(name, str) and len(name) > MAX_RUN_NAME_LENGTH:
            hint = f" ({len(name)} characters; at most {MAX_RUN_NAME_LENGTH})"
        else:
            hint = " (a folder name, so not '.' or '..')" if name in (".", "..") else ""
        expected = "a run name of letters, digits, '.', '_' and '-'"
        self.issue(("name",), expected, _found(name), hint)
        return _default_name(self.doc.source)

    def data(self, section: dict[str, Any]) -> DataConfig:
        path = ("data",)
        self.unknown_keys(section, path, _DATA_KEYS, "a key of data")
        plain, _ = self.values(section, path, DATA_ARGS)
        dataset = section.get("dataset", DataConfig.dataset)
        entry = self.lookup(self.reg.datasets, dataset, path + ("dataset",), "data set")
        options: dict[str, Any] = {}
        if entry is not None:
            raw = section.get("options")
            if raw is None or isinstance(raw, dict):
                options, _ = self.arguments(entry, raw or {}, path + ("options",))
                options = self.option_paths(entry, options)
            else:
                expected = f"a mapping of the options of {entry.name}"
                self.issue(path + ("options",), expected, _found(raw))
            plain["path"] = self.data_path(entry, plain["path"], plain["download"])
        transforms = self.named_list(
            section.get("transforms"), path + ("transforms",), self.reg.transforms, "transform"
        )
        val, test = plain["val_split"], plain["test_split"]
        if val + test >= 1:
            expected = "val_split + test_split < 1 (some data must be left to train on)"
            self.issue(path + ("val_split",), expected, f"{val:g} + {test:g}")
        dataset = entry.name if entry is not None else DataConfig.dataset
        return DataConfig(dataset=dataset, options=options, transforms=transforms, **plain)

    def data_path(self, entry: Entry, data_path: str | None, download: bool) -> str | None:
        """The data set's path made absolute (see `Document.folder_of`), so that a run's saved
        config names the files it read wherever it is loaded from. A data set trainctl can
        download needs none: null is its folder in the data cache."""
        path = ("data", "path")
        if download and not entry.downloadable:
            fetchable = ", ".join(n for n, e in self.reg.datasets.items() if e.downloadable)
            expected = f"false (data set {entry.name} cannot be downloaded; {fetchable} can)"
            self.issue(("data", "download"), expected, "true")
        if entry.needs_path and data_path is None and not entry.downloadable:
            where = f"; get it from {entry.obtain}" if entry.obtain else ""
            self.issue(path, f"the path of data set {entry.name}'s files", "nothing", where)
        elif not entry.needs_path and data_path is not None:
            self.issue(path, f"no path (data set {entry.name} reads no files)", repr(data_path))
        elif data_path is not None:
            folder = self.doc.folder_of(path)
            return os.path.abspath(os.path.join(folder, os.path.expanduser(data_path)))
        return data_path

    def option_paths(self, entry: Entry, options: dict[str, Any]) -> dict[str, Any]:
        """The data set's options with each file path (an Arg of kind "path") made absolute,
        read from the folder its key is read from, as data.path is."""
        resolved = dict(options)
        for name, arg in entry.args.items():
            value = resolved.get(name)
            if arg.kind == "path" and isinstance(value, str):
                folder = self.doc.folder_of(("data", "options", name))
                resolved[name] = os.path.abspath(os.path.join(folder, os.path.expanduser(value)))
        return resolved

    def model(self, top: Mapping[str, Any]) -> ModelConfig:
        path = ("model",)
        if top.get("model") is None:
            self.issue(path, "a mapping with layers: [...] (required)", "nothing")
            return ModelConfig([])
        section = self.section(top, path)
        self.unknown_keys(section, path, ("layers",), "a key of model")
        return ModelConfig(self.layers(section.get("layers"), path + ("layers",)))

    def layers(self, value: Any, path: KeyPath) -> list[LayerConfig]:
        if not isinstance(value, list) or not value:
            found = "nothing" if value is None else _found(value)
            self.issue(path, "a non-empty list of layers", found)
            return []
        parsed = [self.layer(item, path + (index,)) for index, item in enumerate(value)]
        return [layer for layer in parsed if layer is not None]

    def layer(self, item: Any, path: KeyPath) -> LayerConfig | None:
        parsed = self.item_named(item, path, self.reg.layers, "layer type")
        if parsed is None:
            return None
        entry, raw, args_path = parsed
        line = self.doc.line(path)
        if entry.name != _NESTED_LAYERS:
            return LayerConfig(entry.name, self.item_arguments(entry, raw, args_path), None, line)
        if isinstance(raw, list):
            return LayerConfig(entry.name, {}, self.layers(raw, args_path), line)
        if isinstance(raw, dict) and "layers" in raw:
            args, _ = self.arguments(entry, raw, args_path, ("layers",))
            inner = self.layers(raw["layers"], args_path + ("layers",))
            return LayerConfig(entry.name, args, inner, line)
        expected = f"the layers of the {entry.name} block: a list, or layers: [...]"
        self.issue(args_path, expected, "nothing" if raw is None else _found(raw))
        return None

    def loss(self, value: Any) -> tuple[NamedConfig, bool]:
        if value is None:
            return default_loss(), True
        parsed = self.flat_named(value, ("loss",), self.reg.losses, "loss", "cross_entropy")
        return parsed or (default_loss(), False)

    def metrics(self, top: Mapping[str, Any], loss: NamedConfig | None) -> list[NamedConfig]:
        if "metrics" not in top:
            task = None if loss is None else self.reg.losses[loss.name].task
            wanted = task in ("classification", "binary") and "accuracy" in self.reg.metrics
            return [NamedConfig("accuracy")] if wanted else []
        metrics = self.named_list(top["metrics"], ("metrics",), self.reg.metrics, "metric")
        seen: set[str] = set()
        for index, metric in enumerate(metrics):
            label = self.reg.metric_label(metric.name, metric.args)
            if label in seen:
                self.issue(("metrics", index), "each metric once", f"{label!r} again")
            seen.add(label)
        return metrics

    def optimizer(self, value: Any) -> tuple[NamedConfig, bool]:
        if value is None:
            return default_optimizer(), True
        path = ("optimizer",)
        parsed = self.flat_named(value, path, self.reg.optimizers, "optimizer", "sgd")
        if parsed is None:
            return default_optimizer(), False
        optimizer, ok = parsed
        if ok:
            for key, exc in self.reg.optimizer_conflicts(optimizer.name, optimizer.args):
                self.issue(path + (key,), exc.expected, _found(exc.found))
        return optimizer, ok

    def schedule(self, value: Any, lr: float | None) -> ScheduleConfig:
        path = ("schedule",)
        if value is None:
            return ScheduleConfig()
        warmup, _ = self.values(value if isinstance(value, dict) else {}, path, SCHEDULE_ARGS)
        parsed = self.flat_named(
            value, path, self.reg.schedules, "schedule", "constant", tuple(SCHEDULE_ARGS)
        )
        if parsed is None:
            return ScheduleConfig(**warmup)
        schedule, ok = parsed
        if ok and lr is not None:
            for key, exc in self.reg.schedule_conflicts(schedule.name, schedule.args, lr):
                self.issue(path + (key,), exc.expected, _found(exc.found))
        return ScheduleConfig(schedule.name, schedule.args, **warmup)

    def debug(self, section: dict[str, Any]) -> DebugConfig:
        path = ("debug",)
        self.unknown_keys(section, path, _DEBUG_KEYS, "a key of debug")
        plain, _ = self.values(section, path, DEBUG_ARGS)
        return DebugConfig(**plain)

    def graph(self, section: dict[str, Any]) -> GraphConfig:
        path = ("graph",)
        self.unknown_keys(section, path, _GRAPH_KEYS, "a key of graph")
        plain, _ = self.values(section, path, GRAPH_ARGS)
        return GraphConfig(**plain)

    def train(self, section: dict[str, Any], metrics: list[NamedConfig]) -> TrainConfig:
        path = ("train",)
        self.unknown_keys(section, path, _TRAIN_KEYS, "a key of train")
        plain, _ = self.values(section, path, TRAIN_ARGS)
        if plain["epochs"] is None and plain["max_steps"] is None:
            expected = "epochs or max_steps to be set (the run needs an end)"
            self.issue(path + ("epochs",), expected, "both null")
        labels = {self.reg.metric_label(m.name, m.args): m for m in metrics}
        choices = ["loss", *labels]
        if plain["best_metric"] is None:
            plain["best_metric"] = choices[1] if len(choices) > 1 else "loss"
        else:
            self.metric_choice(plain["best_metric"], path + ("best_metric",), choices)
        early = self.early_stopping(section, labels, choices)
        return TrainConfig(early_stopping=early, **plain)

    def early_stopping(
        self, train: dict[str, Any], labels: Mapping[str, NamedConfig], choices: list[str]
    ) -> EarlyStoppingConfig | None:
        """A mapping, `true` (all defaults), or null / false (no early stopping)."""
        path = ("train", "early_stopping")
        value = train.get("early_stopping")
        if value is None or value is False:
            return None
        section = {} if value is True else self.section(train, path)
        self.unknown_keys(section, path, tuple(EARLY_STOPPING_ARGS), "a key of early_stopping")
        plain, _ = self.values(section, path, EARLY_STOPPING_ARGS)
        known = self.metric_choice(plain["metric"], path + ("metric",), choices)
        if known and plain["mode"] == "auto":
            metric = labels.get(plain["metric"])
            higher = metric is not None and self.reg.metrics[metric.name].higher_is_better
            plain["mode"] = "max" if higher else "min"
        return EarlyStoppingConfig(**plain)

    def metric_choice(self, label: str, path: KeyPath, choices: list[str]) -> bool:
        if label in choices:
            return True
        expected = f"loss or a configured metric ({', '.join(choices)})"
        self.issue(path, expected, repr(label), _did_you_mean(label, choices))
        return False
