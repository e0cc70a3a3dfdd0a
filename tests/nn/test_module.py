"""Module bookkeeping: names, state dicts, modes, placement, printing."""

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import Generator
from trainctl.errors import StateDictError


def _model(seed=0):
    g = Generator(seed)
    return nn.Sequential(
        nn.Linear(4, 6, generator=g),
        nn.ReLU(),
        nn.Sequential(nn.Linear(6, 3, generator=g), nn.BatchNorm1d(3)),
    )


def _x(seed=1):
    return Tensor(np.random.default_rng(seed).standard_normal((5, 4)).astype(np.float32))


def test_parameter_requires_grad():
    p = nn.Parameter(np.zeros(3, np.float32))
    assert p.requires_grad and isinstance(p, Tensor)


def test_named_parameters_and_buffers():
    model = _model()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.1.weight", "2.1.bias"]
    assert [name for name, _ in model.named_buffers()] == ["2.1.running_mean", "2.1.running_var"]
    assert list(model.parameters()) == [p for _, p in model.named_parameters()]
    assert list(model.children()) == [model[0], model[1], model[2]]
    assert [type(m).__name__ for m in model.modules()] == [
        "Sequential", "Linear", "ReLU", "Sequential", "Linear", "BatchNorm1d",
    ]  # fmt: skip


def test_shared_parameters_and_modules_are_listed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 3)
            self.decoder = self.encoder
            self.scale = nn.Parameter(np.ones(1, np.float32))
            self.scale_again = self.scale

    model = Tied()
    assert [name for name, _ in model.named_parameters()] == [
        "scale",
        "encoder.weight",
        "encoder.bias",
    ]
    assert len(list(model.modules())) == 2
    assert list(model.state_dict()) == ["scale", "encoder.weight", "encoder.bias"]


def test_reassigning_an_attribute_unregisters_it():
    layer = nn.Linear(2, 2)
    layer.bias = None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer(Tensor(np.ones((1, 2), np.float32))).shape == (1, 2)


def test_state_dict_is_a_host_copy():
    model = _model()
    state = model.state_dict()
    assert list(state) == [
        "0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.1.weight", "2.1.bias",
        "2.1.running_mean", "2.1.running_var",
    ]  # fmt: skip
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["0.weight"][:] = 0
    assert np.any(model[0].weight.numpy() != 0)


def test_state_dict_round_trip_gives_identical_outputs():
    trained = _model(seed=0)
    trained(_x(seed=2))  # moves the BatchNorm running statistics off their defaults
    trained.eval()
    fresh = _model(seed=5).eval()
    x = _x()
    assert not np.allclose(fresh(x).numpy(), trained(x).numpy())
    fresh.load_state_dict(trained.state_dict())
    np.testing.assert_array_equal(fresh(x).numpy(), trained(x).numpy())


def test_load_state_dict_reports_every_problem_at_once():
    model = _model()
    state = model.state_dict()
    del state["0.bias"]
    state["2.1.num_batches_tracked"] = np.zeros(())
    state["2.0.weight"] = np.zeros((3, 6), np.float32)
    before = model.state_dict()
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "missing keys: 0.bias" in message
    assert "unexpected keys: 2.1.num_batches_tracked" in message
    assert "2.0.weight: expected (6, 3), found (3, 6)" in message
    for name, value in model.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[name])


def test_load_state_dict_non_strict_skips_names_but_not_shapes():
    model = _model()
    state = {"0.weight": np.ones((4, 6)), "extra": np.zeros(2)}
    model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model[0].weight.numpy(), np.ones((4, 6)))
    with pytest.raises(StateDictError, match=r"0.weight: expected \(4, 6\), found \(6, 4\)"):
        model.load_state_dict({"0.weight": np.ones((6, 4))}, strict=False)


def test_load_state_dict_casts_to_parameter_dtype_and_keeps_identity():
    model = _model()
    weight = model[0].weight
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model[0].weight is weight
    assert all(v.dtype == np.float32 for v in model.state_dict().values())


def test_train_and_eval_recurse():
    model = _model()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not model[2][1].training


def test_to_float64_keeps_parameter_identity():
    model = _model()
    params = list(model.parameters())
    model(_x()).sum().backward()
    assert model.to(dtype=np.float64) is model
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert all(b.dtype == np.float64 for _, b in model.named_buffers())
    assert model(Tensor(np.ones((2, 4)))).dtype == np.float64


def test_to_device_moves_parameters_and_buffers(device):
    model = _model().to(device)
    assert all(p.device is device for p in model.parameters())
    assert all(b.device is device for _, b in model.named_buffers())
    assert model(Tensor(np.ones((2, 4), np.float32), device=device)).device is device
    np.testing.assert_array_equal(model.state_dict()["0.weight"], _model().state_dict()["0.weight"])


def test_zero_grad_clears_gradients():
    model = _model()
    model(_x()).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_repr_is_nested():
    text = repr(_model())
    assert text.splitlines()[0] == "Sequential("
    assert "  (0): Linear(in_features=4, out_features=6, bias=True)" in text
    assert "  (1): ReLU()" in text
    assert "    (1): BatchNorm1d(3, eps=1e-05, momentum=0.1)" in text
    assert repr(nn.Conv2d(3, 8, 3, stride=2)).startswith("Conv2d(3, 8, kernel_size=3, stride=2")


def test_setting_attributes_before_init_is_an_error():
    class Forgetful(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Forgetful()
