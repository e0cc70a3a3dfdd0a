"""config_to_dict / dump_config write every default and load back to an equal Config;
config_differences names the keys that changed."""

from dataclasses import fields, replace
from pathlib import Path

import pytest
import yaml
from hypothesis import find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from trainctl.config import (
    Config,
    ConfigError,
    config_differences,
    config_to_dict,
    dump_config,
    load_config,
    parse_config,
)
from trainctl.config.schema import NOT_KEYS, is_run_name

FULL = """\
name: full
seed: 3
mode: graph
device: auto
dtype: float64
data:
  dataset: spirals
  options: {samples: 200, classes: 4}
  batch_size: 16
  eval_batch_size: 100
  val_split: 0.2
  test_split: 0
  shuffle: false
  transforms: [{normalize: {mean: [0.5, 0.5], std: 0.25}}]
  prefetch: 0
model:
  layers:
    - linear: {out: 32, bias: false, init: xavier_uniform}
    - residual:
        - layer_norm
        - linear: {out: 32}
        - residual: [gelu]
    - dropout: {p: 0.1}
    - linear: {out: 4}
loss: {name: cross_entropy, label_smoothing: 0.05}
metrics: [accuracy, {top_k_accuracy: {k: 2}}]
optimizer: {name: adamw, lr: 3e-3, betas: [0.8, 0.99], weight_decay: 0.1}
schedule: {name: multistep, milestones: [100, 200], warmup_steps: 20, warmup_start_factor: 0.1}
train:
  epochs: null
  max_steps: 400
  log_every: 10
  eval_every: 100
  checkpoint_every: 200
  early_stopping: {metric: top_2_accuracy, patience: 3, min_delta: 0.001}
  grad_clip: 2.5
  drop_last: true
  best_metric: top_2_accuracy
"""
MINIMAL = "model: {layers: [flatten, {linear: {out: 10}}]}\n"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def round_trip(config: Config) -> Config:
    return parse_config(dump_config(config), "dumped.yaml")


@pytest.mark.parametrize("text", [MINIMAL, FULL, MINIMAL + "loss: mse\nmetrics: [mae, r2]\n"])
def test_dump_loads_back_to_an_equal_config(text: str) -> None:
    config = parse_config(text, "orig.yaml")
    again = round_trip(config)
    assert again == config
    assert dump_config(again) == dump_config(config)


def test_the_dict_form_is_plain_ordered_by_the_schema_and_has_every_default() -> None:
    config = parse_config(MINIMAL, "minimal.yaml")
    tree = config_to_dict(config)
    assert list(tree) == [f.name for f in fields(Config) if f.name not in NOT_KEYS]
    assert yaml.safe_load(yaml.safe_dump(tree, sort_keys=False)) == tree
    assert tree["optimizer"] == {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "dampening": 0.0,
    }
    assert tree["schedule"] == {"name": "constant", "warmup_steps": 0, "warmup_start_factor": 0.0}
    assert tree["model"]["layers"][1] == {
        "linear": {"out": 10, "bias": True, "init": "kaiming_uniform"}
    }
    assert tree["train"]["early_stopping"] is None and tree["data"]["path"] is None
    tree["data"]["options"]["changed"] = 1  # a copy: the Config is untouched
    assert config.data.options == {}


def test_dumped_text_reads_like_a_hand_written_config() -> None:
    text = dump_config(parse_config(FULL))
    assert "  - residual:\n    - layer_norm: {eps: 1.0e-05}\n" in text
    assert "    - linear: {out: 32, bias: true, init: kaiming_uniform}\n" in text
    assert "    - residual: [gelu]\n" in text
    assert "  milestones: [100, 200]\n" in text
    assert "  early_stopping:\n    metric: top_2_accuracy\n" in text
    assert text.startswith("name: full\nseed: 3\nmode: graph\n")


