"""What a run ran on (versions, CPU, BLAS, source commit), recorded in summary.json.

Timings and numerics depend on all of these, so a run records them to be comparable later.
Nothing here fails: a piece that cannot be found is None.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import trainctl

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def environment_info() -> dict[str, Any]:
    """Versions, platform, CPU, BLAS and git commit, as plain JSON values."""
    cupy = sys.modules.get("cupy")  # only if already imported: importing it is slow
    return {
        "trainctl": trainctl.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cupy": getattr(cupy, "__version__", None),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "blas": blas_info(),
        "thread_variables": {
            name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ
        },
        "git": git_info(Path(trainctl.__file__).resolve().parent.parent),
    }


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or None


def blas_info() -> dict[str, Any] | None:
    """The BLAS NumPy was built with: name, version and (OpenBLAS) its configuration."""
    try:
        config = np.show_config(mode="dicts")
    except (TypeError, ValueError):  # NumPy before 1.26 only prints its configuration
        return None
    blas = (config or {}).get("Build Dependencies", {}).get("blas")
    if not isinstance(blas, dict):
        return None
    keys = ("name", "version", "openblas configuration")
    return {key: blas[key] for key in keys if key in blas}


def git_info(source_root: Path) -> dict[str, Any] | None:
    """{"commit", "dirty"} when `source_root` is the top of a git checkout, else None.

    The top must be `source_root` itself: an installed trainctl inside some other project's
    checkout (a virtualenv in a repository) must not report that project's commit. Dirty
    means tracked files differ from the commit; untracked files do not count.
    """
    top = _git(source_root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source_root.resolve():
        return None
    commit = _git(source_root, "rev-parse", "HEAD")
    status = _git(source_root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
