"""trainctl_peers imports torch only when a peer is asked for, and a missing PyTorch is a clean
TrainctlError. These tests need no torch: they simulate its absence."""

import subprocess
import sys
from pathlib import Path

import pytest

import trainctl_peers
from trainctl.errors import TrainctlError
from trainctl_peers import README_TORCH_VERSION, TORCH_CPU_INSTALL, PeerError, load_torch_peer

MISSING = (
    "--with torch needs PyTorch, which is not installed: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu (the CPU build; the README's figures used PyTorch "
    "2.13.0, CPU)"
)
README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.fixture
def no_torch(monkeypatch):
    """Make `import torch` fail as it does where PyTorch is not installed."""
    monkeypatch.setitem(sys.modules, "torch", None)


def test_missing_torch_is_a_clean_trainctl_error(no_torch):
    with pytest.raises(PeerError) as caught:
        load_torch_peer()
    assert isinstance(caught.value, TrainctlError)
    assert str(caught.value) == MISSING
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_importing_torchpeer_by_name_gives_the_same_error(no_torch):
    with pytest.raises(PeerError, match="not installed: pip install torch --index-url"):
        trainctl_peers.TorchPeer  # noqa: B018


def test_the_install_hint_is_the_cpu_build_the_readme_gives(no_torch):
    """A plain `pip install torch` pulls the multi-GB CUDA build onto a CPU-only machine."""
    with pytest.raises(PeerError) as caught:
        load_torch_peer()
    assert TORCH_CPU_INSTALL == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert TORCH_CPU_INSTALL in str(caught.value)
    assert f"PyTorch {README_TORCH_VERSION}" in str(caught.value)
    assert f"\n{TORCH_CPU_INSTALL}\n" in README  # a line of its own, to copy
    assert f"PyTorch {README_TORCH_VERSION}, CPU build" in README
    assert f"PyTorch {README_TORCH_VERSION} CPU" in README  # the Performance section's machine


def test_a_torch_that_fails_inside_is_not_called_missing(monkeypatch):
    def broken(name, *args, **kwargs):
        raise ImportError("libtorch_cpu.so: cannot open shared object file", name="torch._C")

    monkeypatch.setattr(trainctl_peers.importlib, "import_module", broken)
    with pytest.raises(PeerError) as caught:
        load_torch_peer()
    message = str(caught.value)
    assert "installed but fails to import: libtorch_cpu.so" in message
    assert "\n" not in message


def test_other_names_are_still_attribute_errors():
    with pytest.raises(AttributeError, match="NoSuchPeer"):
        trainctl_peers.NoSuchPeer  # noqa: B018


def test_importing_the_package_or_trainctl_does_not_import_torch():
    code = (
        "import sys, trainctl_peers, trainctl.cli, trainctl.train.components; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
