"""Resource sanity: a run that cannot fit in memory or cannot end is refused before it starts.

The estimate is checked against the model the builder makes (parameter counts) and against
what a real step allocates (it must not exceed it: it is a lower bound); refusals are one
line with the estimate and what is available, exit code 2, and no run folder; `--force` goes
ahead with a notice.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tracemalloc

import pytest
from data_files import write_cifar
from faults_helpers import CONFIG, REPORT, ROOT, config, only_run, run_train
from typer.testing import CliRunner

from trainctl import backend
from trainctl.cli import app
from trainctl.config import load_config
from trainctl.nn.build import count_parameters
from trainctl.train import resources
from trainctl.train.components import build_components, load_data
from trainctl.train.progress import QuietReporter
from trainctl.train.resources import (
    MAX_PLANNED_STEPS,
    ResourceError,
    available_memory,
    check_resources,
    estimate_memory,
    format_bytes,
)
from trainctl.train.trainer import TrainOptions, train

REFUSED: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def closing_note():
    yield
    if REFUSED:
        REPORT.append(
            f"resource checks: {len(REFUSED)} refusals ({'; '.join(REFUSED)}), "
            "each before any allocation, with the estimate"
        )


def example(name: str, tmp_path, *overrides: str):
    extra = []
    if name == "cifar10_cnn":
        write_cifar(tmp_path / "cifar", per_batch=8, test_size=6)
        extra = [f"data.path={tmp_path / 'cifar'}", "data.batch_size=4"]
    return load_config(ROOT / "configs" / f"{name}.yaml", [*extra, *overrides])


@pytest.mark.parametrize(
    "name",
    ["digits_mlp", "digits_cnn", "cifar10_cnn", "spirals", "linear_regression", "mnist_keras_mlp",
     "digits_inception", "digits_unet", "digits_python", "char_transformer", "char_lstm"],
)  # fmt: skip
def test_the_estimate_counts_the_parameters_the_builder_makes(name, tmp_path):
    if name == "mnist_keras_mlp":  # its layers on digits-sized samples: only the shapes matter
        cfg = example(name, tmp_path, "data.dataset=digits", "data.download=false")
    else:
        cfg = example(name, tmp_path)
    data = load_data(cfg)
    estimate = estimate_memory(cfg, data)
    model = build_components(cfg, with_data=data).model
    assert estimate.parameters == count_parameters(model)
    itemsize = 4
    assert estimate.parameter_bytes == estimate.gradient_bytes == estimate.parameters * itemsize
    optimizer_states = {"sgd": 1, "adam": 2, "adamw": 2, "rmsprop": 1}[cfg.optimizer.name]
    if cfg.optimizer.name == "sgd" and not cfg.optimizer.args.get("momentum"):
        optimizer_states = 0
    assert estimate.optimizer_bytes == optimizer_states * estimate.parameter_bytes


def test_a_python_model_is_counted_on_the_model_without_moving_the_generator(tmp_path):
    """Its code alone knows its parameters: the estimate builds it, and puts the default
    generator back, so that the model training builds next has the weights it would have."""
    cfg = example("digits_python", tmp_path)
    data = load_data(cfg)
    backend.manual_seed(cfg.seed)
    estimate = estimate_memory(cfg, data)
    assert backend.default_generator.state_dict() == {"seed": cfg.seed, "counter": 0}
    assert estimate.parameters == 5_130 and estimate.parameter_bytes == 4 * estimate.parameters


def first_step_peak(cfg, data) -> tuple[int, object]:
    """The peak bytes the first training step allocates (it also allocates the gradients and
    optimizer state; the parameters exist before), and the step."""
    parts = build_components(cfg, with_data=data)
    step = parts.make_step()
    inputs, targets = next(iter(parts.loader("train", training=True).epoch(0)))
    targets = parts.prepare_targets(targets)
    tracemalloc.start()
    try:
        step.train(inputs, targets)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, step


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "spirals"])
def test_the_estimate_is_a_lower_bound_of_what_a_step_allocates(name, tmp_path):
    cfg = example(name, tmp_path, "mode=eager")
    data = load_data(cfg)
    estimate = estimate_memory(cfg, data)
    peak, _ = first_step_peak(cfg, data)
    allocated_by_the_step = estimate.total - estimate.parameter_bytes
    assert 0 < allocated_by_the_step <= peak


@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("name", ["digits_cnn", "cifar10_cnn"])
def test_the_estimate_of_a_cnn_comes_within_1_5x_of_what_a_step_holds(name, mode, tmp_path):
    """Eager: the peak the first step allocates (tracemalloc; the parameters were allocated
    before). Graph: the bytes of the buffers the compiled step plans (its own accounting)."""
    cfg = example(name, tmp_path, f"mode={mode}")
    data = load_data(cfg)
    estimate = estimate_memory(cfg, data)
    peak, step = first_step_peak(cfg, data)
    held = peak if mode == "eager" else step.stats()["signatures"][0]["buffer_bytes"]
    assert estimate.total - estimate.parameter_bytes <= held <= 1.5 * estimate.total


def test_a_model_larger_than_memory_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda device: 10_000)
    with pytest.raises(ResourceError) as caught:
        run_train(config(), tmp_path / "runs")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("faults.yaml: a training step needs about ")
    assert (
        "parameters" in message and "optimizer state" in message and "for a batch of 32" in message
    )
    assert "but cpu has 9.8 KiB available" in message and "--force" in message
    assert not (tmp_path / "runs").exists()
    REFUSED.append("a model over the (pretended) free memory")


def test_force_tries_anyway_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda device: 10_000)
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(CONFIG)
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(cfg),
            "--set",
            "train.max_steps=3",
            "--runs-root",
            str(tmp_path / "runs"),
            "--force",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "available; trying anyway (--force)" in result.output
    assert "trying anyway" in (only_run(tmp_path / "runs") / "train.log").read_text()


def test_an_absurd_model_is_refused_in_a_real_process_in_no_time(tmp_path):
    """10^14 parameters: refused with the estimate, long before NumPy could try to allocate."""
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(CONFIG)
    overrides = ["model.layers[1].linear.out=10000000", "model.layers[5].linear.out=10000000"]
    command = [
        sys.executable,
        "-m",
        "trainctl",
        "train",
        str(cfg),
        *(arg for o in overrides for arg in ("--set", o)),
        "--runs-root",
        str(tmp_path / "runs"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    loaded = load_config(cfg, overrides)
    estimate = estimate_memory(loaded, load_data(loaded))
    assert estimate.parameters > 10**14 and estimate.total > 2**50
    assert f"a training step needs {estimate.describe()}, but cpu has " in line
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert not (tmp_path / "runs").exists()
    REFUSED.append(f"10^14 parameters ({format_bytes(estimate.total)}) in a real process")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.max_steps=1000000000000000", "train.epochs=null"], "train.max_steps"),
        (["train.max_steps=null", "train.epochs=1000000000000"], "train.epochs"),
    ],
)
def test_a_run_that_would_never_end_is_refused(tmp_path, overrides, key):
    per_epoch = math.ceil(len(load_data(config()).train) / 32)
    steps = 10**15 if key == "train.max_steps" else 10**12 * per_epoch
    with pytest.raises(ResourceError) as caught:
        run_train(config(*overrides), tmp_path / "runs")
    assert str(caught.value).startswith(f"faults.yaml: {key} plans {steps:,} steps, more than ")
    assert "years" in str(caught.value) and f"lower {key}" in str(caught.value)
    assert not (tmp_path / "runs").exists()
    REFUSED.append(f"{key} planning {steps:.0e} steps")


class InterruptAtStep(QuietReporter):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.count = step, 0

    def advanced(self, loss: float, lr: float, samples_per_s: float) -> None:
        self.count += 1
        if self.count == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_force_starts_a_never_ending_run_which_a_signal_stops(tmp_path):
    options = TrainOptions(runs_root=tmp_path / "runs", force=True)
    cfg = config("train.max_steps=1000000000000000", "train.epochs=null")
    result = train(cfg, options, InterruptAtStep(3))
    assert result.status == "interrupted" and result.summary["steps"] == 3
    assert result.summary["planned_steps"] == 10**15
    log = (result.run.path / "train.log").read_text()
    assert "starting anyway (--force)" in log


def test_a_batch_larger_than_the_data_is_a_notice(tmp_path):
    cfg = config("data.batch_size=1000000000", "train.max_steps=2")
    result = run_train(cfg, tmp_path / "runs")
    assert result.status == "completed" and result.summary["steps"] == 2
    samples = len(load_data(cfg).train)
    log = (result.run.path / "train.log").read_text()
    assert f"data.batch_size 1,000,000,000 is larger than the training split ({samples:,} " in log


def test_notices_and_no_refusal_for_a_normal_run():
    cfg = config()
    data = load_data(cfg)
    assert check_resources(cfg, data, backend.get_device("cpu"), force=False) == []
    assert MAX_PLANNED_STEPS == 10**9


def test_available_host_memory_is_read():
    available = available_memory(backend.get_device("cpu"))
    assert available is not None and available > 1 << 20


@pytest.mark.parametrize(
    ("count", "text"),
    [(512, "512 bytes"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB"), (2**60, "1024.0 PiB")],
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text
