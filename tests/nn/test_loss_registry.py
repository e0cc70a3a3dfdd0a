"""LOSSES declares the arguments of the loss functions, with their defaults and ranges."""

import inspect

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.nn.losses import LOSSES
from trainctl.spec import ArgError

FUNCTIONS = {
    "cross_entropy": nn.cross_entropy,
    "mse": nn.mse_loss,
    "bce_with_logits": nn.binary_cross_entropy_with_logits,
    "sequence_cross_entropy": nn.sequence_cross_entropy,
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_entry_arguments_are_the_functions_keyword_arguments(name):
    # (outputs, targets) come from the trainer and reduction is always the mean.
    parameters = list(inspect.signature(FUNCTIONS[name]).parameters.values())[2:]
    expected = {p.name: p.default for p in parameters if p.name != "reduction"}
    assert {key: arg.default for key, arg in LOSSES[name].args.items()} == expected


def test_every_loss_function_has_an_entry():
    assert LOSSES.keys() == FUNCTIONS.keys()
    assert all(entry.name == name for name, entry in LOSSES.items())


@pytest.mark.parametrize("smoothing", [-0.1, 0.0, 0.5, 1.0, 1.1])
def test_label_smoothing_range_is_the_functions(smoothing):
    arg = LOSSES["cross_entropy"].args["label_smoothing"]
    try:
        arg.check(smoothing)
        entry_accepts = True
    except ArgError:
        entry_accepts = False
    logits = Tensor(np.zeros((2, 3), dtype=np.float32))
    try:
        nn.cross_entropy(logits, np.array([0, 2]), label_smoothing=smoothing)
        function_accepts = True
    except ValueError:
        function_accepts = False
    assert entry_accepts == function_accepts


def test_every_registered_loss_computes_with_its_arguments():
    import numpy as np

    from trainctl.autograd import Tensor
    from trainctl.nn.losses import LOSSES
    from trainctl.spec import resolve_args

    logits = Tensor(np.array([[2.0, -1.0], [0.5, 0.25]], np.float32))
    targets = {
        "classification": Tensor(np.array([0, 1])),
        "binary": Tensor(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)),
        "regression": Tensor(np.array([[1.0, -1.0], [0.0, 0.5]], np.float32)),
        "sequence": Tensor(np.array([[0, 1]])),
    }
    for name, entry in LOSSES.items():
        outputs = logits.reshape(1, 2, 2) if entry.task == "sequence" else logits
        loss = entry.fn(outputs, targets[entry.task], **resolve_args(entry, {}))
        assert loss.shape == () and np.isfinite(loss.item()), name
