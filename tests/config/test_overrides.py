"""`--set key.path=value` overrides: applied before validation, typed like file values, and
named in the message when they are wrong."""

import pytest

from trainctl.config import ConfigError, LayerConfig, NamedConfig, parse_config
from trainctl.config.document import format_key, parse_key

TEXT = """\
model:
  layers:
    - flatten
    - linear: {out: 128}
    - relu
    - dropout
    - linear: {out: 10}
optimizer: {name: sgd, lr: 0.01}
data:
  transforms: [{normalize: {mean: 0.5, std: 0.25}}]
"""


def load(*overrides: str, text: str = TEXT):
    return parse_config(text, "c.yaml", overrides)


def issues(*overrides: str, text: str = TEXT) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(*overrides, text=text)
    return str(info.value).splitlines()


def test_scalars_are_typed_like_file_values() -> None:
    config = load("optimizer.lr=0.1", "seed=3", "data.shuffle=false", "optimizer.momentum=1e-1")
    assert config.optimizer.args["lr"] == 0.1 and config.seed == 3
    assert config.data.shuffle is False and config.optimizer.args["momentum"] == 0.1


def test_an_indexed_layer_argument() -> None:
    config = load("model.layers[1].linear.out=64")
    assert config.model.layers[1] == LayerConfig(
        "linear", {"out": 64, "bias": True, "init": "kaiming_uniform"}
    )
    assert config.model.layers[4].args["out"] == 10


def test_lists_and_mappings_as_flow_yaml() -> None:
    config = load(
        "data.transforms=[]",
        "metrics=[accuracy, {top_k_accuracy: {k: 2}}]",
        "optimizer={name: adam}",
        "model.layers[3]={dropout: {p: 0.25}}",
    )
    assert config.data.transforms == []
    assert config.metrics == [NamedConfig("accuracy"), NamedConfig("top_k_accuracy", {"k": 2})]
    assert config.optimizer.name == "adam" and config.optimizer.args["lr"] == 1e-3
    assert config.model.layers[3].args == {"p": 0.25}


def test_missing_sections_and_keys_are_created() -> None:
    config = load("train.early_stopping.patience=2", "schedule.warmup_steps=10")
    assert config.train.early_stopping.patience == 2
    assert (config.schedule.name, config.schedule.warmup_steps) == ("constant", 10)


def test_a_bare_name_gains_arguments() -> None:
    text = TEXT.replace("optimizer: {name: sgd, lr: 0.01}", "optimizer: adam")
    config = load("optimizer.lr=0.5", "model.layers[3].dropout.p=0.1", text=text)
    assert config.optimizer.name == "adam" and config.optimizer.args["lr"] == 0.5
    assert config.model.layers[3] == LayerConfig("dropout", {"p": 0.1})


def test_an_empty_value_is_null_and_the_last_override_wins() -> None:
    config = load("data.eval_batch_size=", "train.max_steps=5", "train.max_steps=7")
    assert config.data.eval_batch_size is None and config.train.max_steps == 7
    assert load("train.epochs=null", "train.max_steps=9").train.epochs is None


def test_an_override_can_repair_a_bad_file_value() -> None:
    text = TEXT.replace("lr: 0.01", "lr: abc")
    assert issues(text=text) == ["c.yaml:8: optimizer.lr: expected a number > 0, found 'abc'"]
    assert load("optimizer.lr=0.2", text=text).optimizer.args["lr"] == 0.2


def test_a_bad_override_value_names_the_override() -> None:
    assert issues("optimizer.lr=abc") == [
        "--set optimizer.lr=abc: optimizer.lr: expected a number > 0, found 'abc'"
    ]


def test_an_override_of_an_unknown_key_gets_did_you_mean() -> None:
    assert issues("optimizer.lrr=0.1", "trian.epochs=3") == [
        "--set optimizer.lrr=0.1: optimizer.lrr: expected an argument of sgd (name, lr, "
        "momentum, nesterov, weight_decay, dampening), found 'lrr' (did you mean 'lr'?)",
        "--set trian.epochs=3: trian: expected a top-level key (name, seed, mode, device, "
        "threads, dtype, data, model, loss, metrics, optimizer, schedule, train, debug, graph), "
        "found 'trian' (did you mean 'train'?)",
    ]


def test_problems_inside_an_overridden_subtree_name_the_override() -> None:
    override = "data.transforms=[{normalize: {mean: x, std: 1}}]"
    assert issues(override) == [
        f"--set {override}: data.transforms[0].normalize.mean: expected a number, found 'x'"
    ]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed", "expected key.path=value, e.g. optimizer.lr=0.1 or model.layers[1].linear.out=64"),
        (
            "model..layers=1",
            "expected key.path=value, e.g. optimizer.lr=0.1 or model.layers[1].linear.out=64",
        ),
        (
            "model.layers[x]=1",
            "expected key.path=value, e.g. optimizer.lr=0.1 or model.layers[1].linear.out=64",
        ),
        (
            "model.layers[9].linear.out=3",
            "model.layers[9]: expected an index in [0, 5) of model.layers, found 9",
        ),
        ("model[0]=3", "model[0]: expected a key of model, found an index into a mapping"),
        (
            "model.layers.linear=3",
            "model.layers.linear: expected model.layers to be a mapping, found a list",
        ),
        (
            "optimizer.lr.value=3",
            "optimizer.lr.value: expected optimizer.lr to be a mapping, found 0.01",
        ),
        ("seed=!!python/name:os.system", "seed: expected plain YAML values, found the tag "
         "!!python/name:os.system (not allowed)"),
        ("data.transforms=[", "data.transforms: invalid YAML: while parsing a flow node expected "
         "the node content, but found '<stream end>'"),
        ("optimizer={lr: 1, lr: 2}", "optimizer: expected each key once, found it again (first "
         "on line 1); YAML would silently keep only the last"),
    ],
)  # fmt: skip
def test_override_that_cannot_be_applied(override: str, expected: str) -> None:
    assert issues(override) == [f"--set {override}: {expected}"]


def test_file_and_override_issues_are_reported_together_in_override_order() -> None:
    text = TEXT + "seed: -1\n"
    assert issues("train.epochs=0", "nonsense", text=text) == [
        "c.yaml:11: seed: expected an integer >= 0, found -1",
        "--set train.epochs=0: train.epochs: expected an integer >= 1 or null, found 0",
        "--set nonsense: expected key.path=value, e.g. optimizer.lr=0.1 or "
        "model.layers[1].linear.out=64",
    ]


def test_a_value_may_contain_an_equals_sign() -> None:
    assert issues("name=a=b") == [
        "--set name=a=b: name: expected a run name of letters, digits, '.', '_' and '-', "
        "found 'a=b'"
    ]


def test_layer_lines_come_from_the_file_unless_overridden() -> None:
    config = load("model.layers[1]={linear: {out: 3}}")
    assert [layer.line for layer in config.model.layers] == [3, None, 5, 6, 7]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("seed", ("seed",)),
        ("model.layers[2].linear.out", ("model", "layers", 2, "linear", "out")),
        ("a[0][1].b", ("a", 0, 1, "b")),
    ],
)
def test_key_paths_parse_and_format_both_ways(text: str, path: tuple) -> None:
    assert parse_key(text) == path
    assert format_key(path) == text
