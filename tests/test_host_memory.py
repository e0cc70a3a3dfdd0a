"""The trainctl command keeps freed host memory for reuse (trainctl/host_memory.py): a step's
16 MiB activations reuse the last step's pages instead of faulting in fresh ones."""

import subprocess
import sys

import pytest

PAGE_FAULTS_OF_A_SECOND_ARRAY = """
import resource, sys
import numpy as np
from trainctl.host_memory import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():  # two activations alive at once, then both freed, as in a step
    a, b = np.ones(4 << 20, np.float32), np.ones(4 << 20, np.float32)
    return float(a[-1] + b[-1])
for _ in range(3):  # glibc's own thresholds adapt over the first steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PAGE_FAULTS_OF_A_SECOND_ARRAY, setting],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    kept, faults = result.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    kept, faults = _faults("keep")
    if kept != "True":
        pytest.skip("this C library has no mallopt (not glibc)")
    _, default_faults = _faults("default")  # ~1,000 here: glibc gave pages back to the OS
    assert faults < 100, f"{faults} page faults kept, {default_faults} with glibc's defaults"


def test_the_command_keeps_freed_memory(monkeypatch):
    from typer.testing import CliRunner

    from trainctl import host_memory
    from trainctl.cli import app

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    result = CliRunner().invoke(app, ["devices"])
    assert result.exit_code == 0 and calls == [1]
