"""Numerical faults: NaN/Inf in the inputs, the loss, the forward pass or the gradients.

Each stops the run with the step number and (with debug.check_numerics) the first non-finite
tensor named: the batch sample, the op and its layer, or the gradient it came from; the status
is failed and no checkpoint with a NaN or Inf in it is ever written. check_numerics checks
every op in eager mode and every node in graph mode, and without it nothing is checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_files import write_cifar, write_mnist
from faults_helpers import REPORT, ROOT, config, losses, only_run, run_train

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.numerics import NonFiniteError, describe_nonfinite
from trainctl.config import load_config
from trainctl.errors import DataError
from trainctl.train import components as components_module
from trainctl.train import prepare as prepare_module
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.components import build_components, load_data
from trainctl.train.numerics import layer_label
from trainctl.train.trainer import TrainingError

MODES = ["eager", "graph"]
CHECKS = {"off": "debug.check_numerics=false", "on": "debug.check_numerics=true"}
FAULTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def closing_note():
    yield
    if FAULTS:
        REPORT.append(
            f"numerical faults: {len(FAULTS)} runs ({', '.join(sorted(set(FAULTS)))}), "
            "each stopped at its step with the culprit named and no NaN checkpoint"
        )


def fail(cfg, tmp_path) -> tuple[str, dict, object]:
    """Run `cfg`, which must fail; its message, its summary and its run folder."""
    with pytest.raises(TrainingError) as caught:
        run_train(cfg, tmp_path / "runs")
    run = only_run(tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == str(caught.value)
    for tag in ("last", "best"):  # whatever was written holds finite numbers only
        path = run / "checkpoints" / f"{tag}.safetensors"
        if path.exists():
            saved = load_checkpoint(path)
            assert all(np.isfinite(a).all() for a in saved.model_state.values())
            assert all(
                np.isfinite(a).all()
                for s in saved.optimizer_state["state"].values()
                for a in s.values()
            )
    return str(caught.value), summary, run


def kept_step(message: str) -> int | None:
    if "no checkpoint is kept" in message:
        return None
    return int(message.rsplit("(step ", 1)[1].split(")")[0])


# ---------------------------------------------------------------- the faults


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("check", list(CHECKS))
def test_a_nan_in_the_inputs_names_the_sample_and_step(tmp_path, monkeypatch, mode, check):
    poisoned = 100  # a training sample; which step meets it depends on the seeded shuffle
    real_load = prepare_module.load_data

    def load(cfg, preprocessing=None):
        data = real_load(cfg, preprocessing)
        data.train.inputs[poisoned, 2, 5] = np.nan
        return data

    monkeypatch.setattr(prepare_module, "load_data", load)
    cfg = config(f"mode={mode}", CHECKS[check], "data.transforms=[]")
    parts = build_components(cfg, with_data=load(cfg))
    batches = parts.loader("train", training=True).epoch(0)
    step, row = next(
        (i, np.flatnonzero(np.isnan(x).any(axis=(1, 2, 3))))
        for i, (x, _) in enumerate(batches, 1)
        if np.isnan(x).any()
    )
    message, summary, run = fail(cfg, tmp_path)
    assert message.startswith(f"step {step}: ")
    assert f"the inputs of sample {row[0]} of the batch of 32: 1 NaN among 64 values" in message
    # check_numerics stops before the step runs; the loss check right after it
    assert summary["steps"] == (step - 1 if check == "on" else step)
    assert [s for s, _ in losses(run)] == list(range(1, step))
    assert kept_step(message) == ((step - 1) // 4 * 4 or None)
    FAULTS.append(f"NaN input ({mode}, check {check})")


def test_a_nan_in_a_data_file_is_refused_when_loading(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    x[7, 2] = np.nan
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(40) % 3)
    cfg = config(
        "data.dataset=npz",
        f"data.path={tmp_path / 'data.npz'}",
        "data.transforms=[]",
        "model.layers=[linear: {out: 3}]",
    )
    with pytest.raises(DataError, match=r"data\.npz.*finite.*nan at index 7, 2"):
        load_data(cfg)


@pytest.mark.parametrize("mode", MODES)
def test_a_diverging_loss_stops_at_its_step(tmp_path, mode):
    cfg = config(
        f"mode={mode}",
        "optimizer={name: sgd, lr: 1.0e+30}",
        "data.transforms=[]",
        "train.checkpoint_every=1",
    )
    message, summary, run = fail(cfg, tmp_path)
    step = summary["steps"]
    assert step > 1 and message.startswith(f"step {step}: the loss is nan (try a lower ")
    assert [s for s, _ in losses(run)] == list(range(1, step))
    assert kept_step(message) == step - 1  # every step before it was checkpointed
    FAULTS.append(f"diverging loss ({mode})")


@pytest.mark.parametrize("mode", MODES)
def test_an_overflowing_buffer_is_never_checkpointed(tmp_path, mode):
    """lr 1000: the losses stay finite while BatchNorm's running variance overflows."""
    cfg = config(
        f"mode={mode}",
        "optimizer={name: sgd, lr: 1000.0}",
        "data.transforms=[]",
        "train.checkpoint_every=1",
    )
    message, summary, run = fail(cfg, tmp_path)
    step = summary["steps"]
    assert message.startswith(
        f"step {step}: 2.running_var (model.layers[2] (BatchNorm1d)) became non-finite ("
    )
    assert "checkpoints/last is not written" in message and kept_step(message) == step - 1
    assert all(np.isfinite(loss) for _, loss in losses(run)) and len(losses(run)) == step
    FAULTS.append(f"overflowing buffer ({mode})")


