"""Shared fixtures: every device-aware test runs on cpu, and on cuda where CuPy sees a GPU.
Also picks the Hypothesis profile (see hypothesis_profiles.py)."""

import os

import pytest
from devices import DEVICES
from hypothesis import settings
from hypothesis_profiles import profile_for

from trainctl import backend

settings.load_profile(profile_for(os.environ))


@pytest.fixture(autouse=True)
def loops_at_every_size(monkeypatch):
    """The tests' models are small: compile their Numba loops anyway, and share large kernels
    out over threads at every size, so graph mode's loops and the shared kernels are checked
    against eager mode everywhere (the size thresholds have their own tests)."""
    from trainctl.autograd import chunk_threads, loops

    monkeypatch.setattr(loops, "MIN_LOOP_ELEMENTS", 0)
    monkeypatch.setattr(chunk_threads, "MIN_SHARED_ELEMENTS", 0)


@pytest.fixture(params=DEVICES)
def device(request) -> backend.Device:
    """The device under test; tests using it run once per entry of DEVICES."""
    return backend.get_device(request.param)


@pytest.fixture
def mirror():
    """A local HTTP server standing in for the data set mirrors (see data_server.py)."""
    from data_server import start_server

    state, httpd = start_server()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def served(mirror, monkeypatch, tmp_path):
    """The catalog pointed at tiny real-format files on `mirror`, the cache at tmp/cache."""
    from data_server import serve_all

    return serve_all(mirror, monkeypatch, tmp_path)


@pytest.fixture(scope="session")
def _empty_data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("no-data-cache")


@pytest.fixture(autouse=True)
def _no_test_goes_online(monkeypatch, _empty_data_cache):
    """Every mirror is a port that refuses connections and the data cache an empty folder, so
    no test touches the internet or the user's cache (`served` points both at local stand-ins)."""
    import dataclasses

    from data_server import refused_url

    from trainctl.data.catalog import REMOTE_DATASETS

    for name, remote in REMOTE_DATASETS.items():
        offline = dataclasses.replace(remote, mirrors=(refused_url(),))
        monkeypatch.setitem(REMOTE_DATASETS, name, offline)
    monkeypatch.setenv("TRAINCTL_DATA", str(_empty_data_cache))
