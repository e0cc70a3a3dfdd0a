"""Models written in Python: `model: {python: models.py:Net, args: {...}}` in a config.

The file is executed as a module (it is the user's code, trusted like a training script),
the class is looked up and checked to be a `trainctl.nn.Module`, and built with `args`
(plus `input_shape`, the shape of one sample, when its __init__ takes one). What goes wrong
in the config (no such file, module or class, arguments the class does not take) is a
`ModelError` at its key; what goes wrong inside the user's code is the user's to see, so
the CLI shows `user_traceback`: their frames, not trainctl's.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from trainctl.autograd.tensor import Tensor, no_grad
from trainctl.nn.build import ModelError
from trainctl.nn.module import Module

Shape = tuple[int, ...]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# The files of user model code loaded in this process: a traceback through one of them is
# an error in the user's code (see user_traceback).
_USER_FILES: set[str] = set()
_USER_FOLDERS: set[str] = set()  # of the packages user models are imported from


def build_python_model(
    target: str, args: dict[str, Any], input_shape: Shape, input_dtype: Any = np.float32
) -> tuple[Module, Shape]:
    """The user's model for samples of `input_shape`, and the shape of one output sample
    (found by running it once on a zero sample, as for layer lists)."""
    cls = load_model_class(target)
    kwargs = dict(args)
    signature = inspect.signature(cls)
    if "input_shape" in signature.parameters and "input_shape" not in kwargs:
        kwargs["input_shape"] = tuple(input_shape)
    _check_arguments(cls, signature, kwargs)
    model = cls(**kwargs)
    sample = Tensor(np.zeros((1, *input_shape), dtype=input_dtype))
    model.eval()
    try:
        with no_grad():
            out = model(sample)  # as build_model finds a layer's output shape
    finally:
        model.train()
    if not isinstance(out, Tensor):
        found = type(out).__name__
        message = f"expected {cls.__name__}.forward to return one tensor, found {found}"
        raise ModelError("model.python", (), message)
    return model, tuple(out.shape[1:])


def _check_arguments(cls: type, signature: inspect.Signature, kwargs: dict[str, Any]) -> None:
    """A ModelError at model.args.NAME for an argument __init__ does not take, else at
    model.args for one it needs and was not given."""
    expected = f"the arguments of {cls.__name__}{signature}"
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [] if takes_any else [key for key in kwargs if key not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"expected {expected}, found {unknown[0]!r}{hint}"
        key = f"model.args.{unknown[0]}" if unknown[0].isidentifier() else "model.args"
        raise ModelError(key, (), message)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise ModelError("model.args", (), f"expected {expected}: {exc}") from None


def load_model_class(target: str) -> type[Module]:
    """The class `target` names: 'FILE.py:Class' (FILE absolute) or 'package.module:Class'."""
    where, _, name = target.rpartition(":")
    module = _load_file(where) if where.endswith(".py") else _import(where)
    found = getattr(module, name, None)
    if found is None:
        defined = sorted(
            key
            for key, value in vars(module).items()
            if inspect.isclass(value)
            and issubclass(value, Module)
            and value.__module__ == module.__name__
        )
        has = f"it defines {', '.join(defined)}" if defined else "it defines no Module subclass"
        message = f"expected a class {name} in {where}, found none ({has})"
        raise ModelError("model.python", (), message)
    if not (inspect.isclass(found) and issubclass(found, Module)):
        what = f"the class {found.__name__}" if inspect.isclass(found) else type(found).__name__
        message = f"expected {name} in {where} to be a subclass of trainctl.nn.Module, found {what}"
        raise ModelError("model.python", (), message)
    return found


def _load_file(file: str) -> ModuleType:
    if not os.path.isfile(file):
        message = f"expected a Python file at {file}, found nothing there"
        raise ModelError("model.python", (), message)
    digest = hashlib.sha1(file.encode()).hexdigest()[:8]
    name = f"trainctl_user_{re.sub(r'[^0-9A-Za-z_]', '_', Path(file).stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        message = f"expected a Python file at {file}, found one Python cannot load"
        raise ModelError("model.python", (), message)
    module = importlib.util.module_from_spec(spec)
    _USER_FILES.add(os.path.realpath(file))
    sys.modules[name] = module  # as `import` does: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(dotted: str) -> ModuleType:
    top = importlib.util.find_spec(dotted.partition(".")[0])  # imports nothing yet
    for folder in (top.submodule_search_locations or []) if top else []:
        _USER_FOLDERS.add(os.path.realpath(folder))  # the package's __init__ files are user code
    try:
        spec = importlib.util.find_spec(dotted)
    except ModuleNotFoundError as exc:
        spec, missing = None, exc.name
    else:
        missing = dotted
    if spec is None:
        raise ModelError(
            "model.python", (),
            f"expected a module Python can import as {dotted}, found no module named {missing!r} "
            "(is its folder on PYTHONPATH?)",
        )  # fmt: skip
    if spec.origin:
        _USER_FILES.add(os.path.realpath(spec.origin))
    return importlib.import_module(dotted)


def user_traceback(exc: BaseException) -> str | None:
    """The traceback of an error raised in user model code, from the first frame of that code
    on and without trainctl's own frames; None when the error did not pass through it."""
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, frame in enumerate(frames) if _is_user(frame.filename)), None)
    syntax = isinstance(exc, SyntaxError) and _is_user(exc.filename or "")
    if first is None and not syntax:
        return None
    kept = [] if first is None else [f for f in frames[first:] if not _in_trainctl(f.filename)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(kept)] if kept else []
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def _is_user(filename: str) -> bool:
    path = os.path.realpath(filename) if filename else ""
    return path in _USER_FILES or any(path.startswith(f + os.sep) for f in _USER_FOLDERS)


def _in_trainctl(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_PACKAGE_DIR + os.sep)
