"""Test-only: hold a `trainctl train` subprocess at an exact point so a test can kill it there.

The kill harness puts this folder on PYTHONPATH, so Python imports it at start-up. It does
nothing unless TRAINCTL_KILLPOINT is set to KIND:N, one of:

    checkpoint-data:N     in the Nth checkpoint write, half of its bytes in the temporary file
    checkpoint-rename:N   the Nth checkpoint complete and fsynced, before its rename
    checkpoint-renamed:N  right after the Nth checkpoint's rename, before the folder's fsync
    metrics-line:N        the Nth line of metrics.jsonl half written (a torn line)
    eval-batch:N          before the Nth evaluation batch
    train-step:N          before the Nth training step (outside any MPI call in a job)

There it creates the file TRAINCTL_KILLPOINT_MARKER and waits: until killed, or until the file
TRAINCTL_KILLPOINT_RELEASE exists when that is set (a test that sends a signal there first).
In an MPI job, TRAINCTL_KILLPOINT_RANK picks the one rank (by PMI_RANK) that stops there.
"""

import os
import time

_SPEC = os.environ.get("TRAINCTL_KILLPOINT")


def _hold() -> None:
    with open(os.environ["TRAINCTL_KILLPOINT_MARKER"], "w"):
        pass
    release = os.environ.get("TRAINCTL_KILLPOINT_RELEASE")
    while release is None or not os.path.exists(release):
        time.sleep(0.005)


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _is_checkpoint(path: str) -> bool:
    return os.path.basename(os.path.dirname(path)) == "checkpoints"


def _install(kind: str, target: int) -> None:
    counts = {"n": 0}
    seen: set[str] = set()

    def reached() -> bool:
        counts["n"] += 1
        return counts["n"] == target

    if kind in ("checkpoint-data", "metrics-line"):
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            path = _path_of(fd)
            if kind == "checkpoint-data":
                hit = _is_checkpoint(path) and path not in seen and reached()
                seen.add(path)
            else:
                hit = path.endswith("metrics.jsonl") and reached()
            if hit:
                half = memoryview(data)[: max(1, len(data) // 2)]
                written = 0
                while written < len(half):
                    written += real_write(fd, half[written:])
                _hold()
                return written  # write_all goes on with the rest
            return real_write(fd, data)

        os.write = write
    elif kind in ("checkpoint-rename", "checkpoint-renamed"):
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            hit = _is_checkpoint(os.fspath(dst)) and reached()
            if hit and kind == "checkpoint-rename":
                _hold()
            result = real_replace(src, dst, *args, **kwargs)
            if hit and kind == "checkpoint-renamed":
                _hold()
            return result

        os.replace = replace
    elif kind in ("eval-batch", "train-step"):
        from trainctl.train import step

        name = "evaluate" if kind == "eval-batch" else "train"
        for cls in (step.EagerStep, step.GraphStep):
            real = getattr(cls, name)

            def held(self, *arguments, _real=real):
                if reached():
                    _hold()
                return _real(self, *arguments)

            setattr(cls, name, held)
    else:
        raise SystemExit(f"sitecustomize: unknown TRAINCTL_KILLPOINT kind {kind!r}")


_RANK = os.environ.get("TRAINCTL_KILLPOINT_RANK")
if _SPEC and _RANK in (None, os.environ.get("PMI_RANK")):
    _kind, _, _n = _SPEC.partition(":")
    _install(_kind, int(_n))
