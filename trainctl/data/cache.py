"""Where fetched data sets live: the platform's cache folder, or where TRAINCTL_DATA says.

Linux and other Unix: $XDG_CACHE_HOME/trainctl (~/.cache/trainctl); macOS:
~/Library/Caches/trainctl; Windows: %LOCALAPPDATA%\\trainctl. Each data set gets a folder
of its own name under that root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATA_ROOT_VARIABLE = "TRAINCTL_DATA"


def _platform_cache() -> Path:
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and is to be ignored.
    return Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"


def data_root() -> Path:
    """The folder holding one folder per fetched data set."""
    moved = os.environ.get(DATA_ROOT_VARIABLE)
    if moved:
        return Path(moved).expanduser().absolute()
    return _platform_cache() / "trainctl"


def dataset_folder(name: str, root: Path | None = None) -> Path:
    """The folder data set `name` is fetched to: `root` (default: `data_root()`) / name."""
    return (data_root() if root is None else Path(root).expanduser().absolute()) / name
