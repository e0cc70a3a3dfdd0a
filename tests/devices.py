"""The devices tests run on: cpu always, cuda where CuPy sees a GPU (marked `gpu`)."""

import functools

import pytest

from trainctl import backend
from trainctl.errors import DeviceError


@functools.cache
def cuda_skip_reason() -> str | None:
    """Why CUDA cannot be tested here, or None when CuPy sees a GPU."""
    try:
        backend.get_device("cuda")
    except DeviceError as exc:
        return str(exc)
    return None


# Marks for a test that only makes sense on a GPU: `pytestmark = CUDA_ONLY` for a module.
CUDA_ONLY = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda_skip_reason() is not None, reason=cuda_skip_reason() or ""),
]

DEVICES = ["cpu", pytest.param("cuda", marks=CUDA_ONLY)]


def cuda_only(test):
    """Decorate a test that only makes sense on a GPU."""
    for mark in CUDA_ONLY:
        test = mark(test)
    return test