def nan_gradient_loss(monkeypatch) -> None:
    """The loss gains sqrt(0) * 0: its value is unchanged, its gradient is NaN."""
    real = components_module.make_loss_fn

    def make_loss_fn(name, args):
        loss = real(name, args)
        return lambda out, y: loss(out, y) + ops.sqrt(ops.reduce_sum(out * 0.0)) * 0.0

    monkeypatch.setattr(components_module, "make_loss_fn", make_loss_fn)


@pytest.mark.parametrize("mode", MODES)
def test_a_nan_gradient_with_a_finite_loss_never_reaches_a_checkpoint(tmp_path, monkeypatch, mode):
    nan_gradient_loss(monkeypatch)
    cfg = config(f"mode={mode}", "train.checkpoint_every=1")
    message, summary, run = fail(cfg, tmp_path)
    assert message.startswith("step 1: ")
    assert "1.weight (model.layers[1] (Linear)) became non-finite (2048 NaN among 2048 " in message
    assert "checkpoints/last is not written" in message
    assert not (run / "checkpoints" / "last.safetensors").exists()
    assert losses(run) and np.isfinite(losses(run)[0][1])  # the loss itself was fine
    FAULTS.append(f"NaN gradient ({mode}, check off)")


@pytest.mark.parametrize("mode", MODES)
def test_check_numerics_names_the_gradient_that_went_wrong(tmp_path, monkeypatch, mode):
    nan_gradient_loss(monkeypatch)
    message, _, _ = fail(config(f"mode={mode}", CHECKS["on"]), tmp_path)
    assert message.startswith("step 1: non-finite values (1 NaN among 1 value) in the output of ")
    assert "in the backward pass (the gradient through sqrt of the loss)" in message
    FAULTS.append(f"NaN gradient ({mode}, check on)")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("check", list(CHECKS))
def test_an_inf_weight_is_named_by_the_layer_whose_matmul_it_spoils(
    tmp_path, monkeypatch, mode, check
):
    real_build = prepare_module.build_components

    def build(cfg, **kwargs):
        parts = real_build(cfg, **kwargs)
        parts.model[5].weight.data[3, 4] = np.inf
        return parts

    monkeypatch.setattr(prepare_module, "build_components", build)
    message, _, _ = fail(config(f"mode={mode}", CHECKS[check]), tmp_path)
    assert message.startswith("step 1: ")
    if check == "on":
        assert "in the output of matmul, float32[32, 10], in model.layers[5] (Linear)" in message
    else:
        assert "the loss is nan" in message and "debug.check_numerics: true names" in message
    FAULTS.append(f"Inf weight ({mode}, check {check})")


