"""Matrix products for CUDA-graph capture: cuBLAS called directly, on CuPy's own handle.

CuPy refuses every cuBLAS call while a stream is being captured ("calling cuBLAS API during
stream capture is currently unsupported"), although cuBLAS itself records into CUDA graphs.
Captured programs therefore call `cublasGemmEx` through ctypes, on the handle CuPy uses, with
the stream set to the capturing one. The call is made only while a step is warmed up and
captured, never per replayed step, so ctypes' overhead does not matter.

`load_gemm()` tries the call once against `cupy.matmul` on random matrices and gives None
when it cannot be made or does not agree, and the step is then not captured.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_OP_N, _OP_T = 0, 1
_CUDA_TYPES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 14}  # cudaDataType
_COMPUTE_TYPES = {"float32": 68, "float64": 70}  # cublasComputeType_t: 32F, 64F
_GEMM_DEFAULT = -1
_POINTER_MODE_HOST = 0

Gemm = Callable[[Any, Any, Any], None]


def _loaded_library(stem: str) -> str | None:
    """The path of the shared library `stem` this process has loaded (CuPy loads cuBLAS from
    its own wheel or the CUDA toolkit, wherever that is)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1]
        if Path(path).name.startswith(f"{stem}.so"):
            return path
    return None


def _operand(x: Any) -> tuple[int, int]:
    """(cuBLAS op, leading dimension) of a 2-D array seen column-major, i.e. transposed."""
    itemsize = x.dtype.itemsize
    rows, cols = x.shape
    s0, s1 = (s // itemsize for s in x.strides)
    if s1 == 1 or cols == 1:
        return _OP_N, max(s0, cols, 1)
    if s0 == 1 or rows == 1:
        return _OP_T, max(s1, rows, 1)
    raise ValueError("a strided operand cuBLAS cannot read")


def _make_gemm(library: ctypes.CDLL, handle: int) -> Gemm:
    def gemm(a: Any, b: Any, out: Any) -> None:
        """out = a @ b for 2-D arrays of one float dtype, on the current stream."""
        import cupy

        dtype = out.dtype.name
        if a.ndim != 2 or b.ndim != 2 or not (a.dtype == b.dtype == out.dtype):
            raise ValueError("gemm takes 2-D arrays of one dtype")
        if out.strides[1] != out.dtype.itemsize:
            raise ValueError("gemm writes a row-major output")
        (m, k), n = a.shape, b.shape[1]
        op_a, ld_a = _operand(a)
        op_b, ld_b = _operand(b)
        ld_out = max(out.strides[0] // out.dtype.itemsize, n, 1)
        scalar = ctypes.c_double if dtype == "float64" else ctypes.c_float
        one, zero = scalar(1.0), scalar(0.0)
        stream = cupy.cuda.get_current_stream().ptr
        _check(library.cublasSetStream_v2(ctypes.c_void_p(handle), ctypes.c_void_p(stream)))
        _check(library.cublasSetPointerMode_v2(ctypes.c_void_p(handle), _POINTER_MODE_HOST))
        # Row-major out = a @ b is column-major out^T = b^T @ a^T.
        status = library.cublasGemmEx(
            ctypes.c_void_p(handle),
            op_b,
            op_a,
            n,
            m,
            k,
            ctypes.byref(one),
            ctypes.c_void_p(b.data.ptr),
            _CUDA_TYPES[dtype],
            ld_b,
            ctypes.c_void_p(a.data.ptr),
            _CUDA_TYPES[dtype],
            ld_a,
            ctypes.byref(zero),
            ctypes.c_void_p(out.data.ptr),
            _CUDA_TYPES[dtype],
            ld_out,
            _COMPUTE_TYPES.get(dtype, 68),
            _GEMM_DEFAULT,
        )
        _check(status)

    return gemm


def _check(status: int) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLAS returned status {status}")


@functools.cache
def load_gemm() -> tuple[Gemm | None, str]:
    """The direct cuBLAS product and a note on how it compares with `cupy.matmul`, or None
    and why it cannot be used."""
    import cupy

    try:
        handle = cupy.cuda.device.get_cublas_handle()
        rng = np.random.default_rng(0)
        a = cupy.asarray(rng.standard_normal((37, 19)), dtype=cupy.float32)
        b = cupy.asarray(rng.standard_normal((23, 19)), dtype=cupy.float32).T
        expected = cupy.matmul(a, b)  # also makes CuPy load cuBLAS
        path = _loaded_library("libcublas")
        if path is None:
            return None, "the cuBLAS library CuPy loaded was not found"
        gemm = _make_gemm(ctypes.CDLL(path), handle)
        got = cupy.empty_like(expected)
        gemm(a, b, got)
        cupy.cuda.get_current_stream().synchronize()
    except Exception as exc:  # ctypes, CUDA and cuBLAS raise their own kinds
        return None, f"cuBLAS could not be called directly: {type(exc).__name__}: {exc}"
    if not bool(cupy.allclose(got, expected, rtol=1e-5, atol=1e-6)):
        return None, "cuBLAS called directly disagrees with cupy.matmul"
    same = bool((got == expected).all())
    return gemm, "bit for bit cupy.matmul's" if same else "within 1e-5 of cupy.matmul"
