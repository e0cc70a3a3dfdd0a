"""Freed host memory kept for reuse: glibc's malloc settings for the processes trainctl runs.

An eager step allocates its activations anew every step. glibc serves a block above its mmap
threshold (128 KiB at first, rising with use to at most 32 MiB) with a fresh mmap and gives
free memory at the top of the heap back to the OS beyond its trim threshold, so a CIFAR
batch's 16 MiB activations kept arriving as fresh pages, zeroed by the kernel and faulted in
on first touch. cifar10_cnn's eager step at batch 128 (2 threads, per-op profile, alternated
runs): 392-487 ms with glibc's defaults, 298-301 ms with the threshold at its 32 MiB maximum
and trimming off; with only one of the two, 370 and 488 ms. Graph mode preallocates its
buffers and gains little. The price: a process keeps the memory of its peak until it exits.
"""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
LARGEST_HEAP_BLOCK = 32 << 20  # glibc's cap on the mmap threshold on 64-bit systems
NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes (an int)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 32 MiB for reuse instead of returning
    them to the OS. Linux with glibc only (True when set); elsewhere it does nothing."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # musl and other C libraries have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_BLOCK)) and bool(
        mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    )
