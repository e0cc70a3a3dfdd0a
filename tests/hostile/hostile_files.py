"""Damaged copies of good files: every truncation and bit flip of a header, seeded random ones
of the body, and files of the wrong format. Deterministic: the same list on every run."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Iterator

import numpy as np
from hostile_helpers import MARKER

SEED = 6


def truncations(good: bytes, header: int, extra: int = 8, seed: int = SEED) -> Iterator[bytes]:
    """`good` cut at every length up to `header` + 1, and at `extra` random lengths past it."""
    rng = np.random.default_rng(seed)
    lengths = set(range(min(header + 1, len(good))))
    if len(good) > header + 1:
        lengths |= {int(n) for n in rng.integers(header + 1, len(good), extra)}
    lengths |= {len(good) // 2, len(good) - 1}
    for length in sorted(lengths):
        yield good[:length]


def bit_flips(
    good: bytes, header: int, extra: int = 24, seed: int = SEED, every_bit: bool = True
) -> Iterator[bytes]:
    """`good` with one bit flipped: every bit (or one random bit) of each of the first
    `header` bytes, then one random bit at each of `extra` random positions after it."""
    rng = np.random.default_rng(seed)
    for position in range(min(header, len(good))):
        for bit in range(8) if every_bit else [int(rng.integers(8))]:
            yield flip(good, position, 1 << bit)
    if len(good) > header:
        for position in rng.choice(
            np.arange(header, len(good)), min(extra, len(good) - header), replace=False
        ):
            yield flip(good, int(position), 1 << int(rng.integers(8)))


def flip(data: bytes, position: int, mask: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= mask
    return bytes(damaged)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=array.dtype.hasobject)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], compressed: bool = False) -> bytes:
    """An .npz archive built by hand, so that members can lie about themselves."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """The header of a .npy file declaring `shape` and `dtype`, without the data."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)  # the magic string, then the header
    return buffer.getvalue()


class _Payload:
    """Unpickling this runs `touch PWNED`: the test that the object never comes back."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


HOSTILE_NPZ = {
    "pickled_object_array": lambda: zip_of(
        {
            "x.npy": npy_bytes(np.array([_Payload()] * 6, dtype=object).reshape(6, 1)),
            "y.npy": npy_bytes(np.arange(6)),
        }
    ),
    "pickled_targets": lambda: zip_of(
        {
            "x.npy": npy_bytes(np.zeros((6, 2))),
            "y.npy": npy_bytes(np.array([_Payload()] * 6, dtype=object)),
        }
    ),
    "huge_declared_shape": lambda: zip_of(
        {"x.npy": npy_header((10**12, 4), "<f8") + b"\x00" * 64, "y.npy": npy_bytes(np.arange(6))}
    ),
    "huge_declared_shape_deflated": lambda: zip_of(
        {"x.npy": npy_header((2**40,), "|u1") + b"\x00" * 4096, "y.npy": npy_bytes(np.arange(6))},
        compressed=True,
    ),
    "shorter_than_declared": lambda: zip_of(
        {"x.npy": npy_header((6, 4), "<f4") + b"\x00" * 10, "y.npy": npy_bytes(np.arange(6))}
    ),
    "a_single_npy": lambda: npy_bytes(np.zeros((6, 2))),
    "strings": lambda: zip_of(
        {"x.npy": npy_bytes(np.array([["a"]] * 6)), "y.npy": npy_bytes(np.arange(6))}
    ),
    "complex": lambda: zip_of(
        {"x.npy": npy_bytes(np.zeros((6, 2), complex)), "y.npy": npy_bytes(np.arange(6))}
    ),
    "nan_inputs": lambda: zip_of(
        {"x.npy": npy_bytes(np.full((6, 2), np.nan)), "y.npy": npy_bytes(np.arange(6))}
    ),
    "beyond_float32": lambda: zip_of(
        {"x.npy": npy_bytes(np.full((6, 2), 1e300)), "y.npy": npy_bytes(np.arange(6))}
    ),
    "no_samples": lambda: zip_of(
        {"x.npy": npy_bytes(np.zeros((0, 2))), "y.npy": npy_bytes(np.zeros(0))}
    ),
    "zero_dimensional": lambda: zip_of(
        {"x.npy": npy_bytes(np.float64(1.0)), "y.npy": npy_bytes(np.arange(6))}
    ),
    "missing_targets": lambda: zip_of({"x.npy": npy_bytes(np.zeros((6, 2)))}),
    "a_pickle": lambda: pickle.dumps({"x": np.zeros((6, 2))}),
    "empty_zip": lambda: zip_of({}),
    "text": lambda: b"x,y\n1,2\n",
}
