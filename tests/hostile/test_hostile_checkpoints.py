"""Damaged and mismatched checkpoints: through the loader, `trainctl eval` and `train --resume`.

Every bit flip of the safetensors header and of the JSON state in it, flips at seeded random
places in the tensor bytes, and every truncation of the header are refused by
`load_checkpoint` (the header's structure by safetensors, the rest by the sha256 stored in
it). A seeded sample goes through the CLI: exit 2, one line naming the checkpoint, and not one
byte of the run folder changed. Checkpoints that are intact but do not fit (another model's
shapes, integer weights) are refused the same way.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hostile_files import bit_flips, npy_bytes, truncations, zip_of
from hostile_helpers import TALLY, assert_user_error, invoke, snapshot, train_small_run

from trainctl.errors import CheckpointError
from trainctl.train.checkpoint import load_checkpoint, save_checkpoint

CLI_SAMPLE = 10


@pytest.fixture(scope="module")
def template_run(tmp_path_factory) -> Path:
    """A finished three-step digits run, copied by each test that changes it."""
    return train_small_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run(template_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(template_run, copy)
    return copy


def header_length(data: bytes) -> int:
    """The 8-byte length plus the JSON header of a safetensors file."""
    return 8 + struct.unpack("<Q", data[:8])[0]


def refused(path: Path) -> str:
    """The CheckpointError's message, checked to be one line naming `path`."""
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


def damaged_checkpoints(good: bytes) -> list[bytes]:
    """Every truncation of the header and a flip in each of its bytes (its JSON holds the
    trainer state), and flips in 150 random tensor bytes."""
    header = header_length(good)
    flips = bit_flips(good, header, extra=150, every_bit=False)
    return [*truncations(good, header, extra=6), *flips]


def test_every_damaged_checkpoint_is_refused_by_the_loader(run):
    path = run / "checkpoints" / "last.safetensors"
    good = path.read_bytes()
    variants = damaged_checkpoints(good)
    assert len(variants) > 2 * header_length(good)
    for data in variants:
        path.write_bytes(data)
        TALLY["hostile checkpoints"] += 1
        refused(path)


def _sample(variants: list[bytes], seed: int) -> list[bytes]:
    picks = np.random.default_rng(seed).choice(len(variants), CLI_SAMPLE, replace=False)
    return [variants[int(i)] for i in sorted(picks)]


def test_damaged_checkpoints_through_eval_change_nothing(run):
    path = run / "checkpoints" / "best.safetensors"
    for data in _sample(damaged_checkpoints(path.read_bytes()), seed=1):
        path.write_bytes(data)
        before = snapshot(run)
        result = invoke("eval", run)
        TALLY["hostile checkpoints through the CLI"] += 1
        assert_user_error(result, path)
        assert snapshot(run) == before


def test_damaged_checkpoints_through_resume_change_nothing(run):
    path = run / "checkpoints" / "last.safetensors"
    for data in _sample(damaged_checkpoints(path.read_bytes()), seed=2):
        path.write_bytes(data)
        before = snapshot(run)
        result = invoke("train", "--resume", run, "-q")
        TALLY["hostile checkpoints through the CLI"] += 1
        assert_user_error(result, path)
        assert snapshot(run) == before


def _safetensors_with_metadata(metadata: str) -> bytes:
    return safetensors.numpy.save({"w": np.zeros(2, np.float32)}, metadata={"trainctl": metadata})


def _raw_safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


