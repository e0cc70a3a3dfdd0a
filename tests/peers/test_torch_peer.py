"""The PyTorch peer trains a config exactly as trainctl eager does: same initial weights, same
losses step by step, same weights and outputs afterwards, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

from trainctl.config import parse_config
from trainctl.data.dataset import ArrayDataset, DataSplits
from trainctl.nn.build import LAYERS
from trainctl.train.components import Components, build_components

torch = pytest.importorskip("torch")

from trainctl_peers import load_torch_peer  # noqa: E402
from trainctl_peers.torch_model import LAYER_TYPES  # noqa: E402

TorchPeer = load_torch_peer()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Agreement does not depend on torch's thread count, but speed does: torch's OpenMP
    threads run 100x slower while another process holds one of two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


STEPS = 10
# float32: the two sides round differently (im2col GEMM vs torch's kernels); float64: barely.
TOLERANCES = {
    "float32": {"loss": 1e-5, "rtol": 1e-4, "atol": 1e-5},
    "float64": {"loss": 1e-12, "rtol": 1e-10, "atol": 1e-12},
}


# A bias just before batch norm, or before a softmax over a spatial axis, has no effect and
# so a gradient of pure rounding noise, which adaptive optimizers blow up: such layers have
# bias: false here, as in a real network.
def _config(name: str, data: str, layers: str, rest: str) -> str:
    return f"name: {name}\nseed: 0\ndata: {data}\nmodel:\n  layers:\n{layers}\n{rest}\n"


DIGITS = (
    "{dataset: digits, batch_size: 16, val_split: 0, test_split: 0, "
    "transforms: [{normalize: {mean: 0.3, std: 0.38}}]}"
)

CONFIGS = {
    "mlp_sgd_momentum": _config(
        "mlp",
        DIGITS,
        """
    - flatten
    - linear: {out: 32}
    - relu
    - linear: {out: 10}""",
        "loss: cross_entropy\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9}",
    ),
    "cnn_adam": _config(
        "cnn",
        DIGITS,
        """
    - conv2d: {out: 8, kernel: 3, padding: 1}
    - relu
    - max_pool2d: {kernel: 2}
    - conv2d: {out: 12, kernel: 3, stride: 2, padding: 1, bias: false}
    - leaky_relu: {slope: 0.1}
    - avg_pool2d: {kernel: 2, stride: 1}
    - flatten
    - linear: {out: 10}""",
        "loss: cross_entropy\noptimizer: {name: adam, lr: 0.003}",
    ),
    "norm_residual_rmsprop": _config(
        "norm",
        DIGITS,
        """
    - conv2d: {out: 6, kernel: 3, padding: 1, bias: false}
    - batch_norm: {momentum: 0.2}
    - relu
    - residual:
        - conv2d: {out: 6, kernel: 3, padding: 1, bias: false}
        - batch_norm
        - gelu
        - layer_norm
    - flatten
    - linear: {out: 24}
    - residual:
        - layer_norm: {eps: 0.001}
        - linear: {out: 24}
        - gelu
    - batch_norm
    - tanh
    - linear: {out: 10}""",
        "loss: {name: cross_entropy, label_smoothing: 0.1}\n"
        "optimizer: {name: rmsprop, lr: 0.001, momentum: 0.5}\n"
        "schedule: {name: cosine, warmup_steps: 3}\n"
        "train: {epochs: 1, grad_clip: 0.05}",
    ),
    "softmax_axes_on_images": _config(
        "softmax",
        "{dataset: images, options: {samples: 200, height: 6, width: 6, channels: 3, "
        "classes: 4}, batch_size: 16, val_split: 0, test_split: 0}",
        """
    - conv2d: {out: 5, kernel: 3, padding: 1, bias: false}
    - softmax: {axis: 1}
    - upsample2d: {scale: 2}
    - conv2d: {out: 5, kernel: 3}
    - softmax
    - global_avg_pool
    - linear: {out: 4}""",
        "loss: cross_entropy\noptimizer: {name: adamw, lr: 0.01}",
    ),
    "mse_regression": _config(
        "mse",
        "{dataset: regression, options: {samples: 200, features: 4}, batch_size: 16, "
        "val_split: 0, test_split: 0}",
        """
    - linear: {out: 16}
    - sigmoid
    - linear: {out: 16}
    - silu
    - linear: {out: 16}
    - softplus
    - linear: {out: 16}
    - elu: {alpha: 0.5}
    - linear: {out: 1}""",
        "loss: mse\noptimizer: {name: sgd, lr: 0.1, nesterov: true, momentum: 0.8}",
    ),
    "bce_with_logits": _config(
        "bce",
        "{dataset: blobs, options: {samples: 200, classes: 2, features: 3}, batch_size: 16, "
        "val_split: 0, test_split: 0}",
        """
    - linear: {out: 8}
    - tanh
    - linear: {out: 1}""",
        "loss: bce_with_logits\noptimizer: {name: adam, lr: 0.01, weight_decay: 0.01}",
    ),
    "embedding_tokens": _config(
        "embedding",
        "{dataset: blobs, batch_size: 16, val_split: 0, test_split: 0}",
        """
    - embedding: {num: 12, dim: 4}
    - layer_norm
    - flatten
    - linear: {out: 3}""",
        "loss: cross_entropy\noptimizer: {name: sgd, lr: 0.5}",
    ),
    "image_to_image": _config(
        "image",
        "{dataset: regression, batch_size: 16, val_split: 0, test_split: 0}",
        """
    - conv2d: {out: 4, kernel: 3, padding: 1, bias: false}
    - batch_norm
    - dropout: {p: 0.0}
    - conv2d: {out: 3, kernel: 3, padding: 1}""",
        "loss: mse\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9}",
    ),
    "sequence_models": _config(
        "sequence",
        "{dataset: blobs, batch_size: 16, val_split: 0, test_split: 0}",
        """
    - embedding: {num: 9, dim: 8}
    - positional_embedding
    - transformer_block: {heads: 2, mlp_ratio: 2}
    - self_attention: {heads: 4, causal: false}
    - lstm: {hidden: 6}
    - linear: {out: 9}""",
        # SGD: the key bias's gradient is zero but for rounding (softmax ignores a constant
        # added to a row of scores), which Adam would blow up
        "loss: {name: sequence_cross_entropy, label_smoothing: 0.1}\n"
        "optimizer: {name: sgd, lr: 0.1, momentum: 0.9}",
    ),
}


def _tokens() -> DataSplits:
    """Integer inputs (sequences of 5 indices in [0, 12)) for the embedding config."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 12, (200, 5))
    labels = (inputs[:, 0] % 3).astype(np.int64)
    return DataSplits(ArrayDataset(inputs, labels, "classification", 3), None, None, "t", "t")


