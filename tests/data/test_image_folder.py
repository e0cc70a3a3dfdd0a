"""The image_folder data set: class folders, split folders, resizing, colour, bad files, and
pixels decoded only when a batch asks for them."""

import sys
import threading
import time

import numpy as np
import pytest
from data_files import write_image_folder

from trainctl.data import DataError, Loader, imagefolder, load_splits
from trainctl.data.identity import split_identity

PIL = pytest.importorskip("PIL.Image")


def load(path, val_split=0.0, test_split=0.0, **options):
    return load_splits("image_folder", options, str(path), val_split, test_split, seed=0)


@pytest.fixture
def decoded(monkeypatch):
    """The files decoded so far, and by which thread, in order."""
    calls = []
    original = imagefolder.decode

    def counting(path, size, channels):
        calls.append((path, threading.current_thread().name))
        return original(path, size, channels)

    monkeypatch.setattr(imagefolder, "decode", counting)
    return calls


def test_class_indices_are_the_folder_names_sorted(tmp_path):
    write_image_folder(tmp_path, classes=("owl", "dog", "cat"))
    splits = load(tmp_path, size=[4, 4])
    assert splits.class_names == ("cat", "dog", "owl")
    assert splits.num_classes == 3 and splits.task == "classification"
    files = splits.train.inputs.files
    names = [splits.class_names[label] for label in splits.train.targets]
    assert names == [path.parent.name for path in files]
    assert sorted(names) == ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 4


def test_images_are_resized_nhwc_float32_in_0_1(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog"))
    splits = load(tmp_path, size=[5, 7])
    assert splits.input_shape == (5, 7, 3)
    x = splits.train.inputs[np.arange(len(splits.train))]
    assert x.shape == (8, 5, 7, 3) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    red, blue = x[..., 0].mean(axis=(1, 2)), x[..., 2].mean(axis=(1, 2))
    is_cat = splits.train.targets == splits.class_names.index("cat")
    assert (red[is_cat] > blue[is_cat]).all() and (red[~is_cat] < blue[~is_cat]).all()


def test_grayscale_has_one_channel_with_the_luminance(tmp_path):
    paths = write_image_folder(tmp_path, classes=("cat",), per_class=1)
    splits = load(tmp_path, size=[6, 8], channels=1)
    assert splits.input_shape == (6, 8, 1)
    expected = np.asarray(PIL.open(paths["cat"][0]).convert("L"), np.float32) / 255
    np.testing.assert_allclose(splits.train.inputs[:1][0, ..., 0], expected)


def test_images_of_one_size_need_no_size_option(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        PIL.new("RGB", (9, 4), (10, 20, 30)).save(tmp_path / name / "x.png")
    splits = load(tmp_path)
    assert splits.input_shape == (4, 9, 3)
    np.testing.assert_allclose(splits.train.inputs[:1][0, 0, 0], np.array([10, 20, 30]) / 255)


def test_images_of_several_sizes_without_a_size_option_name_the_file(tmp_path):
    paths = write_image_folder(tmp_path, classes=("cat",), per_class=2)
    with pytest.raises(DataError, match=r"img1\.jpg: 9x8 pixels, but .*img0\.png is 8x6") as exc:
        load(tmp_path)
    assert "data.options.size" in str(exc.value) and str(paths["cat"][1]) in str(exc.value)


def test_train_val_test_folders_are_the_splits_and_fractions_are_not_used(tmp_path):
    write_image_folder(tmp_path / "train", per_class=4)
    write_image_folder(tmp_path / "val", classes=("cat", "dog"), per_class=2, seed=1)
    write_image_folder(tmp_path / "test", classes=("owl",), per_class=3, seed=2)
    splits = load(tmp_path, val_split=0.5, test_split=0.5, size=[4, 4])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 3)
    assert splits.class_names == ("cat", "dog", "owl")
    assert all(path.parts[-3] == "val" for path in splits.val.inputs.files)
    assert set(splits.test.targets) == {2}  # owl, by the training classes' indices
    assert "train, val, test folders" in splits.source


def test_a_missing_split_folder_is_carved_by_its_fraction(tmp_path):
    write_image_folder(tmp_path / "train", per_class=4)
    write_image_folder(tmp_path / "val", per_class=1, seed=1)
    splits = load(tmp_path, val_split=0.5, test_split=0.25, size=[4, 4])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)
    assert all(path.parts[-3] == "train" for path in splits.test.inputs.files)


def test_without_split_folders_the_fractions_carve_all_three(tmp_path):
    write_image_folder(tmp_path, per_class=4)
    splits = load(tmp_path, val_split=0.25, test_split=0.25, size=[4, 4])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 3)
    everything = [*splits.train.inputs.files, *splits.val.inputs.files, *splits.test.inputs.files]
    assert len(set(everything)) == 12


def test_a_class_that_training_has_not_got_is_an_error(tmp_path):
    write_image_folder(tmp_path / "train", classes=("cat", "dog"), per_class=1)
    write_image_folder(tmp_path / "test", classes=("owl",), per_class=1)
    with pytest.raises(DataError, match=r"test/owl: class 'owl' is not one of the training"):
        load(tmp_path, size=[4, 4])


