"""Shared fixtures: every device-aware test runs on cpu, and on cuda where CuPy sees a GPU."""

import pytest
from devices import DEVICES

from trainctl import backend


@pytest.fixture(params=DEVICES)
def device(request) -> backend.Device:
    """The device under test; tests using it run once per entry of DEVICES."""
    return backend.get_device(request.param)
