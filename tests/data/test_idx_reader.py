"""MNIST / Fashion-MNIST IDX files, gzipped and plain, and every way they can be broken."""

import gzip

import numpy as np
import pytest
from data_files import MNIST_NAMES, idx_bytes, write, write_mnist

from trainctl.data import DataError, load_splits
from trainctl.data.idx import read_idx


def load(folder, dataset="mnist", **kwargs):
    options = {"val_split": 0.0, "test_split": 0.0, "seed": 0, **kwargs}
    return load_splits(dataset, {}, str(folder), **options)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_reads_images_and_labels(tmp_path, gz, dataset):
    written = write_mnist(tmp_path, sizes=(7, 3), gz=gz)
    splits = load(tmp_path, dataset)
    for part, (images, labels) in (
        (splits.train, written["train"]),
        (splits.test, written["test"]),
    ):
        assert part.inputs.shape == (len(labels), 28, 28, 1)
        assert part.inputs.dtype == np.float32
        np.testing.assert_allclose(part.inputs[..., 0] * 255, images, atol=1e-4)
        np.testing.assert_array_equal(part.targets, labels)
        assert part.targets.dtype == np.int64
    assert splits.num_classes == 10 and splits.task == "classification"
    assert splits.input_shape == (28, 28, 1)
    suffix = ".gz" if gz else ""
    assert f"train-images-idx3-ubyte{suffix}" in splits.source and str(tmp_path) in splits.source


def test_own_test_split_wins_over_test_split(tmp_path):
    write_mnist(tmp_path, sizes=(10, 4))
    splits = load(tmp_path, test_split=0.5, val_split=0.2)
    assert len(splits.test) == 4
    assert len(splits.val) == 2 and len(splits.train) == 8


def test_plain_file_preferred_and_mixed_compression(tmp_path):
    written = write_mnist(tmp_path, sizes=(5, 2), gz=True)
    images, labels = written["test"]
    write(tmp_path / MNIST_NAMES["test"][1], idx_bytes(labels), gz=False)
    (tmp_path / (MNIST_NAMES["test"][1] + ".gz")).write_bytes(b"not gzip at all")
    splits = load(tmp_path)
    np.testing.assert_array_equal(splits.test.targets, labels)


def replace(folder, name, data):
    for stale in (folder / name, folder / (name + ".gz")):
        stale.unlink(missing_ok=True)
    (folder / name).write_bytes(data)


TRAIN_IMAGES, TRAIN_LABELS = MNIST_NAMES["train"]


def bad_magic(folder):
    replace(folder, TRAIN_IMAGES, idx_bytes(np.zeros(6 * 28 * 28)))


def truncated(folder):
    data = idx_bytes(np.zeros((6, 28, 28)))
    replace(folder, TRAIN_IMAGES, data[:-100])


def trailing(folder):
    replace(folder, TRAIN_IMAGES, idx_bytes(np.zeros((6, 28, 28))) + b"\0\0")


def short_header(folder):
    replace(folder, TRAIN_LABELS, b"\0\0\x08\x01\0")


def wrong_size(folder):
    replace(folder, TRAIN_IMAGES, idx_bytes(np.zeros((6, 27, 28))))


def count_mismatch(folder):
    replace(folder, TRAIN_LABELS, idx_bytes(np.zeros(5)))


def label_out_of_range(folder):
    replace(folder, TRAIN_LABELS, idx_bytes(np.array([1, 2, 3, 10, 4, 5])))


def gzip_named_plain(folder):
    replace(folder, TRAIN_IMAGES, gzip.compress(idx_bytes(np.zeros((6, 28, 28)))))


def bad_gzip(folder):
    (folder / TRAIN_IMAGES).unlink(missing_ok=True)
    (folder / (TRAIN_IMAGES + ".gz")).write_bytes(b"<html>403 Forbidden</html>")


def truncated_gzip(folder):
    data = gzip.compress(idx_bytes(np.arange(6 * 28 * 28).reshape(6, 28, 28) % 256))
    (folder / TRAIN_IMAGES).unlink(missing_ok=True)
    (folder / (TRAIN_IMAGES + ".gz")).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("corrupt", "file", "message"),
    [
        (bad_magic, TRAIN_IMAGES, "bad magic number 0x00000801, expected 0x00000803"),
        (truncated, TRAIN_IMAGES, "4620 bytes, expected 4720 for shape 6x28x28 (truncated)"),
        (trailing, TRAIN_IMAGES, "(trailing bytes)"),
        (short_header, TRAIN_LABELS, "truncated: 5 bytes, shorter than an IDX header"),
        (wrong_size, TRAIN_IMAGES, "images of 27x28 pixels, expected 28x28"),
        (count_mismatch, TRAIN_LABELS, "5 labels for the 6 images in train-images-idx3-ubyte"),
        (label_out_of_range, TRAIN_LABELS, "label 10 at index 3, expected 0..9"),
        (gzip_named_plain, TRAIN_IMAGES, "the data is gzipped: name the file .gz"),
        (bad_gzip, TRAIN_IMAGES + ".gz", "not a valid gzip file"),
        (truncated_gzip, TRAIN_IMAGES + ".gz", "not a valid gzip file"),
    ],
)
def test_corrupt_files_name_the_file_and_the_problem(tmp_path, corrupt, file, message):
    write_mnist(tmp_path, sizes=(6, 2))
    corrupt(tmp_path)
    with pytest.raises(DataError) as caught:
        load(tmp_path)
    text = str(caught.value)
    assert text.startswith(str(tmp_path / file) + ":")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("dataset", "url"),
    [
        ("mnist", "get it from `trainctl data fetch mnist` (or data.download: true)"),
        ("fashion_mnist", "get it from `trainctl data fetch fashion_mnist`"),
    ],
)
def test_missing_file_says_what_is_expected_where_and_where_to_get_it(tmp_path, dataset, url):
    write_mnist(tmp_path, sizes=(3, 2))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as caught:
        load(tmp_path, dataset)
    text = str(caught.value)
    assert f"in {tmp_path}" in text
    assert "t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz" in text
    assert url in text


def test_missing_folder_and_a_file_instead_of_a_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist: expected a folder holding the MNIST"):
        load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load(tmp_path / "file")


def test_read_idx_checks_the_number_of_dimensions(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(4)))
    np.testing.assert_array_equal(read_idx(path, 1), np.arange(4))
    with pytest.raises(DataError, match="expected 0x00000803"):
        read_idx(path, 3)
