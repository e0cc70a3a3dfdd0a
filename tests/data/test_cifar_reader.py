"""CIFAR-10 binary batches: CHW records become NHWC images; broken files are named."""

import numpy as np
import pytest
from data_files import cifar_bytes, write_cifar

from trainctl.data import DataError, load_splits


def load(path):
    return load_splits("cifar10", {}, str(path), val_split=0.0, test_split=0.0, seed=0)


@pytest.mark.parametrize("subfolder", [False, True])
def test_reads_batches_as_nhwc(tmp_path, subfolder):
    folder = tmp_path / "cifar-10-batches-bin" if subfolder else tmp_path
    written = write_cifar(folder, per_batch=2, test_size=3)
    splits = load(tmp_path)
    assert splits.train.inputs.shape == (10, 32, 32, 3)
    assert splits.test.inputs.shape == (3, 32, 32, 3)
    for part, (images_chw, labels) in (
        (splits.train, written["train"]),
        (splits.test, written["test"]),
    ):
        np.testing.assert_array_equal(part.targets, labels)
        # pixel (row h, column w, channel c) is byte c*1024 + h*32 + w of the image
        expected = images_chw.transpose(0, 2, 3, 1).astype(np.float32) / 255
        np.testing.assert_allclose(part.inputs, expected, rtol=0, atol=1e-7)
    assert splits.train.inputs.dtype == np.float32
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 10
    assert str(folder) in splits.source


def test_channel_order_of_one_known_pixel(tmp_path):
    write_cifar(tmp_path, per_batch=1, test_size=1)
    image = np.zeros((1, 3, 32, 32), np.uint8)
    image[0, :, 5, 7] = (10, 20, 30)  # red, green, blue of the pixel at row 5, column 7
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_bytes(image, np.array([4])))
    first = load(tmp_path).train.inputs[0]
    np.testing.assert_allclose(first[5, 7] * 255, (10, 20, 30), atol=1e-4)
    assert np.count_nonzero(first) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes, expected a non-zero multiple of 3073"),
        (bytes(3073 * 2 - 5), "6141 bytes, expected a non-zero multiple of 3073"),
        (bytes([10]) + bytes(3072), "record 0 has label 10, expected 0..9"),
    ],
)
def test_broken_batch_files(tmp_path, data, message):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(data)
    with pytest.raises(DataError) as caught:
        load(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'data_batch_3.bin'}: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("missing", ["data_batch_4.bin", "test_batch.bin"])
def test_missing_batch_names_the_file_and_the_download(tmp_path, missing):
    write_cifar(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(DataError) as caught:
        load(tmp_path)
    text = str(caught.value)
    assert f"in {tmp_path}: expected {missing}" in text
    assert "get it from `trainctl data fetch cifar10` (or data.download: true)" in text


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist: expected a folder holding the CIFAR-10"):
        load(tmp_path / "cifar")
