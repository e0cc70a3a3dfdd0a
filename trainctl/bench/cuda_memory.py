"""Peak bytes a CUDA step takes from CuPy's memory pool (tracemalloc cannot see the GPU)."""

from __future__ import annotations

from collections.abc import Callable


def peak_pool_bytes(run: Callable[[], object]) -> int:
    """The most pool memory held at once by allocations made while `run()` executes."""
    import cupy
    from cupy.cuda import memory_hook

    class PeakHook(memory_hook.MemoryHook):
        name = "TrainctlPeakHook"

        def __init__(self) -> None:
            self.current = self.peak = 0

        def malloc_postprocess(self, **kwargs) -> None:
            self.current += kwargs["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kwargs) -> None:
            self.current -= kwargs["mem_size"]

    hook = PeakHook()
    with hook:
        run()
        cupy.cuda.get_current_stream().synchronize()
    return hook.peak
