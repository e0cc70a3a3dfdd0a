"""Peers of trainctl in other frameworks: the same config run in PyTorch for `trainctl compare`.

This package lives beside `trainctl`, not in it, because trainctl never imports torch. It
imports torch only when a peer is asked for, so `import trainctl_peers` is free, and a
missing PyTorch becomes a `PeerError` (a TrainctlError, shown as one line), never an
ImportError traceback::

    TorchPeer = load_torch_peer()
    peer = TorchPeer.from_components(build_components(config))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainctl.errors import TrainctlError

if TYPE_CHECKING:
    from trainctl_peers.torch_peer import TorchPeer

__all__ = ["README_TORCH_VERSION", "TORCH_CPU_INSTALL", "PeerError", "TorchPeer", "load_torch_peer"]

# A plain `pip install torch` pulls the CUDA build (several GB of nvidia-* packages) even
# onto a machine without a GPU; the peer runs on the CPU, so the CPU wheels are enough.
TORCH_CPU_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
README_TORCH_VERSION = "2.13.0"  # the PyTorch behind the README's figures (CPU build)


class PeerError(TrainctlError):
    """A peer that cannot run: its framework is missing, or it has no equivalent of the config."""


def load_torch_peer() -> type[TorchPeer]:
    """The TorchPeer class, importing torch now; PeerError when PyTorch cannot be imported."""
    try:
        importlib.import_module("torch")
    except (ImportError, OSError) as exc:
        if isinstance(exc, ImportError) and exc.name == "torch":
            raise PeerError(
                f"--with torch needs PyTorch, which is not installed: {TORCH_CPU_INSTALL} "
                f"(the CPU build; the README's figures used PyTorch {README_TORCH_VERSION}, CPU)"
            ) from None
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PeerError(
            f"--with torch needs PyTorch, which is installed but fails to import: {reason}"
        ) from None
    from trainctl_peers.torch_peer import TorchPeer

    return TorchPeer


def __getattr__(name: str) -> Any:
    # `from trainctl_peers import TorchPeer` imports torch only at that moment (PEP 562).
    if name == "TorchPeer":
        return load_torch_peer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
