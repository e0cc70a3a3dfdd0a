"""Shared fixtures: every device-aware test runs on cpu, and on cuda where CuPy sees a GPU.
Also picks the Hypothesis profile (see hypothesis_profiles.py)."""

import os

import pytest
from devices import DEVICES
from hypothesis import settings
from hypothesis_profiles import profile_for

from trainctl import backend

settings.load_profile(profile_for(os.environ))


@pytest.fixture(params=DEVICES)
def device(request) -> backend.Device:
    """The device under test; tests using it run once per entry of DEVICES."""
    return backend.get_device(request.param)
