"""make_step and the eager step: one whole training step, the same as a hand-written loop."""

import numpy as np
import pytest

from trainctl import nn, optim
from trainctl.autograd import Tensor
from trainctl.backend import CPU, default_generator, manual_seed
from trainctl.train.step import EagerStep, StepError, clip_by_global_norm, make_step


def _model(seed: int = 0) -> nn.Module:
    manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)
    )


def _batch(seed: int = 1, n: int = 5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def _params(model):
    return [p.numpy().copy() for p in model.parameters()]


def test_eager_step_matches_a_hand_written_loop():
    x, y = _batch()
    reference = _model()
    ref_opt = optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    ref_losses = []
    for _ in range(3):
        loss = nn.cross_entropy(reference(Tensor(x.astype(np.float32))), Tensor(y))
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        ref_losses.append(loss.item())

    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    losses = [step.train(x, y) for _ in range(3)]
    assert isinstance(step, EagerStep) and step.traces == 0 and step.stats() == {}
    assert losses == ref_losses
    for a, b in zip(_params(model), _params(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    assert opt.step_count == 3 and opt.state_dict()["state"].keys() == {0, 1, 2, 3, 4, 5}
    bn = model[1]
    assert not np.array_equal(bn.running_mean.numpy(), np.zeros(8, np.float32))


def test_eager_step_consumes_one_dropout_key_per_step():
    x, y = _batch()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    before = default_generator.counter
    step.train(x, y)
    step.train(x, y)
    assert default_generator.counter == before + 2


def test_inputs_are_cast_to_the_step_dtype_and_labels_keep_theirs():
    x, y = _batch()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    assert np.isfinite(step.train(x.astype(np.float64), y.astype(np.int32)))
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_evaluate_runs_in_eval_mode_and_leaves_state_alone():
    x, y = _batch()
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    step = make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    step.train(x, y)
    counter, mean = default_generator.counter, model[1].running_mean.numpy().copy()
    first, second = step.evaluate(x), step.evaluate(x)
    assert first.shape == (5, 3) and isinstance(first, np.ndarray)
    np.testing.assert_array_equal(first, second)  # no dropout in eval mode
    assert default_generator.counter == counter
    np.testing.assert_array_equal(model[1].running_mean.numpy(), mean)


def test_grad_clip_scales_the_update_by_the_global_norm():
    manual_seed(3)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 6)), rng.standard_normal((4, 2))

    def run(clip):
        manual_seed(3)
        model = nn.Linear(6, 2)
        before = _params(model)
        opt = optim.SGD(model.parameters(), lr=1.0)
        step = make_step(
            "eager", model, nn.mse_loss, opt, device=CPU, dtype=np.float32, grad_clip=clip
        )
        step.train(x, y)
        return [b - a for a, b in zip(_params(model), before, strict=True)]

    full = run(None)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in full))
    clipped = run(0.01)
    for g, c in zip(full, clipped, strict=True):
        np.testing.assert_allclose(c, g * 0.01 / (norm + 1e-6), rtol=1e-4, atol=1e-9)
    unclipped = run(norm * 10)  # a loose clip changes nothing
    for g, c in zip(full, unclipped, strict=True):
        np.testing.assert_allclose(c, g, rtol=1e-6)


def test_clip_by_global_norm_on_tensors():
    grads = [Tensor(np.array([3.0, 0.0], np.float32)), Tensor(np.array([[4.0]], np.float32))]
    clipped = clip_by_global_norm(grads, 1.0)
    np.testing.assert_allclose(clipped[0].numpy(), [3 / (5 + 1e-6), 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1].numpy(), [[4 / (5 + 1e-6)]], rtol=1e-6)
    assert clipped[0].dtype == np.float32


@pytest.mark.parametrize(
    ("mode", "message"), [("lazy", "unknown mode 'lazy': expected one of eager, graph")]
)
def test_unknown_mode_is_a_clear_error(mode, message):
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StepError, match=message):
        make_step(mode, model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)


def test_model_in_another_dtype_and_bad_clip_are_errors():
    model = _model().to(dtype=np.float64)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(StepError, match=r"parameter 0.weight is float64, the step runs in float32"):
        make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float32)
    with pytest.raises(StepError, match="grad_clip must be a number > 0"):
        make_step("eager", model, nn.cross_entropy, opt, device=CPU, dtype=np.float64, grad_clip=0)
