"""Shared fixtures: every device-aware test runs on cpu, and on cuda where CuPy sees a GPU."""

import pytest

from trainctl import backend
from trainctl.errors import DeviceError


def _cuda_skip_reason() -> str | None:
    try:
        backend.get_device("cuda")
    except DeviceError as exc:
        return str(exc)
    return None


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(_cuda_skip_reason() is not None, reason=_cuda_skip_reason() or ""),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> backend.Device:
    """The device under test; tests using it run once per entry of DEVICES."""
    return backend.get_device(request.param)
