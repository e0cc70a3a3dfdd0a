"""Mixed precision (dtype: mixed_float16 | mixed_bfloat16): what computes in which dtype,
dynamic loss scaling, graph mode == eager mode, exact resume, and accuracy against float32."""

from pathlib import Path

import numpy as np
import pytest
from devices import cuda_only
from signals import SignalAtStep

from trainctl import backend, nn
from trainctl.autograd import Tensor
from trainctl.config import load_config, parse_config
from trainctl.errors import ConfigError
from trainctl.nn.precision import bfloat16, precision_of
from trainctl.optim import Adam, LossScaler
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.components import build_components
from trainctl.train.metrics_log import read_metrics
from trainctl.train.progress import QuietReporter
from trainctl.train.step import make_step
from trainctl.train.trainer import TrainOptions, train

CONFIGS = Path(__file__).parents[2] / "configs"
LOW = {"mixed_float16": np.dtype(np.float16), "mixed_bfloat16": bfloat16()}


def model(compute_dtype) -> nn.Module:
    backend.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4)
    )
    return net.set_compute_dtype(compute_dtype)


def batches(n=6):
    rng = np.random.default_rng(1)
    return [
        (rng.standard_normal((8, 3, 4)).astype(np.float32), rng.integers(0, 4, 8)) for _ in range(n)
    ]


# ---------------------------------------------------------------- the loss scale


def test_the_scale_halves_after_an_overflow_and_doubles_after_enough_good_steps():
    scaler = LossScaler(initial_scale=1024.0, growth_interval=3)
    assert scaler.step_scalars() == {"loss_scale": 1024.0, "inverse_loss_scale": 1 / 1024}
    scaler.update(False)
    assert (scaler.scale, scaler.good_steps, scaler.skipped) == (512.0, 0, 1)
    for _ in range(2):
        scaler.update(True)
    assert scaler.scale == 512.0
    scaler.update(True)
    assert (scaler.scale, scaler.good_steps) == (1024.0, 0)
    copy = LossScaler()
    copy.load_state_dict(scaler.state_dict())
    assert copy.state_dict() == scaler.state_dict()


# ---------------------------------------------------------------- what computes in which dtype


@pytest.mark.parametrize("name", LOW)
def test_layers_compute_low_while_weights_gradients_and_statistics_stay_float32(name):
    net = model(LOW[name])
    out = net(Tensor(batches()[0][0]))
    assert out.dtype == LOW[name]
    nn.cross_entropy(out.astype(np.float32), Tensor(batches()[0][1])).backward()
    for param_name, p in net.named_parameters():
        assert p.dtype == np.float32 and p.grad.dtype == np.float32, param_name
    assert net[2].running_mean.dtype == np.float32  # BatchNorm statistics in float32


def test_the_precision_of_each_config_dtype():
    assert precision_of("float32").compute_dtype is None
    half = precision_of("mixed_float16")
    assert (half.param_dtype, half.compute_dtype, half.loss_scaling) == (
        np.float32,
        np.float16,
        True,
    )
    assert precision_of("mixed_bfloat16").loss_scaling is False  # float32's range


# ---------------------------------------------------------------- both modes, bit for bit


def run(mode, name, scaler=None, steps=6):
    net = model(LOW[name])
    optimizer = Adam(net.parameters(), lr=0.01)
    step = make_step(
        mode, net, nn.cross_entropy, optimizer, device=backend.CPU, dtype=np.float32,
        loss_scaler=scaler,
    )  # fmt: skip
    losses = [step.train(x, y) for x, y in batches(steps)]
    return losses, net.state_dict(), optimizer.step_count, step.evaluate(batches()[0][0])


