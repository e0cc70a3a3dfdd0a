"""The loader checks names against whatever the registries hold, not a list of its own:
small fake registries, injected with monkeypatch, change what is valid."""

from dataclasses import dataclass

import pytest

from trainctl.config import ConfigError, NamedConfig, Registries, load_registries, parse_config
from trainctl.config import load as config_load
from trainctl.spec import Arg, Entry


@dataclass(frozen=True)
class FakeEntry(Entry):
    task: str = "regression"
    higher_is_better: bool = False
    needs_path: bool = False
    obtain: str = ""
    downloadable: bool = False


def fake_registries() -> Registries:
    def table(*entries: FakeEntry) -> dict[str, FakeEntry]:
        return {entry.name: entry for entry in entries}

    return Registries(
        layers=table(FakeEntry("dense", {"units": Arg("int", low=1)}), FakeEntry("residual")),
        losses=table(FakeEntry("hinge", task="classification"), FakeEntry("huber")),
        metrics=table(FakeEntry("accuracy", higher_is_better=True), FakeEntry("error")),
        datasets=table(
            FakeEntry("digits"), FakeEntry("lab", needs_path=True, obtain="the lab share")
        ),
        transforms=table(FakeEntry("scale", {"by": Arg("float", 1.0)})),
        optimizers=table(FakeEntry("sgd", {"lr": Arg("float", 0.01, low=0, low_open=True)})),
        schedules=table(FakeEntry("constant")),
        metric_label=lambda name, args: name,
        optimizer_conflicts=lambda name, args: [],
        schedule_conflicts=lambda name, args, lr: [],
    )


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_load, "load_registries", fake_registries)


TEXT = """\
model: {layers: [{dense: {units: 8}}, {residual: [{dense: {units: 8}}]}]}
loss: huber
metrics: [error]
data: {dataset: lab, path: /data/lab, transforms: [{scale: {by: 2}}]}
train: {early_stopping: {metric: error}}
"""


@pytest.mark.usefixtures("fakes")
def test_names_from_the_injected_registries_are_valid() -> None:
    config = parse_config(TEXT)
    assert config.model.layers[0].args == {"units": 8}
    assert config.metrics == [NamedConfig("error")]
    assert config.data.transforms == [NamedConfig("scale", {"by": 2.0})]
    assert config.train.early_stopping.mode == "min"  # error: lower is better
    assert config.train.best_metric == "error"


@pytest.mark.usefixtures("fakes")
def test_messages_list_the_injected_names() -> None:
    text = "model: {layers: [{linear: {out: 3}}, dense]}\nloss: hinge\ndata: {dataset: lab}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert str(info.value).splitlines() == [
        "c.yaml:1: model.layers[0]: expected a layer type (dense, residual), found 'linear'",
        "c.yaml:1: model.layers[1].dense.units: expected an integer >= 1 (required), found nothing",
        "c.yaml:3: data.path: expected the path of data set lab's files, found nothing; "
        "get it from the lab share",
    ]


@pytest.mark.usefixtures("fakes")
def test_default_metrics_follow_the_injected_loss_task() -> None:
    model = "model: {layers: [dense: {units: 1}]}\n"
    assert parse_config(model + "loss: hinge\n").metrics == [NamedConfig("accuracy")]
    assert parse_config(model + "loss: huber\n").metrics == []


def test_the_real_registries_hold_what_configs_name() -> None:
    registries = load_registries()
    assert {"linear", "conv2d", "residual", "flatten"} <= registries.layers.keys()
    assert {"accuracy", "top_k_accuracy", "mse", "mae", "r2"} <= registries.metrics.keys()
    assert {"digits", "mnist"} <= registries.datasets.keys()
    assert registries.losses["cross_entropy"].task == "classification"
    assert registries.losses["mse"].task == "regression"
    assert (
        registries.metrics["r2"].higher_is_better and not registries.metrics["mae"].higher_is_better
    )
    assert registries.datasets["mnist"].needs_path and not registries.datasets["digits"].needs_path
    assert registries.metric_label("top_k_accuracy", {"k": 3}) == "top_3_accuracy"
