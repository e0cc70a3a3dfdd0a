"""Devices: which array module runs the math, transfers, synchronisation and seeded RNG.

Every kernel in trainctl is written once against `xp` (NumPy or CuPy); the only place that
knows which one is in use is the `Device` a tensor or module lives on. CuPy is imported the
first time a CUDA device is asked for, never at start-up.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from trainctl.errors import DeviceError

GPU_EXTRA_HINT = (
    "install the GPU extra for your CUDA: pip install 'trainctl[gpu]' (CUDA 12) "
    "or 'trainctl[gpu-cuda13]' (CUDA 13)"
)


@dataclass(frozen=True)
class Device:
    """A place where arrays live: `cpu` (NumPy) or `cuda` (CuPy, current GPU)."""

    name: str
    xp: ModuleType

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def asarray(self, data: Any, dtype: Any = None) -> Any:
        """Copy host or device data onto this device (no copy when already here)."""
        if self.name == "cpu" and not isinstance(data, np.ndarray) and hasattr(data, "get"):
            data = data.get()
        return self.xp.asarray(data, dtype=dtype)

    def synchronize(self) -> None:
        """Wait until queued kernels finish (timing needs it on CUDA; a no-op on CPU)."""
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()


CPU = Device("cpu", np)


def to_host(array: Any) -> np.ndarray:
    """A NumPy copy of `array` wherever it lives."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else array


@functools.cache
def _cuda_device() -> Device:
    try:
        import cupy
    except ImportError as exc:
        raise DeviceError(
            f"device 'cuda' needs CuPy, which is not installed: {GPU_EXTRA_HINT}"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError subclasses
        raise DeviceError(f"device 'cuda' is unusable: {exc}") from exc
    if count == 0:
        raise DeviceError("device 'cuda' asked for, but no NVIDIA GPU is visible")
    return Device("cuda", cupy)


def get_device(name: str | Device = "cpu") -> Device:
    """Resolve `cpu`, `cuda` or `auto` (cuda when usable, else cpu) to a Device."""
    if isinstance(name, Device):
        return name
    if name == "cpu":
        return CPU
    if name == "cuda":
        return _cuda_device()
    if name == "auto":
        try:
            return _cuda_device()
        except DeviceError:
            return CPU
    raise DeviceError(f"unknown device {name!r}: expected one of cpu, cuda, auto")


def device_of(array: Any) -> Device:
    """The device an array lives on, found from its type, not from a flag."""
    return CPU if isinstance(array, (np.ndarray, np.generic)) else _cuda_device()


def cuda_status() -> str:
    """One line saying which GPUs CuPy sees, or why CUDA cannot be used."""
    try:
        device = _cuda_device()
    except DeviceError as exc:
        return str(exc)
    cupy = device.xp
    count = cupy.cuda.runtime.getDeviceCount()
    names = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(count)]
    return f"{count} GPU(s): {', '.join(names)} (CuPy {cupy.__version__})"


class Generator:
    """Seeded, counter-based random numbers.

    Every draw takes the next counter value, and the bits depend only on (seed, counter), so a
    run can be replayed from any step by restoring two integers, and graph mode can pass the
    counter in as a runtime input. Parameter initialisation draws on the host (identical on
    every device); dropout masks are drawn on the device (reproducible per device).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.counter = 0

    def next_key(self) -> Any:
        """The key of the next device draw (dropout); symbolic while graph mode traces."""
        key = self._take_key()
        return key if _key_hook is None else _key_hook(self, key)

    def _take_key(self) -> tuple[int, int]:
        key = (self.seed, self.counter)
        self.counter += 1
        return key

    def host_rng(self) -> np.random.Generator:
        """A NumPy generator for the next draw (initialisers, shuffling)."""
        return np.random.default_rng(self._take_key())

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "counter": self.counter}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.counter = int(state["seed"]), int(state["counter"])


_key_hook: Callable[[Generator, tuple[int, int]], Any] | None = None


@contextlib.contextmanager
def intercept_keys(hook: Callable[[Generator, tuple[int, int]], Any]) -> Iterator[None]:
    """Route every `next_key()` through `hook(generator, key)`: graph mode's tracer turns the
    keys into symbolic ones (the counter becomes a runtime input of the compiled step)."""
    global _key_hook
    previous, _key_hook = _key_hook, hook
    try:
        yield
    finally:
        _key_hook = previous


def uniform(
    xp: ModuleType, key: tuple[int, int], shape: tuple[int, ...], dtype: Any, out: Any = None
) -> Any:
    """Uniform [0, 1) numbers for `key`, drawn on the device of `xp` (into `out` if given)."""
    if xp is np:
        return np.random.default_rng(key).random(shape, dtype=np.dtype(dtype), out=out)
    seed, counter = key
    mixed = (seed * 0x9E3779B97F4A7C15 + counter) % (1 << 63)
    return xp.random.default_rng(mixed).random(shape, dtype=dtype, out=out)


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reset the default generator (initialisers and dropout draw from it)."""
    default_generator.seed, default_generator.counter = int(seed), 0
    return default_generator