@pytest.mark.parametrize("name", LOW)
def test_graph_mode_gives_eager_modes_numbers(name):
    scaler = (lambda: LossScaler()) if name == "mixed_float16" else (lambda: None)
    eager = run("eager", name, scaler())
    graph = run("graph", name, scaler())
    assert eager[0] == graph[0]
    for key, value in eager[1].items():
        assert graph[1][key].tobytes() == value.tobytes(), key
    assert eager[2] == graph[2] == 6
    assert eager[3].dtype == graph[3].dtype == np.float32  # outputs come back in float32
    assert eager[3].tobytes() == graph[3].tobytes()


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_an_overflowing_float16_step_is_skipped_and_the_scale_halves(mode):
    before = model(np.float16).state_dict()
    scaler = LossScaler(initial_scale=2.0**60)  # float16 gradients overflow at once
    losses, state, step_count, _ = run(mode, "mixed_float16", scaler, steps=3)
    assert step_count == 0 and scaler.skipped == 3 and scaler.scale == 2.0**57
    assert all(np.isfinite(losses))
    for key, value in before.items():  # no weight moved (BatchNorm's statistics did: the
        if "running" not in key:  # forward ran, as in Keras and PyTorch)
            assert state[key].tobytes() == value.tobytes(), key


# ---------------------------------------------------------------- runs


MIXED_RUN = """
name: mixed
seed: 3
dtype: mixed_float16
data: {dataset: digits, batch_size: 32, val_split: 0.1, test_split: 0.1}
model:
  layers: [flatten, {linear: {out: 32}}, batch_norm, relu, {linear: {out: 10}}]
optimizer: {name: adam, lr: 0.01}
train: {max_steps: 30, log_every: 1, eval_every: 10, checkpoint_every: 10}
"""


def test_a_resumed_float16_run_scales_and_trains_exactly_as_an_uninterrupted_one(tmp_path):
    cfg = parse_config(MIXED_RUN, "mixed.yaml")
    straight = train(cfg, TrainOptions(runs_root=tmp_path / "a"), QuietReporter())
    stopped = train(cfg, TrainOptions(runs_root=tmp_path / "b"), SignalAtStep(13))
    train(None, TrainOptions(resume=stopped.run.path), QuietReporter())

    def losses(result):
        records = read_metrics(result.run.path / "metrics.jsonl")
        return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]

    assert losses(stopped) == losses(straight)
    saved = load_checkpoint(stopped.run.path / "checkpoints" / "last.safetensors")
    assert saved.trainer_state["loss_scale"]["scale"] == 2.0**15


def test_mixed_bfloat16_is_refused_on_cuda_with_a_config_error(monkeypatch):
    monkeypatch.setattr(backend, "get_device", lambda name: backend.Device("cuda", np))
    config = parse_config(MIXED_RUN, "mixed.yaml", ["dtype=mixed_bfloat16", "device=cuda"])
    with pytest.raises(ConfigError, match="dtype: mixed_bfloat16 runs on the CPU only"):
        build_components(config)


@pytest.mark.parametrize(
    "config, name",
    [
        ("digits_mlp.yaml", "mixed_float16"),
        ("digits_mlp.yaml", "mixed_bfloat16"),
        ("digits_cnn.yaml", "mixed_float16"),
        ("digits_cnn.yaml", "mixed_bfloat16"),
    ],
)
def test_training_in_mixed_precision_reaches_the_float32_accuracy(tmp_path, config, name):
    """Within one point of float32's validation accuracy (180 samples: one point is two)."""

    def accuracy(dtype):
        loaded = load_config(CONFIGS / config, [f"dtype={dtype}", "mode=graph"])
        result = train(loaded, TrainOptions(runs_root=tmp_path / dtype), QuietReporter())
        return result.summary["final"]["val"]["accuracy"]

    assert accuracy(name) >= accuracy("float32") - 0.01


@cuda_only
def test_float16_on_the_gpu_agrees_across_modes_and_is_captured_with_its_loss_scale():
    cuda = backend.get_device("cuda")

    def run_on(mode):
        net = model(np.float16).to(cuda)
        optimizer = Adam(net.parameters(), lr=0.01)
        step = make_step(
            mode, net, nn.cross_entropy, optimizer, device=cuda, dtype=np.float32,
            loss_scaler=LossScaler(), cuda_graphs=True,
        )  # fmt: skip
        return [step.train(x, y) for x, y in batches()], optimizer.step_count, step

    eager, graph = run_on("eager"), run_on("graph")
    np.testing.assert_allclose(graph[0], eager[0], rtol=1e-3)
    assert eager[1] == graph[1] == 6
    train_signature = [s for s in graph[2].stats()["signatures"] if s["kind"] == "train"][0]
    assert train_signature["cuda_graph"]["captured"], train_signature["cuda_graph"]
