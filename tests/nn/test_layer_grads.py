"""Every layer's input and parameter gradients against central finite differences (float64)."""

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import Generator

TOLERANCE = 1e-6


def _module(factory, device):
    return factory(Generator(0)).to(device, dtype=np.float64)


def _input(shape, device, seed=1):
    data = np.random.default_rng(seed).standard_normal(shape)
    return Tensor(data, dtype=np.float64, device=device, requires_grad=True)


def _check(module, x):
    tensors = [x, *module.parameters()]
    assert gradcheck(lambda: module(x), tensors) < TOLERANCE


CASES = {
    "linear": (lambda g: nn.Linear(4, 3, generator=g), (5, 4)),
    "linear_3d_input": (lambda g: nn.Linear(4, 3, generator=g), (2, 3, 4)),
    "linear_no_bias_xavier": (
        lambda g: nn.Linear(4, 3, bias=False, init="xavier_normal", generator=g),
        (5, 4),
    ),
    "conv": (lambda g: nn.Conv2d(3, 4, 3, generator=g), (2, 5, 5, 3)),
    "conv_stride2_pad1": (
        lambda g: nn.Conv2d(2, 3, 3, stride=2, padding=1, generator=g),
        (2, 6, 6, 2),
    ),
    "max_pool": (lambda g: nn.MaxPool2d(2), (2, 4, 4, 3)),
    "max_pool_overlapping": (lambda g: nn.MaxPool2d(3, stride=2), (2, 5, 5, 2)),
    "avg_pool": (lambda g: nn.AvgPool2d(2), (2, 4, 4, 3)),
    "avg_pool_overlapping": (lambda g: nn.AvgPool2d(3, stride=2), (2, 5, 5, 2)),
    "upsample2d": (lambda g: nn.Upsample2d(3), (2, 2, 3, 2)),
    "flatten": (lambda g: nn.Flatten(), (2, 3, 2, 2)),
    "layer_norm": (lambda g: nn.LayerNorm(5), (3, 5)),
    "layer_norm_2d": (lambda g: nn.LayerNorm((3, 4)), (2, 3, 4)),
    "relu": (lambda g: nn.ReLU(), (4, 5)),
    "leaky_relu": (lambda g: nn.LeakyReLU(0.1), (4, 5)),
    "gelu": (lambda g: nn.GELU(), (4, 5)),
    "tanh": (lambda g: nn.Tanh(), (4, 5)),
    "sigmoid": (lambda g: nn.Sigmoid(), (4, 5)),
    "softmax": (lambda g: nn.Softmax(), (4, 5)),
    "softmax_axis0": (lambda g: nn.Softmax(axis=0), (4, 5)),
    "sequential_mlp": (
        lambda g: nn.Sequential(
            nn.Linear(4, 6, generator=g), nn.Tanh(), nn.Linear(6, 2, generator=g)
        ),
        (3, 4),
    ),
    "residual_conv": (
        lambda g: nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, generator=g), nn.Tanh())),
        (2, 4, 4, 3),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_layer_gradients(name, device):
    factory, shape = CASES[name]
    module = _module(factory, device)
    _check(module, _input(shape, device))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "factory, shape",
    [(lambda: nn.BatchNorm1d(3), (6, 3)), (lambda: nn.BatchNorm2d(3), (2, 3, 3, 3))],
    ids=["bn1d", "bn2d"],
)
def test_batch_norm_gradients(factory, shape, training, device):
    module = factory().to(device, dtype=np.float64)
    rng = np.random.default_rng(2)
    # Non-trivial affine parameters and running statistics, so every term is exercised.
    module.load_state_dict(
        {
            "weight": rng.uniform(0.5, 1.5, 3),
            "bias": rng.standard_normal(3),
            "running_mean": rng.standard_normal(3),
            "running_var": rng.uniform(0.5, 2.0, 3),
        }
    )
    module.train(training)
    _check(module, _input(shape, device))


def test_dropout_gradient_with_replayed_mask(device):
    generator = Generator(7)
    module = nn.Dropout(0.4, generator=generator).to(device, dtype=np.float64)
    x = _input((6, 5), device)

    def forward():
        generator.counter = 0  # the same mask on every call, so finite differences make sense
        return module(x)

    assert gradcheck(forward, [x]) < TOLERANCE
    assert np.count_nonzero(forward().numpy() == 0) > 0


def test_embedding_weight_gradient(device):
    module = nn.Embedding(6, 3, generator=Generator(0)).to(device, dtype=np.float64)
    indices = Tensor(np.array([[0, 2, 2], [5, 0, 1]]), device=device)
    assert gradcheck(lambda: module(indices), [module.weight]) < TOLERANCE
