"""Checkpoints: one safetensors file holding everything an exact resume needs.

One file, so one atomic rename replaces it: a crash leaves the previous checkpoint or the new
one, never a mix. Layout:

- the model's parameters and buffers under their plain dotted names ("0.weight"), so other
  tools load the weights directly (`safetensors.numpy.load_file`, `safetensors.torch`);
- the optimizer's per-parameter state under "optimizer.<index>.<state name>";
- in the header metadata, under the one key "trainctl", a JSON object: format_version,
  trainer (the trainer's state: step, epoch, RNG states, ...), optimizer (the optimizer's
  state dict without its tensors) and optimizer_state_indices (the parameters that have
  state, possibly none of it in tensors); under "trainctl_sha256", its checksum.

safetensors checks the header's structure but has no checksum, so a flipped byte in a tensor
would load silently; the sha256 covers the JSON text exactly as stored and every tensor's
name, dtype, shape and bytes, and a mismatch is an error. It detects damage; it is not a
signature. Non-finite floats in the trainer state are kept (as Python's JSON writes them) so
that they round-trip exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from trainctl.errors import CheckpointError
from trainctl.train.atomic import atomic_write_bytes, json_default

FORMAT_VERSION = 1
METADATA_KEY = "trainctl"
DIGEST_KEY = "trainctl_sha256"
OPTIMIZER_PREFIX = "optimizer."
# safetensors dtype names of the tensors a checkpoint may hold
DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64}
_ALLOWED = "float16, float32, float64 and int64"


@dataclass
class Checkpoint:
    """A loaded checkpoint; `optimizer_state` is what `Optimizer.load_state_dict` takes."""

    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any]
    trainer_state: dict[str, Any]
    path: Path


def save_checkpoint(
    path: Path | str,
    model_state: Mapping[str, np.ndarray],
    optimizer_state: Mapping[str, Any],
    trainer_state: Mapping[str, Any],
) -> None:
    """Write a checkpoint to `path` atomically (the previous file stays until the rename).

    `optimizer_state` is `Optimizer.state_dict()`: its "state" maps parameter indices to
    {state name: array}; every other entry must be JSON, as must `trainer_state`.
    """
    path = Path(path)
    tensors = {}
    for name, value in model_state.items():
        if name.startswith(OPTIMIZER_PREFIX):
            raise CheckpointError(
                f"cannot save {path}: model tensor {name!r} uses the prefix reserved for "
                f"optimizer state ({OPTIMIZER_PREFIX!r})"
            )
        tensors[name] = _checked_array(path, name, value)
    if not isinstance(optimizer_state.get("state"), Mapping):
        raise CheckpointError(f"cannot save {path}: the optimizer state has no 'state' mapping")
    indices = []
    for key, entry in optimizer_state["state"].items():
        index = int(key)
        indices.append(index)
        for state_name, value in entry.items():
            name = f"{OPTIMIZER_PREFIX}{index}.{state_name}"
            tensors[name] = _checked_array(path, name, value)
    optimizer_json = {key: value for key, value in optimizer_state.items() if key != "state"}
    try:
        state_text = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "trainer": trainer_state,
                "optimizer": optimizer_json,
                "optimizer_state_indices": sorted(indices),
            },
            default=json_default,
            separators=(",", ":"),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot save {path}: the trainer or optimizer state is not JSON: {exc}"
        ) from exc
    metadata = {METADATA_KEY: state_text, DIGEST_KEY: _digest(state_text, tensors)}
    atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=metadata))


def _checked_array(path: Path, name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.type not in DTYPES.values():
        raise CheckpointError(
            f"cannot save {path}: tensor {name!r} has dtype {array.dtype}; "
            f"checkpoints hold {_ALLOWED}"
        )
    # Little-endian and contiguous: the bytes the digest covers are the bytes in the file.
    # (np.asarray, not np.ascontiguousarray, which turns a 0-d array into shape (1,))
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")


def _digest(state_text: str, tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over the JSON state exactly as stored (so no edit can parse back to the same
    values unnoticed) and every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256(state_text.encode())
    for name in sorted(tensors):
        array = tensors[name]
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read and verify a checkpoint; any problem is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        found = "does not exist" if not path.exists() else "is not a file"
        raise CheckpointError(f"checkpoint {path} {found}")
    metadata, tensors = _read_safetensors(path)
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{path} is not a trainctl checkpoint: its header has no {METADATA_KEY!r} metadata"
        )
    if metadata.get(DIGEST_KEY) != _digest(metadata[METADATA_KEY], tensors):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the checksum stored in it"
        )
    try:
        payload = json.loads(metadata[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise CheckpointError(
            f"{path}: the {METADATA_KEY!r} metadata is not valid JSON: {exc}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: the {METADATA_KEY!r} metadata is not a JSON object")
    version = payload.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this trainctl reads version "
            f"{FORMAT_VERSION}"
        )
    return _unpack(path, payload, tensors)


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    try:
        with safetensors.safe_open(str(path), framework="np") as file:
            metadata = file.metadata() or {}
            names = list(file.keys())
            dtypes = {name: file.get_slice(name).get_dtype() for name in names}
            wrong = [f"{name} ({dtype})" for name, dtype in dtypes.items() if dtype not in DTYPES]
            if wrong:
                raise CheckpointError(
                    f"{path}: tensors of a dtype trainctl does not save: {', '.join(wrong)}; "
                    f"checkpoints hold {_ALLOWED}"
                )
            tensors = {name: np.array(file.get_tensor(name)) for name in names}
    except (safetensors.SafetensorError, OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    return metadata, tensors


def _unpack(path: Path, payload: dict[str, Any], tensors: dict[str, np.ndarray]) -> Checkpoint:
    trainer, optimizer = payload.get("trainer"), payload.get("optimizer")
    indices = payload.get("optimizer_state_indices")
    if (
        not isinstance(trainer, dict)
        or not isinstance(optimizer, dict)
        or not isinstance(indices, list)
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
    ):
        raise CheckpointError(
            f"{path}: the {METADATA_KEY!r} metadata lacks a trainer object, an optimizer object "
            "or the list of optimizer state indices"
        )
    state: dict[int, dict[str, np.ndarray]] = {index: {} for index in indices}
    model_state = {}
    for name, array in tensors.items():
        if not name.startswith(OPTIMIZER_PREFIX):
            model_state[name] = array
            continue
        index_text, _, state_name = name[len(OPTIMIZER_PREFIX) :].partition(".")
        if not index_text.isdigit() or not state_name or int(index_text) not in state:
            raise CheckpointError(
                f"{path}: tensor {name!r} is not optimizer.<index>.<state name> for a "
                "parameter listed in the optimizer state"
            )
        state[int(index_text)][state_name] = array
    return Checkpoint(model_state, {**optimizer, "state": state}, trainer, path)


def check_compatible(
    checkpoint: Checkpoint,
    model_state_shapes: Mapping[str, Sequence[int]],
    model_state_dtypes: Mapping[str, Any] | None = None,
) -> None:
    """Raise a CheckpointError listing every tensor the model and checkpoint disagree on.

    With `model_state_dtypes`, a tensor must also be of the same kind as the model's: float
    for float (any width: the model casts, as `--set dtype=float64` at eval time needs), and
    integer for integer; integer weights in a float model are a misfit, not a cast.
    """
    saved = {name: tuple(array.shape) for name, array in checkpoint.model_state.items()}
    expected = {name: tuple(shape) for name, shape in model_state_shapes.items()}
    missing = [name for name in expected if name not in saved]
    unexpected = [name for name in saved if name not in expected]
    mismatched = [
        f"{name} is {saved[name]} in the checkpoint, {expected[name]} in the model"
        for name in expected
        if name in saved and saved[name] != expected[name]
    ]
    kinds = {name: np.dtype(dtype).kind for name, dtype in (model_state_dtypes or {}).items()}
    wrong_kinds = [
        f"{name} is {checkpoint.model_state[name].dtype} in the checkpoint, "
        f"{np.dtype(model_state_dtypes[name])} in the model"
        for name, kind in kinds.items()
        if name in saved and checkpoint.model_state[name].dtype.kind != kind
    ]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"not in the model: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    if wrong_kinds:
        problems.append(f"dtype mismatches: {'; '.join(wrong_kinds)}")
    if problems:
        raise CheckpointError(
            f"{checkpoint.path} does not fit the model (was the config changed?): "
            + "; ".join(problems)
        )
