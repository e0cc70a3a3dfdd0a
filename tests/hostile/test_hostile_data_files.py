"""Damaged data files (IDX, CIFAR-10 binary, npz, csv): refused with one line naming the file.

Every variant goes through the reader (`load_splits`): it loads, or raises a DataError of one
line that names the file; nothing else escapes. A seeded sample of them also goes through
`trainctl validate --build`, which must then exit 2 naming the file, and modify nothing in the
folder. A pickled object array never runs (its payload would create a marker file), and an
archive that declares a huge array, or decompresses past memory, is refused before it is read.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_files import cifar_bytes, idx_bytes, write_cifar, write_mnist
from hostile_files import (
    HOSTILE_NPZ,
    bit_flips,
    npy_bytes,
    npy_header,
    truncations,
    zip_of,
)
from hostile_helpers import MARKER, TALLY, assert_user_error, invoke, snapshot

from trainctl.data import files as data_files_module
from trainctl.data import load_splits
from trainctl.errors import DataError

CLI_SAMPLE = 12  # of each format's variants, this many also go through the CLI


def outcome(dataset: str, path: Path, options: dict | None = None) -> str | None:
    """None when the data loads; else the DataError's message, checked to be one line
    naming `path`. Any other exception fails the test."""
    try:
        load_splits(dataset, options or {}, str(path), 0.0, 0.0, 0)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert str(path) in message, message
        return message
    return None


def config_for(folder: Path, dataset: str, path: Path, options: dict | None = None) -> Path:
    """A config that reads `path` and fits any 10-class data set."""
    config = folder / "config.yaml"
    config.write_text(
        f"name: hostile\ndata: {{dataset: {dataset}, path: '{path}', options: {options or {}}, "
        "val_split: 0, test_split: 0}\n"
        "model: {layers: [flatten, {linear: {out: 10}}]}\n"
        "train: {max_steps: 1}\n"
    )
    return config


def check_through_cli(
    folder: Path, dataset: str, path: Path, refused: str | None, options: dict | None = None
) -> None:
    """`trainctl validate --build` agrees with the reader and modifies nothing."""
    config = config_for(folder, dataset, path, options)
    before = snapshot(folder)
    result = invoke("validate", config, "--build")
    assert snapshot(folder) == before
    assert "Traceback" not in result.output, result.output
    if refused is not None:
        assert_user_error(result, path)
    else:
        assert result.exit_code in (0, 2), result.output  # 2: a model that does not fit
    TALLY["hostile files through the CLI"] += 1


def run_variants(
    tmp_path: Path,
    variants: list[bytes],
    place: Callable[[bytes], Path],
    dataset: str,
    options: dict | None = None,
) -> list[str | None]:
    """Each variant through the reader, a seeded sample also through the CLI; the outcomes."""
    picks = np.random.default_rng(len(variants)).choice(len(variants), CLI_SAMPLE, replace=False)
    sample = set(picks.tolist())
    outcomes = []
    for index, data in enumerate(variants):
        path = place(data)
        TALLY["hostile files"] += 1
        before = path.read_bytes() if path.is_file() else None
        refused = outcome(
            dataset, path.parent if dataset in ("mnist", "cifar10") else path, options
        )
        assert (path.read_bytes() if path.is_file() else None) == before
        if index in sample:
            target = path.parent if dataset in ("mnist", "cifar10") else path
            check_through_cli(tmp_path, dataset, target, refused, options)
        outcomes.append(refused)
    return outcomes


# ---------------------------------------------------------------- IDX (MNIST)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("member", [0, 1, 2, 3])
def test_damaged_idx_files(tmp_path, member, gz):
    folder = tmp_path / "mnist"
    write_mnist(folder, sizes=(3, 2), gz=gz)
    target = sorted(folder.iterdir())[member]
    good = target.read_bytes()
    idx_header = 16 if "images" in target.name else 8  # magic and 3 or 1 dimensions
    header = 40 if gz else idx_header  # gzip: its own header, then the IDX header compressed

    def place(data: bytes) -> Path:
        target.write_bytes(data)
        return target

    cuts, flips = list(truncations(good, header)), list(bit_flips(good, header))
    outcomes = run_variants(tmp_path, [*cuts, *flips], place, "mnist")
    assert all(outcomes[: len(cuts)])  # a file cut short, anywhere
    if not gz:  # (gzip does not check its own header: a flipped time stamp goes unnoticed)
        assert all(outcomes[len(cuts) : len(cuts) + 8 * idx_header])  # any flip in the header


def test_idx_files_of_the_wrong_format(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, sizes=(3, 2))
    target = folder / "train-images-idx3-ubyte"
    images = np.zeros((3, 28, 28), np.uint8)
    wrong = [
        b"",
        b"not an IDX file at all\n",
        idx_bytes(np.zeros((3, 28), np.uint8)),  # two dimensions, images need three
        idx_bytes(np.zeros((3, 27, 27), np.uint8)),  # wrong image size
        idx_bytes(images)[:4] + (2**32 - 1).to_bytes(4, "big") + idx_bytes(images)[8:],
        gzip.compress(idx_bytes(images)),  # gzipped but not named .gz
        cifar_bytes(np.zeros((1, 3, 32, 32)), np.zeros(1)),
        npy_bytes(images),
    ]
    for data in wrong:
        target.write_bytes(data)
        TALLY["hostile files"] += 1
        assert outcome("mnist", folder) is not None
        check_through_cli(tmp_path, "mnist", folder, "refused")


# ---------------------------------------------------------------- CIFAR-10 binary


def test_damaged_cifar_batches(tmp_path):
    folder = tmp_path / "cifar"
    write_cifar(folder, per_batch=2, test_size=2)
    target = folder / "data_batch_3.bin"
    good = target.read_bytes()

    def place(data: bytes) -> Path:
        target.write_bytes(data)
        return target

    cuts = list(truncations(good, 3, extra=20))
    wrong = [good + b"\x00", b"", b"\x0a" + good[1:]]  # a byte too many, none, label 10
    damaged = [*cuts, *bit_flips(good, 1, extra=40), *wrong]
    outcomes = run_variants(tmp_path, damaged, place, "cifar10")
    # Cut at a record boundary, a batch is only shorter; cut anywhere else, it is refused.
    assert all(o for o, cut in zip(outcomes[: len(cuts)], cuts, strict=True) if len(cut) % 3073)
    assert all(outcomes[-len(wrong) :])
    label_flips = outcomes[len(cuts) : len(cuts) + 8]  # the first record's label byte
    assert all(label_flips[4:])  # a high bit makes the label 16 or more


# ---------------------------------------------------------------- npz


def good_npz(compressed: bool) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {
        "x.npy": npy_bytes(rng.random((6, 4), dtype=np.float32)),
        "y.npy": npy_bytes(np.arange(6) % 3),
    }
    return zip_of(arrays, compressed)


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_damaged_npz_archives(tmp_path, compressed):
    """Every byte of the archive flipped, and every truncation: zip metadata, .npy headers
    and data alike."""
    good = good_npz(compressed)
    target = tmp_path / "data.npz"

    def place(data: bytes) -> Path:
        target.write_bytes(data)
        return target

    damaged = [*truncations(good, len(good)), *bit_flips(good, len(good) // 3, extra=60)]
    outcomes = run_variants(tmp_path, damaged, place, "npz", {"task": "classification"})
    assert all(outcomes[: len(good)])  # every truncation: the zip directory is at the end


@pytest.mark.parametrize("case", sorted(HOSTILE_NPZ))
def test_hostile_npz_archives(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.npz"
    path.write_bytes(HOSTILE_NPZ[case]())
    TALLY["hostile files"] += 1
    assert outcome("npz", path) is not None
    check_through_cli(tmp_path, "npz", path, "refused")
    assert not (tmp_path / MARKER).exists(), "an object was unpickled"


def test_an_archive_larger_than_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A zip bomb: 8 MB of zeros deflate to 8 kB; with memory "2 MB" it is not inflated."""
    path = tmp_path / "data.npz"
    path.write_bytes(
        zip_of(
            {"x.npy": npy_bytes(np.zeros((2**20, 1))), "y.npy": npy_bytes(np.zeros(2**20))},
            compressed=True,
        )
    )
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(data_files_module, "memory_bytes", lambda: 2**21)
    TALLY["hostile files"] += 1
    message = outcome("npz", path)
    assert message is not None and "memory" in message


