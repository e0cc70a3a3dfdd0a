"""The run config: a typed schema, read from YAML with every problem reported at once.

`load_config` reads a file (`load`), keeping the line of every key (`document`), applies
`--set key.path=value` overrides and checks every value against the schema (`schema`,
`keys`) and the registries of named things: layers, losses, metrics, data sets, transforms,
optimizers, schedules (`registries`, `check`). The result is a `Config` in which every named
thing carries all of its arguments, defaults filled in, so the trainer never looks a default
up. Anything wrong raises one `ConfigError` listing every issue with its file, line and key
path. `dump` writes a Config back out; `reference` renders the README's config reference
from the same declarations.

Two defaults depend on other settings and are resolved at load time: `metrics` left out is
`[accuracy]` for a classification or binary loss and `[]` for regression, and
`train.best_metric` / `early_stopping.mode` are never null / auto in a loaded Config (the
first metric, else loss; max for metrics where higher is better, else min).
"""

from trainctl.config.dump import config_differences, config_to_dict, dump_config, summary
from trainctl.config.load import config_issue, load_config, parse_config
from trainctl.config.registries import Registries, load_registries
from trainctl.config.schema import (
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
