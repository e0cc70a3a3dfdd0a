"""Checkpoints: exact round trips of a real model and optimizer, and every kind of damage caught."""

import json
import math
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from devices import cuda_only

from trainctl import backend, nn
from trainctl.autograd import Tensor
from trainctl.errors import CheckpointError, RunFolderError
from trainctl.optim import SGD, Adam, RMSprop, make_schedule
from trainctl.train import atomic
from trainctl.train.checkpoint import (
    DIGEST_KEY,
    FORMAT_VERSION,
    METADATA_KEY,
    _digest,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]

OPTIMIZERS = {
    "adam": lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
    "sgd_momentum_cosine": lambda ps: SGD(
        ps, momentum=0.9, nesterov=True, schedule=make_schedule("cosine", 0.1, total_steps=10)
    ),
    "rmsprop_centered": lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    "sgd_plain": lambda ps: SGD(ps, lr=0.1),
}


def make_model(seed):
    generator = backend.Generator(seed)
    return nn.Sequential(
        nn.Linear(5, 8, generator=generator),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3, generator=generator),
    )


def batch(step):
    rng = np.random.default_rng(step)
    return (
        Tensor(rng.standard_normal((16, 5)).astype(np.float32)),
        Tensor(rng.integers(0, 3, 16).astype(np.int64)),
    )


def train_steps(model, optimizer, steps):
    for step in steps:
        inputs, labels = batch(step)
        optimizer.zero_grad()
        loss = nn.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
    return float(loss.numpy())


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def assert_same_optimizer_state(a, b):
    assert {k: v for k, v in a.items() if k != "state"} == {
        k: v for k, v in b.items() if k != "state"
    }
    assert sorted(a["state"]) == sorted(b["state"])
    for index in a["state"]:
        assert_same_arrays(a["state"][index], b["state"][index])


TRAINER_STATE = {
    "trainer": {"step": 2, "epoch": 0, "batch": 2, "best_value": None, "stop_best": math.inf},
    "generator": {"seed": 7, "counter": 2**63 + 5},
    "mode": "eager",
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_round_trip_resumes_exactly(tmp_path, kind):
    model = make_model(seed=0)
    optimizer = OPTIMIZERS[kind](list(model.parameters()))
    train_steps(model, optimizer, [0, 1])
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model.state_dict(), optimizer.state_dict(), TRAINER_STATE)

    checkpoint = load_checkpoint(path)
    assert checkpoint.path == path
    assert checkpoint.trainer_state == TRAINER_STATE
    assert_same_arrays(checkpoint.model_state, model.state_dict())
    assert_same_optimizer_state(checkpoint.optimizer_state, optimizer.state_dict())

    fresh_model = make_model(seed=1)
    assert not np.array_equal(fresh_model.state_dict()["0.weight"], model.state_dict()["0.weight"])
    fresh_optimizer = OPTIMIZERS[kind](list(fresh_model.parameters()))
    fresh_model.load_state_dict(checkpoint.model_state)
    fresh_optimizer.load_state_dict(checkpoint.optimizer_state)
    assert_same_arrays(fresh_model.state_dict(), model.state_dict())
    assert_same_optimizer_state(fresh_optimizer.state_dict(), optimizer.state_dict())
    assert fresh_optimizer.lr == optimizer.lr

    # The resumed pair continues exactly like the original.
    loss = train_steps(model, optimizer, [2, 3])
    assert train_steps(fresh_model, fresh_optimizer, [2, 3]) == loss
    assert_same_arrays(fresh_model.state_dict(), model.state_dict())


def test_the_state_before_it_is_non_trivial(tmp_path):
    """Guards the round-trip test: two real steps leave moving averages and optimizer state."""
    model = make_model(seed=0)
    optimizer = OPTIMIZERS["adam"](list(model.parameters()))
    train_steps(model, optimizer, [0, 1])
    state = optimizer.state_dict()
    assert state["step_count"] == 2 and len(state["state"]) == 6
    assert all(np.any(entry["exp_avg"] != 0) for entry in state["state"].values())
    assert np.any(model.state_dict()["1.running_mean"] != 0)


def test_other_tools_read_the_weights_by_their_plain_names(tmp_path):
    model = make_model(seed=0)
    optimizer = OPTIMIZERS["adam"](list(model.parameters()))
    train_steps(model, optimizer, [0])
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model.state_dict(), optimizer.state_dict(), {})
    loaded = safetensors.numpy.load_file(path)
    weights = {k: v for k, v in loaded.items() if not k.startswith("optimizer.")}
    assert_same_arrays(weights, model.state_dict())
    assert sorted(k for k in loaded if k.startswith("optimizer.")) == sorted(
        f"optimizer.{i}.{name}" for i in range(6) for name in ("exp_avg", "exp_avg_sq")
    )
    torch_st = pytest.importorskip("safetensors.torch")
    tensors = torch_st.load_file(str(path))
    assert np.array_equal(tensors["0.weight"].numpy(), model.state_dict()["0.weight"])