# The characters of a run name, but never "." or "..": the validator rightly refuses those
# (they name folders that exist already).
RUN_NAMES = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(
    lambda name: name not in (".", "..")
)
_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "seed": st.integers(0, 2**31),
        "mode": st.sampled_from(["eager", "graph"]),
        "name": RUN_NAMES.map(repr),
        "optimizer": st.sampled_from(["{name: sgd, lr: 0.1}", "adam", "adamw", "rmsprop"]),
        "optimizer.lr": st.floats(1e-6, 10.0),
        "data.batch_size": st.integers(1, 4096),
        "data.val_split": st.floats(0.0, 0.45),
        "data.transforms": st.sampled_from(
            ["[]", "[random_flip]", "[{random_crop: {padding: 2}}]"]
        ),
        "metrics": st.sampled_from(["[]", "[accuracy]", "[{top_k_accuracy: {k: 3}}, accuracy]"]),
        "schedule": st.sampled_from(["constant", "cosine", "{name: step, step_size: 5}"]),
        "train.max_steps": st.integers(1, 10**6),
        "train.grad_clip": st.floats(1e-3, 100.0),
        "train.early_stopping": st.sampled_from(["null", "{}", "{patience: 2, mode: max}"]),
    },
)


@settings(max_examples=60, deadline=None)
@given(overrides=_OVERRIDES)
def test_any_valid_config_round_trips(overrides: dict) -> None:
    base = FULL.replace("top_2_accuracy", "loss")  # valid whatever the metrics are
    config = parse_config(base, "full.yaml", [f"{key}={value}" for key, value in overrides.items()])
    assert round_trip(config) == config
    assert config_differences(config, round_trip(config)) == []


def test_the_run_name_strategy_draws_only_names_the_validator_accepts() -> None:
    """Searched deterministically: the unfiltered strategy gives "." within 500 draws."""
    search = settings(max_examples=1000, derandomize=True, database=None)
    with pytest.raises(NoSuchExample):
        find(RUN_NAMES, lambda name: not is_run_name(name), settings=search)


def test_no_differences_between_equal_configs_whatever_their_source() -> None:
    a = parse_config(FULL, "a.yaml")
    b = parse_config(FULL, "elsewhere/b.yaml")
    assert a.source != b.source and a == b
    assert config_differences(a, b) == []


def test_differences_name_the_changed_keys() -> None:
    a = parse_config(FULL)
    b = parse_config(
        FULL,
        overrides=[
            "optimizer.lr=0.1",
            "model.layers[1].residual[1].linear.out=16",
            "train.early_stopping=null",
            "data.transforms=[]",
            "metrics[1]={top_k_accuracy: {k: 3}}",
            "train.early_stopping=null",
            "train.best_metric=loss",
        ],
    )
    assert config_differences(a, b) == [
        "data.transforms",
        "model.layers[1].residual[1].linear.out",
        "metrics[1].top_k_accuracy.k",
        "optimizer.lr",
        "train.early_stopping",
        "train.best_metric",
    ]
    assert config_differences(b, a) == config_differences(a, b)


def test_a_replaced_or_added_layer_is_one_difference() -> None:
    a = parse_config(MINIMAL)
    assert config_differences(a, parse_config(MINIMAL, overrides=["model.layers[0]=relu"])) == [
        "model.layers[0]"
    ]
    longer = parse_config("model: {layers: [flatten, relu, {linear: {out: 10}}]}\n")
    assert config_differences(a, longer) == ["model.layers"]


def test_differences_tell_a_boolean_from_a_number_and_a_value_from_null() -> None:
    a = parse_config(MINIMAL)
    assert config_differences(a, replace(a, train=replace(a.train, drop_last=0))) == [
        "train.drop_last"
    ]
    assert config_differences(a, replace(a, train=replace(a.train, grad_clip=1.0))) == [
        "train.grad_clip"
    ]
    assert config_differences(replace(a, seed=1), replace(a, seed=True)) == ["seed"]
    assert config_differences(replace(a, seed=1), replace(a, seed=1.0)) == []


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid_and_round_trip(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        pytest.fail(f"example config {path.name} is invalid:\n{exc}")
    assert round_trip(config) == config
    assert config.name == yaml.safe_load(path.read_text()).get("name", path.stem)