# ---------------------------------------------------------------- the switch itself


@pytest.mark.parametrize("mode", MODES)
def test_check_numerics_does_not_change_a_single_number(tmp_path, mode):
    plain = run_train(config(f"mode={mode}", "train.max_steps=12"), tmp_path / "a")
    checked = run_train(config(f"mode={mode}", "train.max_steps=12", CHECKS["on"]), tmp_path / "b")
    assert losses(checked.run.path) == losses(plain.run.path)
    assert len(losses(plain.run.path)) == 12


def compiled_sources(cfg) -> list[str]:
    parts = build_components(cfg)
    step = parts.make_step()
    for inputs, targets in parts.loader("train", training=True).epoch(0):
        step.train(inputs, parts.prepare_targets(targets))
        step.evaluate(inputs)
        break
    return [c.program.source for c in step._compiled.values()]


def test_graph_mode_checks_every_float_node_only_when_asked():
    """The checked program is the plain one with a check after each node: same code, same
    buffers; without the option there is not a single check."""
    plain = compiled_sources(config("mode=graph"))
    checked = compiled_sources(config("mode=graph", CHECKS["on"]))
    assert len(plain) == len(checked) == 2  # training and evaluation
    for source, without in zip(checked, plain, strict=True):
        assert "isfinite" not in without
        lines = source.splitlines()
        checks = [i for i, line in enumerate(lines) if "if not xp.isfinite(" in line]
        assert len(checks) >= source.count("xp.matmul(") > 0
        for number, i in enumerate(checks):  # each check calls out its own node
            assert lines[i + 1].strip().startswith(f"nonfinite({number}, ")
        kept = [line for i, line in enumerate(lines) if i not in checks and i - 1 not in checks]
        assert kept == without.splitlines()


def test_graph_mode_without_the_memory_plan_checks_too(monkeypatch):
    from trainctl.train.step import make_step

    backend.manual_seed(0)
    parts = build_components(config("mode=graph"))
    step = make_step(
        "graph",
        parts.model,
        parts.loss_fn,
        parts.optimizer,
        device=parts.device,
        dtype=parts.dtype,
        plan_memory=False,
        check_numerics=True,
    )
    parts.model[1].weight.data[0, 0] = np.nan
    inputs, targets = next(iter(parts.loader("train", training=True).epoch(0)))
    with pytest.raises(
        NonFiniteError,
        match=r"in the output of matmul, float32\[32, 32\], in "
        r"model\.layers\[1\] \(Linear\)",
    ):
        step.train(inputs, parts.prepare_targets(targets))


EXAMPLES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_config_runs_clean_under_check_numerics(tmp_path, name, mode):
    overrides = [
        "train.max_steps=2",
        "train.eval_every=2",
        "data.batch_size=4",
        f"mode={mode}",
        CHECKS["on"],
    ]
    if "mnist" in name:
        write_mnist(tmp_path / "data", sizes=(40, 10))
        overrides.append(f"data.path={tmp_path / 'data'}")
    if "cifar" in name:
        write_cifar(tmp_path / "data", per_batch=8, test_size=6)
        overrides.append(f"data.path={tmp_path / 'data'}")
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", overrides)
    result = run_train(cfg, tmp_path / "runs")
    assert result.status == "completed" and result.summary["steps"] == 2


# ---------------------------------------------------------------- the names


@pytest.mark.parametrize(
    ("path", "label"),
    [("3", "model.layers[3] (Linear)"), ("2.body.0", "model.layers[2].layers[0] (Linear)")],
)
def test_layer_labels_use_the_config_s_names(path, label):
    from trainctl.nn.layers import Linear

    assert layer_label(path, Linear(2, 2)) == label


def test_describe_counts_each_kind():
    assert describe_nonfinite(np.array([np.nan, np.inf, -np.inf, 1.0])) == (
        "1 NaN and 2 Inf among 4 values"
    )