SPECIAL = [0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 1e-40, 65504.0]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floats_round_trip_bit_for_bit(tmp_path, dtype):
    values = np.array(SPECIAL, dtype=dtype).reshape(2, 4)
    state = {"a": values, "scalar": np.array(3.25, dtype=dtype), "empty": np.zeros((0, 3), dtype)}
    save_checkpoint(tmp_path / "c", state, empty_optimizer(), {})
    assert_same_arrays(load_checkpoint(tmp_path / "c").model_state, state)


def test_int64_round_trips_exactly(tmp_path):
    state = {"counts": np.array([0, -1, 2**62, -(2**63), 2**63 - 1], dtype=np.int64)}
    save_checkpoint(tmp_path / "c", state, empty_optimizer(), {})
    assert_same_arrays(load_checkpoint(tmp_path / "c").model_state, state)


def test_non_contiguous_and_big_endian_arrays_are_saved_as_their_values(tmp_path):
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    state = {"t": base.T, "be": base.astype(">f8")}
    save_checkpoint(tmp_path / "c", state, empty_optimizer(), {})
    loaded = load_checkpoint(tmp_path / "c").model_state
    assert np.array_equal(loaded["t"], base.T) and loaded["be"].dtype == np.float64
    assert np.array_equal(loaded["be"], base)


def empty_optimizer():
    return {"kind": "sgd", "step_count": 0, "hyperparameters": {}, "param_shapes": [], "state": {}}


def test_plain_sgd_state_without_tensors_round_trips(tmp_path):
    state = {**empty_optimizer(), "param_shapes": [[2], [3]], "state": {0: {}, 1: {}}}
    save_checkpoint(tmp_path / "c", {}, state, {})
    assert load_checkpoint(tmp_path / "c").optimizer_state == state


def test_trainer_state_round_trips_with_non_finite_numbers(tmp_path):
    trainer = {"best": -math.inf, "nan": math.nan, "nested": {"list": [1, "a", None, True]}}
    save_checkpoint(tmp_path / "c", {}, empty_optimizer(), trainer)
    loaded = load_checkpoint(tmp_path / "c").trainer_state
    assert loaded["best"] == -math.inf and math.isnan(loaded["nan"])
    assert loaded["nested"] == {"list": [1, "a", None, True]}


def test_trainer_state_with_integer_keys_loads(tmp_path):
    """Keys become strings in JSON, which reorders them: the checksum must not care."""
    save_checkpoint(tmp_path / "c", {}, empty_optimizer(), {"by_epoch": {10: 1.0, 2: 0.5}})
    assert load_checkpoint(tmp_path / "c").trainer_state == {"by_epoch": {"10": 1.0, "2": 0.5}}


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64, np.uint8])
def test_unsupported_dtypes_are_refused_on_save(tmp_path, dtype):
    with pytest.raises(CheckpointError, match=f"tensor 'w' has dtype {np.dtype(dtype)}"):
        save_checkpoint(tmp_path / "c", {"w": np.zeros(2, dtype)}, empty_optimizer(), {})
    assert not (tmp_path / "c").exists()


def test_save_refuses_a_model_name_in_the_optimizer_namespace(tmp_path):
    with pytest.raises(CheckpointError, match="'optimizer.0.x' uses the prefix reserved"):
        save_checkpoint(tmp_path / "c", {"optimizer.0.x": np.zeros(1)}, empty_optimizer(), {})


def test_save_refuses_state_that_is_not_json(tmp_path):
    with pytest.raises(CheckpointError, match="trainer or optimizer state is not JSON"):
        save_checkpoint(tmp_path / "c", {}, empty_optimizer(), {"when": object()})


def test_save_replaces_atomically_even_when_the_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, {"w": np.ones(1000)}, empty_optimizer(), {"step": 1})

    def dies_halfway(fd, data):
        atomic.os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_all", dies_halfway)
    with pytest.raises(RunFolderError, match="No space left on device"):
        save_checkpoint(path, {"w": np.zeros(1000)}, empty_optimizer(), {"step": 2})
    monkeypatch.undo()
    checkpoint = load_checkpoint(path)
    assert checkpoint.trainer_state == {"step": 1} and checkpoint.model_state["w"][0] == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


# ---------------------------------------------------------------- damage