@pytest.mark.parametrize(
    "layout", [lambda p: None, lambda p: (p / "notes.txt").write_text("x")], ids=["empty", "file"]
)
def test_a_folder_without_class_folders_is_an_error(tmp_path, layout):
    layout(tmp_path)
    with pytest.raises(DataError, match=r"no class folders; expected .*/CLASS_NAME/\*\.png"):
        load(tmp_path)


def _truncated_png(path):
    PIL.new("RGB", (16, 16), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:-30])


def _truncated_jpeg(path):
    """Cut in its pixel data, past the headers: Pillow opens it, the end marker is missing."""
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    PIL.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[:-100])


BAD_FILES = {
    "truncated.png": _truncated_png,
    "truncated.jpg": _truncated_jpeg,
    "text.png": lambda path: path.write_text("not an image"),
    "empty.jpeg": lambda path: path.write_bytes(b""),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_an_unreadable_image_is_an_error_naming_the_file(tmp_path, name):
    write_image_folder(tmp_path, classes=("cat", "dog"), per_class=2)
    BAD_FILES[name](tmp_path / "dog" / name)
    with pytest.raises(DataError) as exc:
        load(tmp_path, size=[4, 4])
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'dog' / name}: ") and "\n" not in message
    assert "skip_bad: true" in message


def test_skip_bad_leaves_the_unreadable_files_out_and_counts_them(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog"), per_class=2)
    for name, write in BAD_FILES.items():
        write(tmp_path / "cat" / name)
    splits = load(tmp_path, size=[4, 4], skip_bad=True)
    assert len(splits.train) == 4
    assert len(splits.skipped_files) == len(BAD_FILES)
    assert all(str(tmp_path / "cat") in line for line in splits.skipped_files)
    write_image_folder(tmp_path / "good", classes=("cat",), per_class=1)
    assert load(tmp_path / "good", size=[4, 4], skip_bad=True).skipped_files == ()
    assert load(tmp_path / "good", size=[4, 4]).skipped_files is None


def test_a_file_spoiled_after_loading_fails_its_batch_naming_it(tmp_path):
    write_image_folder(tmp_path, classes=("cat",), per_class=2)
    splits = load(tmp_path, size=[4, 4])
    spoiled = splits.train.inputs.files[1]
    spoiled.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"^{spoiled}: cannot decode the image"):
        splits.train.inputs[1:]


def test_loading_splitting_and_fingerprinting_decode_nothing(tmp_path, decoded):
    write_image_folder(tmp_path, per_class=4)
    splits = load(tmp_path, val_split=0.25, test_split=0.25, size=[4, 4])
    split_identity(splits)
    assert decoded == []
    splits.val.inputs[np.array([2, 0])]
    assert [path for path, _ in decoded] == [splits.val.inputs.files[i] for i in (2, 0)]


def test_the_fingerprint_changes_with_a_file(tmp_path):
    paths = write_image_folder(tmp_path, per_class=2)
    before = split_identity(load(tmp_path, size=[4, 4]))
    assert split_identity(load(tmp_path, size=[4, 4])) == before
    PIL.new("RGB", (30, 30)).save(paths["owl"][0])
    assert split_identity(load(tmp_path, size=[4, 4]))["train"] != before["train"]


def test_each_batch_decodes_its_own_images_in_the_prefetch_thread(tmp_path, decoded):
    write_image_folder(tmp_path, per_class=4)
    splits = load(tmp_path, size=[4, 4])
    loader = Loader(splits.train, 2, shuffle=True, drop_last=False, seed=0, prefetch=1)
    decoded.clear()  # the loader fits its transforms to one sample
    batches = loader.epoch(0)
    first = next(batches)
    time.sleep(0.2)  # one batch waits in the queue, the thread holds the next: no more
    assert 2 <= len(decoded) <= 6 and len(first[0]) == 2
    assert {thread for _, thread in decoded} == {"trainctl-loader-epoch-0"}
    rest = list(batches)
    assert len(decoded) == 12 and len(rest) == 5


def test_the_step_does_not_wait_while_decoding_keeps_up(tmp_path):
    write_image_folder(tmp_path, per_class=4)
    splits = load(tmp_path, size=[16, 16])
    loader = Loader(splits.train, 2, shuffle=True, drop_last=False, seed=0, prefetch=2)
    step_seconds = 0.05
    for _ in loader.epoch(0):
        time.sleep(step_seconds)  # the training step
    batches = loader.batches_per_epoch
    assert loader.wait_seconds < 0.25 * step_seconds * batches


def test_options_are_checked(tmp_path):
    write_image_folder(tmp_path, per_class=1)
    for options, message in [
        ({"size": [4]}, "option size: expected a list of 2 integers >= 1 or null, found a list"),
        ({"size": [0, 4]}, "option size: expected a list of 2 integers >= 1"),
        ({"channels": 2}, "option channels: expected one of 1, 3, found 2"),
        ({"colour": "rgb"}, "image_folder takes no argument 'colour'"),
    ]:
        with pytest.raises(DataError, match=message):
            load(tmp_path, **options)


def test_without_pillow_the_error_names_the_extra(tmp_path, monkeypatch):
    write_image_folder(tmp_path, per_class=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DataError, match=r"Pillow, which is not installed: .*trainctl\[images\]"):
        load(tmp_path, size=[4, 4])
