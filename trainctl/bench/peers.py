"""The way to the PyTorch peer of `compare --with torch`, which lives outside `trainctl/`.

trainctl's own code never imports PyTorch; the peer (a PyTorch copy of a config's model,
optimizer and loss) is the separate `trainctl_peers` package, imported only when asked for.
"""

from __future__ import annotations

from typing import Any

from trainctl.errors import TrainctlError


def load_torch_peer() -> Any:
    """The TorchPeer class; a clear error when PyTorch (or the peer package) is missing."""
    try:
        import trainctl_peers
    except ImportError as exc:
        raise TrainctlError(f"--with torch needs the trainctl_peers package: {exc}") from None
    return trainctl_peers.load_torch_peer()