@pytest.fixture
def saved(tmp_path):
    """A small checkpoint (weights, buffers, optimizer state): every byte of it is damaged."""
    model = nn.Sequential(nn.Linear(5, 3, generator=backend.Generator(0)), nn.BatchNorm1d(3))
    optimizer = SGD(list(model.parameters()), lr=0.1, momentum=0.9)
    train_steps(model, optimizer, [0])
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model.state_dict(), optimizer.state_dict(), TRAINER_STATE)
    return path


def split_file(data):
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def join_file(header, body):
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + body


def set_metadata_text(path, text):
    """Replace the "trainctl" JSON text and re-sign it: a file whose checksum is valid, so
    the checks behind the checksum are what the test reaches."""
    tensors = safetensors.numpy.load_file(str(path))
    header, body = split_file(path.read_bytes())
    header["__metadata__"][METADATA_KEY] = text
    header["__metadata__"][DIGEST_KEY] = _digest(text, tensors)
    path.write_bytes(join_file(header, body))


def rewrite_metadata(path, change):
    """Edit the "trainctl" JSON (re-signed) and write a structurally valid file back."""
    header, _ = split_file(path.read_bytes())
    payload = json.loads(header["__metadata__"][METADATA_KEY])
    change(payload)
    set_metadata_text(path, json.dumps(payload))


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint .*none\.safetensors does not exist"):
        load_checkpoint(tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_every_truncation_is_caught(saved):
    data = saved.read_bytes()
    damaged = saved.with_name("cut.safetensors")
    for length in range(len(data)):
        damaged.write_bytes(data[:length])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(damaged)
        assert str(damaged) in str(info.value)


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_every_flipped_byte_is_caught(saved, bit):
    data = bytearray(saved.read_bytes())
    damaged = saved.with_name("flipped.safetensors")
    for offset in range(len(data)):
        data[offset] ^= bit
        damaged.write_bytes(data)
        data[offset] ^= bit
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(damaged)
        assert str(damaged) in str(info.value), offset


def test_an_edited_trainer_state_is_caught(saved):
    header, body = split_file(saved.read_bytes())
    payload = json.loads(header["__metadata__"][METADATA_KEY])
    payload["trainer"]["trainer"]["step"] = 3
    header["__metadata__"][METADATA_KEY] = json.dumps(payload)  # not re-signed
    saved.write_bytes(join_file(header, body))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match"):
        load_checkpoint(saved)


def test_an_edit_that_parses_back_to_the_same_values_is_caught(saved):
    """The checksum covers the stored text: `1.5` -> `1.50` changes no value, yet is damage."""
    header, body = split_file(saved.read_bytes())
    text = header["__metadata__"][METADATA_KEY]
    edited = re.sub(r'("format_version":\s*)(\d+)', r"\g<1>\g<2>.0", text, count=1)
    assert edited != text and json.loads(edited) == json.loads(text)
    header["__metadata__"][METADATA_KEY] = edited
    saved.write_bytes(join_file(header, body))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match"):
        load_checkpoint(saved)


def test_swapped_tensor_shapes_are_caught(saved):
    header, body = split_file(saved.read_bytes())
    header["0.weight"]["shape"] = header["0.weight"]["shape"][::-1]
    saved.write_bytes(join_file(header, body))
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(saved)


def test_a_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(CheckpointError, match="is not a trainctl checkpoint: its header has no"):
        load_checkpoint(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_text("name: not a checkpoint\n" * 20)
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_checkpoint(path)


def test_bad_json_in_the_metadata(saved):
    set_metadata_text(saved, '{"format_version": 1, ')
    with pytest.raises(CheckpointError, match="the 'trainctl' metadata is not valid JSON"):
        load_checkpoint(saved)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", True, None])
def test_wrong_format_version(saved, version):
    rewrite_metadata(saved, lambda payload: payload.update(format_version=version))
    with pytest.raises(CheckpointError, match=f"has checkpoint format version {version!r}"):
        load_checkpoint(saved)


def test_metadata_that_is_not_an_object(saved):
    set_metadata_text(saved, "[1, 2]")
    with pytest.raises(CheckpointError, match="metadata is not a JSON object"):
        load_checkpoint(saved)


@pytest.mark.parametrize("dtype", ["I32", "BF16", "U8", "BOOL"])
def test_tensors_of_the_wrong_dtype(saved, dtype):
    header, body = split_file(saved.read_bytes())
    header["1.running_var"]["dtype"] = dtype  # 3 float32 = 12 bytes, re-read as another dtype
    header["1.running_var"]["shape"] = [12 // {"I32": 4, "BF16": 2, "U8": 1, "BOOL": 1}[dtype]]
    saved.write_bytes(join_file(header, body))
    with pytest.raises(CheckpointError, match=rf"1\.running_var \({dtype}\).*checkpoints hold"):
        load_checkpoint(saved)


def test_a_structurally_wrong_payload_with_a_valid_checksum(tmp_path):
    """A writer bug rather than damage: still a CheckpointError, not a KeyError."""
    path = tmp_path / "c.safetensors"
    text = json.dumps({"format_version": FORMAT_VERSION, "trainer": {}, "optimizer": []})
    metadata = {METADATA_KEY: text, DIGEST_KEY: _digest(text, {})}
    safetensors.numpy.save_file({}, path, metadata=metadata)
    with pytest.raises(CheckpointError, match="lacks a trainer object, an optimizer object"):
        load_checkpoint(path)


# ---------------------------------------------------------------- compatibility


def test_check_compatible_lists_every_problem(saved):
    checkpoint = load_checkpoint(saved)
    shapes = {name: array.shape for name, array in checkpoint.model_state.items()}
    check_compatible(checkpoint, shapes)
    changed = dict(shapes)
    del changed["1.bias"]
    changed["0.weight"] = (5, 16)
    changed["2.weight"] = (16, 3)
    with pytest.raises(CheckpointError) as info:
        check_compatible(checkpoint, changed)
    message = str(info.value)
    assert str(saved) in message
    assert "missing from the checkpoint: 2.weight" in message
    assert "not in the model: 1.bias" in message
    assert "0.weight is (5, 3) in the checkpoint, (5, 16) in the model" in message


# ---------------------------------------------------------------- a real crash

KILLED_SAVER = """
import sys
import numpy as np
from trainctl.train.checkpoint import save_checkpoint
opt = {"kind": "sgd", "step_count": 0, "hyperparameters": {}, "param_shapes": [], "state": {}}
step = 0
while True:
    step += 1
    save_checkpoint(sys.argv[1], {"w": np.full(200_000, step, np.float32)}, opt, {"step": step})
    print(step, flush=True)
"""


def test_sigkill_while_saving_leaves_a_readable_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    saver = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(5):  # let a few saves complete, then kill it mid-way through another
            saver.stdout.readline()
        time.sleep(0.003)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        saver.stdout.close()
    checkpoint = load_checkpoint(path)
    step = checkpoint.trainer_state["step"]
    assert step >= 5
    assert np.all(checkpoint.model_state["w"] == step)


def cuda_model(seed):
    return make_model(seed).to(backend.get_device("cuda"))


def cuda_batch(step):
    cuda = backend.get_device("cuda")
    inputs, labels = batch(step)
    return inputs.to(cuda), labels.to(cuda)


@pytest.mark.parametrize("kind", OPTIMIZERS)
@cuda_only
def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu_and_back(tmp_path, kind):
    model = cuda_model(seed=0)
    optimizer = OPTIMIZERS[kind](list(model.parameters()))
    for step in (0, 1):
        inputs, labels = cuda_batch(step)
        optimizer.zero_grad()
        nn.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    path = tmp_path / "gpu.safetensors"
    save_checkpoint(path, model.state_dict(), optimizer.state_dict(), TRAINER_STATE)
    checkpoint = load_checkpoint(path)
    gpu_state = {name: backend.to_host(a) for name, a in model.state_dict().items()}
    assert_same_arrays(checkpoint.model_state, gpu_state)

    on_cpu = make_model(seed=1)
    cpu_optimizer = OPTIMIZERS[kind](list(on_cpu.parameters()))
    on_cpu.load_state_dict(checkpoint.model_state)
    cpu_optimizer.load_state_dict(checkpoint.optimizer_state)
    assert_same_arrays(on_cpu.state_dict(), gpu_state)
    # Two devices sum in different orders: the continuations agree closely, not bitwise.
    cpu_loss = train_steps(on_cpu, cpu_optimizer, [2, 3])

    path_back = tmp_path / "cpu.safetensors"
    save_checkpoint(path_back, on_cpu.state_dict(), cpu_optimizer.state_dict(), TRAINER_STATE)
    back = load_checkpoint(path_back)
    on_gpu = cuda_model(seed=2)
    gpu_optimizer = OPTIMIZERS[kind](list(on_gpu.parameters()))
    on_gpu.load_state_dict(back.model_state)
    gpu_optimizer.load_state_dict(back.optimizer_state)
    assert_same_arrays(
        {name: backend.to_host(a) for name, a in on_gpu.state_dict().items()}, on_cpu.state_dict()
    )
    inputs, labels = cuda_batch(4)
    gpu_loss = float(nn.cross_entropy(on_gpu(inputs), labels).numpy())
    assert np.isfinite(gpu_loss) and np.isfinite(cpu_loss)
    assert gpu_loss == pytest.approx(
        float(nn.cross_entropy(on_cpu(batch(4)[0]), batch(4)[1]).numpy()), rel=1e-5
    )