def _images_to_images() -> DataSplits:
    """Image-shaped regression targets, so the model's output is an NHWC image too."""
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((200, 6, 5, 2)).astype(np.float32)
    targets = rng.standard_normal((200, 6, 5, 3)).astype(np.float32)
    return DataSplits(ArrayDataset(inputs, targets, "regression", None), None, None, "i", "i")


def _token_sequences() -> DataSplits:
    """Sequences of 6 token ids in [0, 9) and their next tokens, as the text data set gives."""
    tokens = np.random.default_rng(0).integers(0, 9, (200, 7))
    train = ArrayDataset(tokens[:, :-1], tokens[:, 1:], "classification", 9)
    return DataSplits(train, None, None, "text", "t")


DATA = {
    "embedding_tokens": _tokens,
    "image_to_image": _images_to_images,
    "sequence_models": _token_sequences,
}


def _components(name: str, dtype: str = "float32", overrides: tuple[str, ...] = ()) -> Components:
    config = parse_config(CONFIGS[name], name, [f"dtype={dtype}", *overrides])
    data = DATA[name]() if name in DATA else None
    return build_components(config, with_data=data)


def _batches(components: Components, count: int = STEPS) -> list[tuple[np.ndarray, np.ndarray]]:
    batches = []
    for inputs, targets in components.loader("train", training=True).epoch(0):
        batches.append((inputs, components.prepare_targets(targets)))
        if len(batches) == count:
            return batches
    raise AssertionError(f"the data gives fewer than {count} batches")


def _train_both(
    components: Components, batches: list, peer: TorchPeer
) -> tuple[list[float], list[float]]:
    """The losses of trainctl eager and of `peer` (built beforehand) on the same batches."""
    step = components.make_step("eager")
    ours = [step.train(x, y) for x, y in batches]
    return ours, [peer.train(x, y) for x, y in batches]


