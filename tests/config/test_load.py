"""Valid configs: every YAML shape a user may write, and the defaults a loaded Config carries."""

from pathlib import Path

import pytest

from trainctl.config import (
    Config,
    DataConfig,
    EarlyStoppingConfig,
    LayerConfig,
    ModelConfig,
    NamedConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
    parse_config,
)

LINEAR_10 = {"out": 10, "bias": True, "init": "kaiming_uniform"}
MINIMAL = "model: {layers: [flatten, {linear: {out: 10}}]}\n"


def test_minimal_file_gets_every_default(tmp_path: Path) -> None:
    path = tmp_path / "my-run.yaml"
    path.write_text(MINIMAL)
    config = load_config(path)
    layers = [LayerConfig("flatten"), LayerConfig("linear", LINEAR_10)]
    # Defaults that depend on other settings come resolved: best_metric is the first metric.
    expected = Config(
        name="my-run", model=ModelConfig(layers), train=TrainConfig(best_metric="accuracy")
    )
    assert config == expected
    assert config.source == str(path)
    assert config.optimizer == NamedConfig(
        "sgd",
        {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "dampening": 0.0},
    )
    assert config.metrics == [NamedConfig("accuracy")]
    assert config.data.options == {} and config.data.dataset == "digits"


SHAPES = """\
name: shapes
loss: cross_entropy
metrics: [accuracy, {top_k_accuracy: {k: 3}}]
optimizer: {name: sgd, lr: 0.01, momentum: 0.9}
schedule: {name: cosine, warmup_steps: 100}
data: {dataset: spirals, options: {samples: 500}, batch_size: 32,
       transforms: [{normalize: {mean: 0.5, std: 0.25}}, random_flip]}
model:
  layers:
    - flatten
    - linear: {out: 128}
    - relu: null
    - residual:
        - linear: {out: 128}
        - relu
    - residual: {layers: [gelu]}
    - linear: {out: 3}
"""


def test_every_documented_yaml_shape_is_accepted() -> None:
    config = parse_config(SHAPES)
    linear_128 = {**LINEAR_10, "out": 128}
    assert config.model.layers == [
        LayerConfig("flatten"),
        LayerConfig("linear", linear_128),
        LayerConfig("relu"),
        LayerConfig("residual", {}, [LayerConfig("linear", linear_128), LayerConfig("relu")]),
        LayerConfig("residual", {}, [LayerConfig("gelu")]),
        LayerConfig("linear", {**LINEAR_10, "out": 3}),
    ]
    assert [layer.line for layer in config.model.layers] == [10, 11, 12, 13, 16, 17]
    assert config.model.layers[3].layers[1].line == 15
    assert config.loss == NamedConfig("cross_entropy", {"label_smoothing": 0.0})
    assert config.metrics == [NamedConfig("accuracy"), NamedConfig("top_k_accuracy", {"k": 3})]
    assert config.optimizer.args["momentum"] == 0.9 and config.optimizer.args["lr"] == 0.01
    assert config.schedule == ScheduleConfig("cosine", {"total_steps": None, "min_lr": 0.0}, 100)
    assert config.data == DataConfig(
        dataset="spirals",
        options={"samples": 500, "classes": 3, "noise": 0.2},
        batch_size=32,
        transforms=[
            NamedConfig("normalize", {"mean": 0.5, "std": 0.25}),
            NamedConfig("random_flip", {"p": 0.5}),
        ],
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("loss: {name: cross_entropy, label_smoothing: 0.1}", {"label_smoothing": 0.1}),
        ("loss: {label_smoothing: 0.2}", {"label_smoothing": 0.2}),  # name defaults
        ("loss: mse", {}),
    ],
)
def test_loss_as_a_name_or_a_mapping(text: str, expected: dict) -> None:
    assert parse_config(MINIMAL + text).loss.args == expected


def test_schedule_as_a_bare_name_and_optimizer_default_lr() -> None:
    config = parse_config(MINIMAL + "schedule: cosine\noptimizer: adam\n")
    assert config.schedule == ScheduleConfig("cosine", {"total_steps": None, "min_lr": 0.0})
    assert config.optimizer.args == {
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
    }


@pytest.mark.parametrize(
    ("loss", "metrics"),
    [
        ("cross_entropy", [NamedConfig("accuracy")]),
        ("bce_with_logits", [NamedConfig("accuracy")]),
        ("mse", []),
    ],
)
def test_metrics_left_out_follow_the_loss(loss: str, metrics: list) -> None:
    config = parse_config(MINIMAL + f"loss: {loss}\n")
    assert config.metrics == metrics
    assert config.train.best_metric == (metrics[0].name if metrics else "loss")


