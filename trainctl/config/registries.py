"""The registries of named things a config is checked against, gathered in one object.

Layers, losses, metrics, data sets, transforms, optimizers and schedules each keep their
own registry of `spec.Entry`s next to their code; `Registries` is what `check` looks names
up in (tests pass fakes), `load_registries` the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainctl.spec import ArgError, Entry


@dataclass(frozen=True)
class Registries:
    """Everything a config's names are checked against."""

    layers: Mapping[str, Entry]
    losses: Mapping[str, Entry]  # entries have .task
    metrics: Mapping[str, Entry]  # entries have .higher_is_better
    datasets: Mapping[str, Entry]  # entries have .needs_path, .obtain and .downloadable
    transforms: Mapping[str, Entry]
    optimizers: Mapping[str, Entry]
    schedules: Mapping[str, Entry]
    metric_label: Callable[[str, dict[str, Any]], str]
    optimizer_conflicts: Callable[[str, Mapping[str, Any]], list[tuple[str, ArgError]]]
    schedule_conflicts: Callable[[str, Mapping[str, Any], float], list[tuple[str, ArgError]]]


def load_registries() -> Registries:
    """The registries, imported only when a config is checked: they pull in NumPy and the
    engine, which `trainctl --help` must not load."""
    from trainctl.data import DATASETS, TRANSFORMS
    from trainctl.metrics import METRICS, metric_label
    from trainctl.nn.build import LAYERS
    from trainctl.nn.losses import LOSSES
    from trainctl.optim.entries import (
        OPTIMIZER_ENTRIES,
        SCHEDULE_ENTRIES,
        optimizer_conflicts,
        schedule_conflicts,
    )

    return Registries(
        LAYERS,
        LOSSES,
        METRICS,
        DATASETS,
        TRANSFORMS,
        OPTIMIZER_ENTRIES,
        SCHEDULE_ENTRIES,
        metric_label,
        optimizer_conflicts,
        schedule_conflicts,
    )