def _assert_states_match(peer: TorchPeer, components: Components, tol: dict) -> None:
    expected = components.model.state_dict()
    found = peer.trainctl_state()
    assert list(found) == list(expected)
    for name, array in expected.items():
        assert found[name].dtype == array.dtype, name
        np.testing.assert_allclose(
            found[name], array, rtol=tol["rtol"], atol=tol["atol"], err_msg=name
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_peer_trains_like_trainctl_eager(name, dtype):
    components = _components(name, dtype)
    batches = _batches(components)
    peer = TorchPeer.from_components(components)
    initial = peer.trainctl_state()
    for key, array in components.model.state_dict().items():
        np.testing.assert_array_equal(initial[key], array, err_msg=key)

    ours, theirs = _train_both(components, batches, peer)
    tol = TOLERANCES[dtype]
    assert peer.comparable and peer.reason is None
    np.testing.assert_allclose(theirs, ours, rtol=tol["loss"])
    moved = components.model.state_dict()
    assert any(not np.allclose(moved[key], initial[key]) for key in initial), "nothing trained"
    _assert_states_match(peer, components, tol)
    assert peer.step_count == components.optimizer.step_count == STEPS

    inputs = batches[0][0]
    expected = components.make_step("eager").evaluate(inputs)
    outputs = peer.evaluate(inputs)
    assert outputs.shape == expected.shape and outputs.dtype == expected.dtype
    np.testing.assert_allclose(outputs, expected, rtol=tol["rtol"], atol=tol["atol"])


def test_the_test_configs_use_every_layer_type():
    used = set()

    def collect(layers):
        for layer in layers:
            used.add(layer.type)
            collect(layer.layers or [])

    for text in CONFIGS.values():
        collect(parse_config(text).model.layers)
    assert used == set(LAYERS) == set(LAYER_TYPES)


def test_images_are_permuted_once_each_way_around_the_convolutions():
    modules = [type(m).__name__ for m in TorchPeer.from_components(_components("cnn_adam")).model]
    assert modules[0] == "Permute" and modules.count("Permute") == 2
    assert modules.index("Flatten") == modules.index("Permute", 1) + 1


OPTIMIZERS = {
    "sgd_dampened": "{name: sgd, lr: 0.1, momentum: 0.9, dampening: 0.3, weight_decay: 0.01}",
    "sgd_nesterov": "{name: sgd, lr: 0.1, momentum: 0.5, nesterov: true, weight_decay: 0.1}",
    "sgd_plain": "{name: sgd, lr: 0.1}",
    "adam_l2": "{name: adam, lr: 0.01, betas: [0.8, 0.99], eps: 1.0e-6, weight_decay: 0.1}",
    "adamw": "{name: adamw, lr: 0.01, weight_decay: 0.2}",
    "rmsprop_centered": "{name: rmsprop, lr: 0.01, alpha: 0.9, centered: true, momentum: 0.3}",
    "rmsprop_decay": "{name: rmsprop, lr: 0.005, eps: 0.001, weight_decay: 0.05}",
}
SCHEDULES = {
    "constant": "{name: constant}",
    "step": "{name: step, step_size: 2, gamma: 0.5}",
    "warmup_cosine": "{name: cosine, warmup_steps: 2, total_steps: 5, min_lr: 0.001}",
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("start", [0, 3])
def test_each_optimizer_and_schedule_agree_also_from_mid_run(optimizer, schedule, start):
    """A peer built after `start` trainctl updates takes over the moments and the clock."""
    overrides = (f"optimizer={OPTIMIZERS[optimizer]}", f"schedule={SCHEDULES[schedule]}")
    components = _components("mse_regression", "float64", overrides)
    batches = _batches(components, start + 5)
    warmup = components.make_step("eager")
    for x, y in batches[:start]:
        warmup.train(x, y)
    peer = TorchPeer.from_components(components)
    assert peer.step_count == start
    ours, theirs = _train_both(components, batches[start:], peer)
    np.testing.assert_allclose(theirs, ours, rtol=1e-12)
    _assert_states_match(peer, components, TOLERANCES["float64"])


def test_gradient_clipping_is_applied_as_trainctl_does():
    def losses(*overrides: str) -> tuple[list[float], list[float]]:
        components = _components("mlp_sgd_momentum", "float64", overrides)
        peer = TorchPeer.from_components(components)
        return _train_both(components, _batches(components, 5), peer)

    unclipped, _ = losses()
    clipped, peer_clipped = losses("train.grad_clip=0.02")
    assert not np.allclose(clipped, unclipped)
    np.testing.assert_allclose(peer_clipped, clipped, rtol=1e-12)


def test_dropout_is_timeable_but_not_comparable():
    text = CONFIGS["mlp_sgd_momentum"].replace(
        "    - relu\n", "    - relu\n    - residual:\n        - dropout: {p: 0.3}\n"
    )
    components = build_components(parse_config(text))
    peer = TorchPeer.from_components(components)
    assert not peer.comparable
    assert "dropout" in peer.reason
    losses = [peer.train(x, y) for x, y in _batches(components, 3)]
    assert all(np.isfinite(losses)) and peer.step_count == 3


def test_raw_labels_and_prepared_targets_train_the_same():
    components = _components("bce_with_logits")
    (inputs, labels), *_ = components.loader("train", training=True).epoch(0)
    assert np.issubdtype(labels.dtype, np.integer)
    raw, prepared = TorchPeer.from_components(components), TorchPeer.from_components(components)
    assert raw.train(inputs, labels) == prepared.train(inputs, components.prepare_targets(labels))


def test_version_and_threads_are_torchs():
    peer = TorchPeer.from_components(_components("mse_regression"))
    assert peer.version == torch.__version__
    assert peer.threads == torch.get_num_threads() == 1