def test_a_gzip_bomb_is_not_inflated_past_memory(tmp_path, monkeypatch):
    path = tmp_path / "table.csv.gz"
    path.write_bytes(gzip.compress(b"1,2\n" * 2**21))
    monkeypatch.setattr(data_files_module, "memory_bytes", lambda: 2**20)
    TALLY["hostile files"] += 1
    message = outcome("csv", path)
    assert message is not None and "memory" in message


# ---------------------------------------------------------------- csv


def test_damaged_csv_tables(tmp_path):
    rng = np.random.default_rng(1)
    rows = "\n".join(
        ",".join(f"{v:.3f}" for v in row) + f",{i % 3}" for i, row in enumerate(rng.random((8, 3)))
    )
    good = ("a,b,c,label\n" + rows + "\n").encode()
    target = tmp_path / "table.csv"

    def place(data: bytes) -> Path:
        target.write_bytes(data)
        return target

    damaged = [*truncations(good, 14, extra=12), *bit_flips(good, 14, extra=60)]
    run_variants(tmp_path, damaged, place, "csv")


HOSTILE_CSV = {
    "binary": bytes(range(256)),
    "latin1": "a,b\n1,caf\xe9\n".encode("latin-1"),
    "utf16": "a,b\n1,2\n".encode("utf-16"),
    "nan": b"a,b\n1,nan\n2,3\n",
    "inf": b"a,b\n1,1e999\n2,3\n",
    "beyond_float32": b"a,b\n1e300,1\n2,0\n",
    "ragged": b"a,b\n1,2\n3\n",
    "one_column": b"a\n1\n2\n",
    "header_only": b"a,b\n",
    "empty": b"",
    "blank_lines": b"\n\n  \n",
    "quotes": b'a,b\n"1,2\n',
    "nul": b"a,b\n1,\x002\n",
    "huge_field": b"a,b\n" + b"9" * 100_000 + b",1\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CSV))
def test_hostile_csv_tables(tmp_path, case):
    path = tmp_path / "table.csv"
    path.write_bytes(HOSTILE_CSV[case])
    TALLY["hostile files"] += 1
    assert outcome("csv", path) is not None
    check_through_cli(tmp_path, "csv", path, "refused")


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "npz", "csv"])
def test_a_folder_or_a_missing_file_is_named(tmp_path, dataset):
    for path in (tmp_path / "missing", tmp_path / "empty-folder"):
        if path.name == "empty-folder":
            path.mkdir()
        TALLY["hostile files"] += 1
        assert outcome(dataset, path) is not None
        check_through_cli(tmp_path, dataset, path, "refused")


def test_nothing_is_unpickled_by_any_reader_in_the_package():
    """The source never turns allow_pickle on, nor imports pickle."""
    root = Path(__file__).parents[2] / "trainctl"
    for source in root.rglob("*.py"):
        text = source.read_text()
        assert "allow_pickle=True" not in text, source
        assert "import pickle" not in text, source
        assert "np.load(" not in text or "allow_pickle=False" in text, source


def test_io_helpers_of_this_file():
    """The damage generators do what the tests above rely on."""
    good = bytes(range(40))
    cuts = list(truncations(good, 10, extra=3))
    assert [len(c) for c in cuts[:11]] == list(range(11))
    flips = list(bit_flips(good, 2, extra=5))
    assert len(flips) == 16 + 5
    assert len(list(bit_flips(good, 2, extra=5, every_bit=False))) == 2 + 5
    assert all(sum(a != b for a, b in zip(f, good, strict=True)) == 1 for f in flips)
    header = io.BytesIO(npy_header((3,), "<f4"))
    assert np.lib.format.read_magic(header) == (1, 0)
    assert np.lib.format.read_array_header_1_0(header) == ((3,), False, np.dtype("<f4"))
