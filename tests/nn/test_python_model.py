"""Models written in Python: loading a Module subclass by file or module, its arguments,
and the errors: the config's (a ModelError at its key) and the user's (their traceback)."""

import sys
import textwrap

import numpy as np
import pytest

from trainctl import nn
from trainctl.nn.build import ModelError
from trainctl.nn.python_model import build_python_model, load_model_class, user_traceback

MODELS = """
from trainctl import nn
from trainctl.autograd import ops


class Net(nn.Module):
    def __init__(self, input_shape, hidden=8, classes=3):
        super().__init__()
        self.seen = input_shape
        self.a = nn.Linear(input_shape[0], hidden)
        self.b = nn.Linear(input_shape[0], hidden)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        return self.out(ops.concatenate([ops.relu(self.a(x)), ops.tanh(self.b(x))], axis=-1))


class Fixed(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.layer = nn.Linear(4, width)

    def forward(self, x):
        return self.layer(x)


def helper(x):
    return x.shape[0] / 0


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return helper(self.layer(x))


class MisShaped(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(5, 2)

    def forward(self, x):
        return self.layer(x)


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x), x


not_a_class = 3


class Plain:
    pass
"""


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


def test_a_class_from_a_file_is_built_for_the_data_with_its_arguments(models):
    model, out_shape = build_python_model(f"{models}:Net", {"hidden": 5}, (4,))
    assert isinstance(model, nn.Module) and model.seen == (4,)
    assert out_shape == (3,)
    assert [name for name, _ in model.named_parameters()] == [
        "a.weight", "a.bias", "b.weight", "b.bias", "out.weight", "out.bias"
    ]  # fmt: skip
    assert model.out.weight.shape == (10, 3)


def test_input_shape_is_passed_only_to_a_class_that_asks_for_it(models):
    model, out_shape = build_python_model(f"{models}:Fixed", {"width": 6}, (4,))
    assert out_shape == (6,)


def test_a_class_from_an_importable_module(models, monkeypatch):
    monkeypatch.syspath_prepend(str(models.parent))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    assert load_model_class("models:Fixed").__name__ == "Fixed"


@pytest.mark.parametrize(
    "target, key, message",
    [
        ("{dir}/absent.py:Net", "model.python", "expected a Python file at {dir}/absent.py, "
         "found nothing there"),
        ("{file}:Nett", "model.python", "expected a class Nett in {file}, found none (it "
         "defines Broken, Fixed, MisShaped, Net, Pair)"),
        ("{file}:Pair", "model.python", "expected Pair.forward to return one tensor, found "
         "tuple"),
        ("{file}:Plain", "model.python", "expected Plain in {file} to be a subclass of "
         "trainctl.nn.Module, found the class Plain"),
        ("{file}:not_a_class", "model.python", "expected not_a_class in {file} to be a "
         "subclass of trainctl.nn.Module, found int"),
        ("no_such_package.models:Net", "model.python", "expected a module Python can import "
         "as no_such_package.models, found no module named 'no_such_package'"),
    ],
)  # fmt: skip
def test_config_mistakes_are_model_errors_at_their_key(models, target, key, message):
    names = {"dir": models.parent, "file": models}
    with pytest.raises(ModelError) as caught:
        build_python_model(target.format(**names), {}, (4,))
    assert caught.value.where == key
    assert caught.value.message.startswith(message.format(**names))


def test_arguments_the_class_does_not_take_name_its_signature(models):
    with pytest.raises(ModelError) as caught:
        build_python_model(f"{models}:Fixed", {"widht": 3}, (4,))
    assert caught.value.where == "model.args.widht"
    assert caught.value.message == (
        "expected the arguments of Fixed(width), found 'widht' (did you mean 'width'?)"
    )
    with pytest.raises(ModelError) as caught:
        build_python_model(f"{models}:Fixed", {}, (4,))
    assert caught.value.where == "model.args"
    assert caught.value.message == (
        "expected the arguments of Fixed(width): missing a required argument: 'width'"
    )


def _trainctl_frames(report: str) -> list[str]:
    return [line for line in report.splitlines() if "/trainctl/" in line]


def test_an_error_in_forward_shows_the_users_frames_only(models):
    with pytest.raises(ZeroDivisionError) as caught:
        build_python_model(f"{models}:Broken", {}, (4,))
    report = user_traceback(caught.value)
    assert report is not None
    assert report.startswith("Traceback (most recent call last):\n")
    assert f'File "{models}", line' in report and "in forward" in report and "in helper" in report
    assert report.endswith("ZeroDivisionError: division by zero")
    assert _trainctl_frames(report) == []


def test_a_shape_mistake_in_the_users_code_points_at_their_line(models):
    with pytest.raises(Exception) as caught:
        build_python_model(f"{models}:MisShaped", {}, (4,))
    report = user_traceback(caught.value)
    assert "return self.layer(x)" in report and _trainctl_frames(report) == []


@pytest.mark.parametrize(
    "source, last_line",
    [
        ("import numpy\nraise RuntimeError('at import')\n", "RuntimeError: at import"),
        ("def broken(:\n    pass\n", "SyntaxError: invalid syntax"),
    ],
)
def test_an_error_while_importing_the_file_is_the_users(tmp_path, source, last_line):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(Exception) as caught:
        load_model_class(f"{path}:Net")
    report = user_traceback(caught.value)
    assert report is not None and str(path) in report and report.endswith(last_line)
    assert _trainctl_frames(report) == []


def test_errors_outside_user_code_are_not_the_users():
    try:
        np.zeros(2) @ np.zeros(3)
    except ValueError as exc:
        assert user_traceback(exc) is None


def test_the_example_model_builds_for_digits():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "configs"
    model, out_shape = build_python_model(f"{configs}/models.py:ResidualCNN", {}, (8, 8, 1))
    assert out_shape == (10,)
    source = textwrap.dedent((configs / "models.py").read_text())
    assert "class ResidualCNN(nn.Module)" in source
