"""Initialiser statistics and reproducibility."""

import math

import numpy as np
import pytest

from trainctl import backend, nn
from trainctl.backend import Generator
from trainctl.nn import init


def test_fans_for_linear_and_conv_layouts():
    assert init.fans((20, 30)) == (20, 30)
    assert init.fans((3, 3, 16, 32)) == (144, 288)
    with pytest.raises(ValueError):
        init.fans((5,))


@pytest.mark.parametrize("shape", [(50, 40), (3, 3, 16, 32)])
def test_kaiming_uniform_default_bound_is_one_over_sqrt_fan_in(shape):
    bound = 1 / math.sqrt(init.fans(shape)[0])
    w = init.kaiming_uniform(shape, generator=Generator(0), dtype=np.float64)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.98 * bound
    assert w.min() < -0.98 * bound


def test_layer_defaults_match_pytorch_bounds():
    layer = nn.Linear(20, 300, generator=Generator(0))
    conv = nn.Conv2d(4, 64, 3, generator=Generator(0))
    for weight, bias, fan_in in ((layer.weight, layer.bias, 20), (conv.weight, conv.bias, 36)):
        bound = 1 / math.sqrt(fan_in)
        for values in (weight.numpy(), bias.numpy()):
            assert np.abs(values).max() <= bound
            assert np.abs(values).max() > 0.9 * bound


def test_same_seed_same_weights_different_seed_different():
    a = nn.Linear(8, 5, generator=Generator(1)).weight.numpy()
    b = nn.Linear(8, 5, generator=Generator(1)).weight.numpy()
    c = nn.Linear(8, 5, generator=Generator(2)).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    backend.manual_seed(4)
    d = nn.Conv2d(2, 3, 3).state_dict()
    backend.manual_seed(4)
    e = nn.Conv2d(2, 3, 3).state_dict()
    assert all(np.array_equal(d[k], e[k]) for k in d)


def test_weight_and_bias_take_separate_draws():
    layer = nn.Linear(4, 4, generator=Generator(0))
    assert not np.allclose(layer.weight.numpy()[0], layer.bias.numpy())


def test_draws_are_float64_then_cast():
    w64 = init.xavier_uniform((6, 7), generator=Generator(3), dtype=np.float64)
    w32 = init.xavier_uniform((6, 7), generator=Generator(3))
    assert w32.dtype == np.float32 and w64.dtype == np.float64
    np.testing.assert_array_equal(w32, w64.astype(np.float32))


@pytest.mark.parametrize(
    "fn, expected_std",
    [
        (init.xavier_uniform, math.sqrt(2 / (400 + 600))),
        (init.xavier_normal, math.sqrt(2 / (400 + 600))),
        (init.kaiming_normal, math.sqrt(2 / 400)),
        (init.kaiming_uniform, math.sqrt(1 / (3 * 400))),
    ],
)
def test_std_matches_formula_on_large_tensor(fn, expected_std):
    w = fn((400, 600), generator=Generator(0), dtype=np.float64)
    assert abs(w.std() / expected_std - 1) < 0.01
    assert abs(w.mean()) < 0.02 * expected_std


def test_xavier_uniform_bound():
    bound = math.sqrt(6 / (30 + 50))
    w = init.xavier_uniform((30, 50), generator=Generator(0))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound


@pytest.mark.parametrize("scheme", ["xavier_uniform", "xavier_normal", "kaiming_normal"])
def test_other_schemes_start_bias_at_zero(scheme):
    layer = nn.Conv2d(3, 5, 3, init=scheme, generator=Generator(0))
    np.testing.assert_array_equal(layer.bias.numpy(), np.zeros(5))
    reference = init.WEIGHT_INITS[scheme]((3, 3, 3, 5), generator=Generator(0))
    np.testing.assert_array_equal(layer.weight.numpy(), reference)


def test_constant_inits():
    np.testing.assert_array_equal(init.zeros((2, 3)), np.zeros((2, 3)))
    assert init.ones((4,)).dtype == np.float32 and init.ones((4,)).sum() == 4
