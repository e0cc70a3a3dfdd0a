"""CUDA graphs: a compiled step captured once and replayed with one launch per step.

A small step on a GPU is bound by launch overhead: every op is a kernel launch costing a few
microseconds of Python and driver time, while the kernel itself runs for less. CUDA can record
a stream's launches into a graph and replay the whole sequence with one call (what
`torch.cuda.graphs` and `jax.jit` do). trainctl's graph mode is a natural fit: its compiled step
(`compile.Program`) already works on fixed, preallocated arrays, and with `device_scalars` it
reads the per-step host numbers from a device array instead of baking them into launches.

The first run of a step goes through normally (it compiles CuPy's kernels and sets up cuBLAS,
which must not happen during a capture); the second is captured and launched; every later run
writes the host numbers and launches. Arrays the step allocates while being captured come from
a private memory pool kept with the graph, so nothing else can reuse their memory. A step that
cannot be captured (it waits for the device somewhere) runs uncaptured, and `status` says why.
"""

from __future__ import annotations

import ctypes
import weakref
from collections import Counter
from typing import Any

from trainctl.autograd.compile import Program, write_scalars

# CUgraphNodeType values (cuda.h).
_NODE_KINDS = {
    0: "kernel",
    1: "memcpy",
    2: "memset",
    3: "host",
    4: "child graph",
    5: "empty",
    6: "event wait",
    7: "event record",
    10: "alloc",
    11: "free",
}


class CapturedStep:
    """Runs `program` on `stream`: plainly the first time, then as a replayed CUDA graph."""

    def __init__(self, program: Program, stream: Any) -> None:
        if program.device_step is None:
            raise ValueError("a captured step needs a program compiled with device scalars")
        self.program, self.stream = program, stream
        self.runs = 0
        self.failure: str | None = None
        self.nodes: dict[str, int] = {}
        self._exec = 0
        self._outputs: tuple = ()
        self._pool: Any = None

    @property
    def captured(self) -> bool:
        return self._exec != 0

    def __call__(self, *args: Any) -> tuple:
        """One step with the host numbers `args` (the batch is already in the input arrays);
        must run with `stream` current."""
        program = self.program
        self.runs += 1
        if not self.captured and (self.runs == 1 or self.failure is not None):
            return program.function(*args)
        write_scalars(program.scalars, program.host_values(*args))
        if not self.captured:
            self._capture()
            if not self.captured:
                return program.device_step()
        import cupy

        cupy.cuda.runtime.graphLaunch(self._exec, self.stream.ptr)
        return self._outputs

    def status(self) -> dict[str, Any]:
        """What a report shows: captured or why not, and the graph's node counts."""
        if self.captured:
            return {"captured": True, "nodes": dict(self.nodes)}
        return {"captured": False, "reason": self.failure or "not yet captured (first run)"}

    def _capture(self) -> None:
        import cupy

        runtime = cupy.cuda.runtime
        pool = cupy.cuda.MemoryPool()
        try:
            with cupy.cuda.using_allocator(pool.malloc):
                runtime.streamBeginCapture(self.stream.ptr, runtime.streamCaptureModeRelaxed)
                try:
                    outputs = self.program.device_step()
                except Exception:
                    _abandon_capture(runtime, self.stream)
                    raise
                graph = runtime.streamEndCapture(self.stream.ptr)
            try:
                self.nodes = count_nodes(graph)
                self._exec = runtime.graphInstantiate(graph)
            finally:
                runtime.graphDestroy(graph)
        except Exception as exc:  # CuPy raises its own CUDARuntimeError and others
            self.failure = f"capture failed: {type(exc).__name__}: {exc}"
            return
        self._outputs, self._pool = outputs, pool
        weakref.finalize(self, runtime.graphExecDestroy, self._exec)


def _abandon_capture(runtime: Any, stream: Any) -> None:
    """End a capture that went wrong, so the stream can be used again."""
    try:
        graph = runtime.streamEndCapture(stream.ptr)
    except Exception:  # the capture was invalidated: ending it reports that, nothing to free
        return
    if graph:
        runtime.graphDestroy(graph)


def count_nodes(graph: int) -> dict[str, int]:
    """Nodes of a captured graph by kind (kernel, memcpy, ...): the launches one replay saves.

    CuPy does not expose the node list, so this asks the driver (libcuda) directly; an empty
    dict when it cannot be asked."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {}
    handle = ctypes.c_void_p(graph)
    count = ctypes.c_size_t(0)
    if driver.cuGraphGetNodes(handle, None, ctypes.byref(count)) != 0:
        return {}
    nodes = (ctypes.c_void_p * count.value)()
    if driver.cuGraphGetNodes(handle, nodes, ctypes.byref(count)) != 0:
        return {}
    kinds: Counter[str] = Counter()
    for node in nodes:
        kind = ctypes.c_int(-1)
        driver.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind))
        kinds[_NODE_KINDS.get(kind.value, "other")] += 1
    return dict(kinds)
