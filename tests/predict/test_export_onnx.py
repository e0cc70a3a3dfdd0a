"""`trainctl export RUN --format onnx`: the exported model, run by onnxruntime, gives what
`predict` gives, on every layer, at batch sizes 1 and 7, with the run's normalize inside."""

import json
from pathlib import Path

import numpy as np
import pytest
from predict_files import train
from typer.testing import CliRunner

import trainctl
from trainctl.autograd import ops
from trainctl.cli import app

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DIGITS = """\
name: {name}
data:
  dataset: digits
  batch_size: 16
  transforms: [{{normalize: {{mean: 0.3, std: 0.4}}}}]
model:
  layers: {layers}
train: {{max_steps: 4}}
"""

# Between them, every layer a config can name but embedding (integer inputs; its op, gather_rows,
# is checked in tests/autograd/test_ops_onnx.py).
LAYER_STACKS = {
    "dense": "[flatten, linear: {out: 12}, batch_norm, leaky_relu: {slope: 0.1}, "
    "dropout: {p: 0.3}, linear: {out: 12}, layer_norm, gelu, linear: {out: 12}, tanh, "
    "linear: {out: 12}, sigmoid, linear: {out: 10}, softmax]",
    "conv": "[conv2d: {out: 6, kernel: 3, padding: 1}, batch_norm, relu, max_pool2d: {kernel: 2}, "
    "residual: [conv2d: {out: 6, kernel: 3, padding: 1}, relu], "
    "conv2d: {out: 8, kernel: 2, stride: 2}, avg_pool2d: {kernel: 1}, global_avg_pool, "
    "linear: {out: 10}]",
}


def export(run: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["export", str(run), *args])
    assert result.exit_code == 0, result.output
    return Path(result.output.split("wrote ", 1)[1].split(":", 1)[0])


def check_against_predict(run: Path, samples) -> onnx.ModelProto:
    path = export(run)
    session = ort.InferenceSession(str(path))
    model = trainctl.load(run)
    for batch in (1, 7):
        x = samples(batch)
        expected = model.predict(x)
        outputs = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {"inputs": x}), strict=True))  # fmt: skip
        np.testing.assert_allclose(outputs["outputs"], expected, rtol=1e-5, atol=1e-5)
        if "probabilities" in outputs:
            z = expected - expected.max(axis=-1, keepdims=True)  # per position for sequences
            softmax = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
            np.testing.assert_allclose(outputs["probabilities"], softmax, rtol=1e-5, atol=1e-6)
    return onnx.load(path)


def random_inputs(shape, dtype=np.float32):
    return lambda n: np.random.default_rng(n).random((n, *shape)).astype(dtype)


def random_tokens(shape, vocabulary):
    return lambda n: np.random.default_rng(n).integers(0, vocabulary, (n, *shape))


@pytest.mark.parametrize("stack", sorted(LAYER_STACKS))
def test_every_layer_exports_and_matches_predict(tmp_path, stack):
    run = train(tmp_path, DIGITS.format(name=stack, layers=LAYER_STACKS[stack]))
    model = check_against_predict(run, random_inputs((8, 8, 1)))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["config_name"] == stack
    assert json.loads(metadata["classes"]) == [str(c) for c in range(10)]
    assert metadata["input_layout"] == "NHWC"
    assert metadata["trainctl_version"] == trainctl.__version__
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_batch_norm_dropout_and_normalize_features(npz_run):
    check_against_predict(npz_run, random_inputs((5,)))


def test_regression_has_no_probabilities(table_run):
    model = check_against_predict(table_run, random_inputs((3,)))
    assert [o.name for o in model.graph.output] == ["outputs"]
    assert {p.key: p.value for p in model.metadata_props}["task"] == "regression"


def test_per_channel_normalize_of_images(image_run):
    check_against_predict(image_run, random_inputs((6, 6, 3)))


def test_an_op_without_a_lowering_names_the_op_and_the_layer(tmp_path, monkeypatch):
    run = train(tmp_path, DIGITS.format(name="mlp", layers="[flatten, linear: {out: 4}, relu, "
                                                         "linear: {out: 10}]"))  # fmt: skip
    monkeypatch.delattr(ops.Relu, "onnx")
    result = CliRunner().invoke(app, ["export", str(run)])
    assert result.exit_code == 2
    assert "op relu (in layer 2_ReLU) has no ONNX lowering" in result.output
    assert not (run / "model.onnx").exists()


def test_without_the_onnx_package_the_message_names_the_extra(npz_run, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    result = CliRunner().invoke(app, ["export", str(npz_run), "-o", "x.onnx"])
    assert result.exit_code == 2
    assert "pip install 'trainctl[export]'" in result.output


def test_an_unknown_format_is_refused(npz_run):
    result = CliRunner().invoke(app, ["export", str(npz_run), "--format", "savedmodel"])
    assert result.exit_code == 2
    assert "unknown format 'savedmodel': expected one of onnx" in result.output


def test_a_folder_given_as_the_output_is_one_line(npz_run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(npz_run), "-o", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"-o {tmp_path} is a folder: give the file to write, e.g. {tmp_path / 'model.onnx'}\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(npz_run, tmp_path):
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "model.onnx"  # under a file: no folder can be made there
    result = CliRunner().invoke(app, ["export", str(npz_run), "-o", str(target)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"cannot write {target}: ")
    assert len(result.stderr.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_the_model_file_is_written_whole_with_nothing_beside_it(npz_run, tmp_path, monkeypatch):
    """Written to a temporary file and renamed: a failed write keeps the previous model."""
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous model")
    monkeypatch.setattr("os.fsync", _failing_fsync)
    result = CliRunner().invoke(app, ["export", str(npz_run), "-o", str(target)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"cannot write {target}: No space left on device\n"
    assert target.read_bytes() == b"the previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["export", str(npz_run), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert onnx.load(str(target)).graph.output[0].name == "outputs"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def _failing_fsync(fd: int) -> None:
    raise OSError(28, "No space left on device")


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_config_exports_and_matches_predict(tmp_path, path):
    """Trained for two steps (the downloaded sets replaced by small files in their formats)."""
    from data_files import stand_in_data

    overrides = ["train.max_steps=2", "data.batch_size=4"]
    overrides += stand_in_data(path.stem, tmp_path / "data")
    args = [x for o in overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, ["train", str(path), "--runs-root", str(tmp_path / "runs"),
                                      "-q", *args])  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    if path.stem == "digits_branching":  # a Python `if` on a value: no static graph to export
        refused = CliRunner().invoke(app, ["export", str(run)])
        assert refused.exit_code == 2
        assert "ONNX export records the model once, without data: a Python `if`" in refused.output
        return
    given = trainctl.load(run).input
    if given.dtype.kind == "i":  # token ids (the text data set)
        samples = random_tokens(given.shape, len(given.class_names))
    else:
        samples = random_inputs(given.shape)
    model = check_against_predict(run, samples)
    metadata = {p.key: p.value for p in model.metadata_props}
    if (run / "preprocessing.json").exists():  # a table: the encoder travels as metadata
        stored = json.loads((run / "preprocessing.json").read_text())
        assert json.loads(metadata["preprocessing"]) == stored
