"""environment_info: versions, CPU, BLAS and git commit; never an error."""

import json
import os
import platform
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import trainctl
from trainctl.train import environment
from trainctl.train.environment import blas_info, cpu_model, environment_info, git_info

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def test_environment_info_is_plain_json_with_the_versions():
    info = environment_info()
    assert json.loads(json.dumps(info)) == info
    assert info["trainctl"] == trainctl.__version__
    assert info["numpy"] == np.__version__
    assert info["python"] == platform.python_version()
    assert info["cpu_count"] == os.cpu_count()


def test_cupy_is_reported_only_when_already_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert environment_info()["cupy"] is None
    assert "cupy" not in sys.modules
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="13.3.0"))
    assert environment_info()["cupy"] == "13.3.0"


def test_thread_variables_are_recorded(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    threads = environment_info()["thread_variables"]
    assert threads["OMP_NUM_THREADS"] == "3" and "MKL_NUM_THREADS" not in threads


@pytest.mark.parametrize(
    ("text", "model"),
    [
        (
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) X\n",
            "Intel(R) Xeon(R) X",
        ),
        (
            "processor\t: 0\nCPU part\t: 0xd0c\nModel\t\t: Raspberry Pi 5 Model B\n",
            "Raspberry Pi 5 Model B",
        ),
        ("Hardware\t: BCM2835\n", "BCM2835"),
    ],
)
def test_cpu_model_from_cpuinfo(tmp_path, text, model):
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_model(tmp_path / "cpuinfo") == model


def test_cpu_model_without_cpuinfo(tmp_path):
    assert cpu_model(tmp_path / "none") == (platform.processor() or None)


def test_blas_info_names_the_library():
    try:
        config = np.show_config(mode="dicts")
    except TypeError:
        pytest.skip("this NumPy cannot report its build configuration")
    expected = config["Build Dependencies"]["blas"]["name"]
    assert blas_info()["name"] == expected


def test_blas_info_of_an_old_numpy_is_none(monkeypatch):
    def old_show_config():
        print("blas_opt_info: ...")

    monkeypatch.setattr(environment.np, "show_config", old_show_config)
    assert blas_info() is None


def git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "trainctl").mkdir(parents=True)
    (repo / "trainctl" / "__init__.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@needs_git
def test_git_commit_and_dirty_flag(checkout):
    head = git(checkout, "rev-parse", "HEAD")
    assert git_info(checkout) == {"commit": head, "dirty": False}
    (checkout / "untracked.txt").write_text("not source")
    assert git_info(checkout) == {"commit": head, "dirty": False}
    (checkout / "trainctl" / "__init__.py").write_text("x = 2\n")
    assert git_info(checkout) == {"commit": head, "dirty": True}


@needs_git
def test_an_install_inside_another_checkout_has_no_commit(checkout):
    """A trainctl installed in a virtualenv inside some project is not that project's code."""
    assert git_info(checkout / "trainctl") is None


def test_a_folder_that_is_no_checkout_has_no_commit(tmp_path):
    assert git_info(tmp_path) is None


@needs_git
def test_without_git_there_is_no_commit(checkout, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert git_info(checkout) is None