def test_explicit_empty_metrics_stay_empty() -> None:
    for text in ("metrics: []", "metrics: null"):
        config = parse_config(MINIMAL + text)
        assert config.metrics == [] and config.train.best_metric == "loss"


@pytest.mark.parametrize(
    ("metrics", "watched", "mode"),
    [
        ("[accuracy]", "loss", "min"),
        ("[accuracy]", "accuracy", "max"),
        ("[{top_k_accuracy: {k: 2}}]", "top_2_accuracy", "max"),
        ("[mse, r2]", "mse", "min"),
        ("[mse, r2]", "r2", "max"),
        ("[mae]", "mae", "min"),
    ],
)
def test_early_stopping_auto_mode_follows_the_metric(metrics: str, watched: str, mode: str) -> None:
    text = f"{MINIMAL}metrics: {metrics}\ntrain: {{early_stopping: {{metric: {watched}}}}}\n"
    assert parse_config(text).train.early_stopping == EarlyStoppingConfig(watched, mode)


def test_early_stopping_explicit_mode_and_on_off_switches() -> None:
    text = MINIMAL + "train: {early_stopping: {mode: max, patience: 2, min_delta: 1e-3}}\n"
    assert parse_config(text).train.early_stopping == EarlyStoppingConfig("loss", "max", 2, 0.001)
    on = parse_config(MINIMAL + "train: {early_stopping: true}\n").train.early_stopping
    assert on == EarlyStoppingConfig("loss", "min")
    for off in ("false", "null"):
        assert (
            parse_config(MINIMAL + f"train: {{early_stopping: {off}}}\n").train.early_stopping
            is None
        )


def test_best_metric_may_name_a_metric_by_its_logged_label() -> None:
    text = (
        MINIMAL
        + "metrics: [accuracy, {top_k_accuracy: {k: 3}}]\ntrain: {best_metric: top_3_accuracy}\n"
    )
    assert parse_config(text).train.best_metric == "top_3_accuracy"


def test_every_top_level_and_train_field_is_read() -> None:
    text = MINIMAL + (
        "seed: 7\nmode: graph\ndevice: auto\ndtype: float64\n"
        "data: {eval_batch_size: 500, val_split: 0.2, test_split: 0, shuffle: false, prefetch: 0}\n"
        "train: {epochs: null, max_steps: 300, log_every: 10, eval_every: 100,\n"
        "        checkpoint_every: 50, grad_clip: 1, drop_last: true}\n"
    )
    config = parse_config(text, "runs/exp.1.yaml")
    assert (config.name, config.seed, config.mode, config.device, config.dtype) == (
        "exp.1",
        7,
        "graph",
        "auto",
        "float64",
    )
    assert (config.data.eval_batch_size, config.data.val_split, config.data.test_split) == (
        500,
        0.2,
        0.0,
    )
    assert not config.data.shuffle and config.data.prefetch == 0
    assert config.train == TrainConfig(
        epochs=None, max_steps=300, log_every=10, eval_every=100, checkpoint_every=50,
        grad_clip=1.0, drop_last=True, best_metric="accuracy",
    )  # fmt: skip
    assert isinstance(config.train.grad_clip, float) and isinstance(config.data.test_split, float)


def test_numbers_written_like_1e_3_are_numbers() -> None:
    # YAML 1.1 reads `1e-3` (no dot) as a string; wherever a number is expected it is one.
    text = MINIMAL + (
        "optimizer: {name: adam, lr: 1e-3, eps: 1E-7}\ndata: {val_split: 5e-2}\n"
        "train: {grad_clip: 1e+1, early_stopping: {min_delta: 1e-4}}\n"
    )
    config = parse_config(text)
    assert config.optimizer.args["lr"] == 0.001 and config.optimizer.args["eps"] == 1e-7
    assert config.data.val_split == 0.05
    assert config.train.grad_clip == 10.0 and config.train.early_stopping.min_delta == 1e-4


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("configs/mnist_mlp.yaml", "mnist_mlp"),
        ("my config (2).yml", "my-config-2"),
        ("<string>", "string"),
    ],
)
def test_name_defaults_to_the_file_stem_made_safe(source: str, name: str) -> None:
    assert parse_config(MINIMAL, source).name == name


def test_yaml_anchors_merge_keys_and_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    text = (
        "model:\n  layers:\n    - linear: &wide {out: 64, bias: false}\n"
        "    - linear: {<<: *wide, out: 8}\n    - linear: *wide\n"
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    outs = [(layer.args["out"], layer.args["bias"]) for layer in load_config(path).model.layers]
    assert outs == [(64, False), (8, False), (64, False)]