WRONG_FORMAT = {
    "empty": lambda good: b"",
    "text": lambda good: b"these are not the weights you are looking for\n",
    "npz": lambda good: zip_of({"w.npy": npy_bytes(np.zeros(3))}),
    "no_trainctl_metadata": lambda good: safetensors.numpy.save({"w": np.zeros(2)}),
    "metadata_not_json": lambda good: _safetensors_with_metadata("{not json"),
    "metadata_a_list": lambda good: _safetensors_with_metadata("[1, 2]"),
    "metadata_nested_deeply": lambda good: _safetensors_with_metadata("[" * 100_000),
    "metadata_version_2": lambda good: _safetensors_with_metadata('{"format_version": 2}'),
    "header_length_huge": lambda good: struct.pack("<Q", 2**63) + good[8:],
    "header_length_zero": lambda good: struct.pack("<Q", 0) + good[8:],
    "header_not_json": lambda good: _raw_safetensors(b"{" * 64),
    "header_nested_deeply": lambda good: _raw_safetensors(b"[" * 100_000),
    "tensor_past_the_end": lambda good: _raw_safetensors(
        json.dumps(
            {"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}
        ).encode(),
        b"\x00" * 16,
    ),
    "tensor_of_huge_shape": lambda good: _raw_safetensors(
        json.dumps(
            {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}
        ).encode(),
        b"\x00" * 16,
    ),
    "overlapping_tensors": lambda good: _raw_safetensors(
        json.dumps(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
            }
        ).encode(),
        b"\x00" * 16,
    ),
    "bfloat16_tensor": lambda good: _raw_safetensors(
        json.dumps({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode(),
        b"\x00" * 4,
    ),
    "unknown_dtype": lambda good: _raw_safetensors(
        json.dumps({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 4]}}).encode(),
        b"\x00" * 4,
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_FORMAT))
def test_files_that_are_not_trainctl_checkpoints(run, case):
    path = run / "checkpoints" / "best.safetensors"
    path.write_bytes(WRONG_FORMAT[case](path.read_bytes()))
    TALLY["hostile checkpoints"] += 1
    refused(path)
    before = snapshot(run)
    assert_user_error(invoke("eval", run), path)
    assert snapshot(run) == before


def _resign(path: Path, change) -> None:
    """Rewrite the checkpoint at `path` with its model tensors changed by `change`, and a
    valid checksum: intact, but not what the model expects."""
    checkpoint = load_checkpoint(path)
    model = change(dict(checkpoint.model_state))
    save_checkpoint(path, model, checkpoint.optimizer_state, checkpoint.trainer_state)


MISFITS = {
    "another_models_shapes": lambda state: {
        k: v[:, :5] if v.ndim == 2 else v[:5] for k, v in state.items()
    },
    "integer_weights": lambda state: {k: v.astype(np.int64) for k, v in state.items()},
    "a_missing_tensor": lambda state: dict(list(state.items())[1:]),
    "an_extra_tensor": lambda state: {**state, "9.weight": np.zeros((2, 2), np.float32)},
}


@pytest.mark.parametrize("case", sorted(MISFITS))
def test_intact_checkpoints_that_do_not_fit_the_model_through_eval(run, case):
    path = run / "checkpoints" / "best.safetensors"
    _resign(path, MISFITS[case])
    before = snapshot(run)
    TALLY["hostile checkpoints through the CLI"] += 1
    message = assert_user_error(invoke("eval", run), path)
    assert "does not fit the model" in message
    assert snapshot(run) == before


def test_intact_checkpoints_that_do_not_fit_the_model_through_resume(template_run, tmp_path):
    """A resume refuses a checkpoint that does not fit the model (shapes, or integer weights in
    a float model) with an error naming the file, before anything in the folder changes."""
    for case, change in sorted(MISFITS.items()):
        run = tmp_path / case
        shutil.copytree(template_run, run)
        path = run / "checkpoints" / "last.safetensors"
        _resign(path, change)
        before = snapshot(run)
        TALLY["hostile checkpoints through the CLI"] += 1
        assert_user_error(invoke("train", "--resume", run, "-q"), path)
        assert snapshot(run) == before


def test_a_float64_checkpoint_evaluates_as_float32(run):
    """Precision is not a misfit: a float checkpoint loads into a float model of another
    width (what `--set dtype=float64` at eval time relies on)."""
    path = run / "checkpoints" / "best.safetensors"
    _resign(path, lambda state: {k: v.astype(np.float64) for k, v in state.items()})
    result = invoke("eval", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 180
