"""Fetching the classic data sets, against a local server standing in for the mirrors."""

import dataclasses
import fcntl
import importlib.util
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from data_server import refused_url

from trainctl.data import load_splits
from trainctl.data.cache import data_root, dataset_folder
from trainctl.data.catalog import REMOTE_DATASETS
from trainctl.data.download import NoProgress
from trainctl.data.fetch import dataset_status, fetch_dataset
from trainctl.errors import DataError


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_fetch_places_the_verified_files_where_the_reader_reads_them(served, tmp_path):
    result = fetch_dataset("mnist")
    folder = tmp_path / "cache" / "mnist"
    assert result.folder == folder and sorted(result.fetched) == sorted(served["mnist"])
    assert files_in(folder) == sorted(served["mnist"])  # no .part left behind
    for name, data in served["mnist"].items():
        assert (folder / name).read_bytes() == data
    splits = load_splits("mnist", {}, None, val_split=0.1, test_split=0.0, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 10)


def test_a_fetched_archive_is_unpacked_for_the_reader_and_removed(served, tmp_path):
    fetch_dataset("cifar10")
    folder = tmp_path / "cache" / "cifar10"
    assert files_in(folder) == sorted(
        f"cifar-10-batches-bin/{name}" for name in REMOTE_DATASETS["cifar10"].needed
    )
    splits = load_splits("cifar10", {}, None, val_split=0.0, test_split=0.0, seed=0)
    assert splits.train.inputs.shape == (40, 32, 32, 3) and len(splits.test) == 6


def test_a_present_data_set_is_not_fetched_again(served, mirror):
    fetch_dataset("fashion_mnist")
    asked = len(mirror.requests)
    assert fetch_dataset("fashion_mnist").fetched == []
    assert len(mirror.requests) == asked


def test_a_wrong_checksum_places_nothing_and_says_which_file(served, monkeypatch, tmp_path):
    remote = REMOTE_DATASETS["mnist"]
    bad = dataclasses.replace(remote.files[0], sha256="0" * 64)
    monkeypatch.setitem(
        REMOTE_DATASETS, "mnist", dataclasses.replace(remote, files=(bad, *remote.files[1:]))
    )
    with pytest.raises(DataError) as caught:
        fetch_dataset("mnist")
    message = str(caught.value)
    assert message.startswith(f"cannot fetch mnist's {bad.name} into {tmp_path / 'cache/mnist'}: ")
    assert f"expected {'0' * 64} (file discarded)" in message and "\n" not in message
    assert files_in(tmp_path / "cache" / "mnist") == []  # neither the file nor its .part


def test_a_dropped_connection_is_resumed_with_range_by_the_next_fetch(served, mirror, tmp_path):
    name = "train-images-idx3-ubyte.gz"
    data = served["mnist"][name]
    cut = len(data) // 3
    mirror.drop_after[f"/mnist/{name}"] = cut
    folder = tmp_path / "cache" / "mnist"
    with pytest.raises(DataError) as caught:
        fetch_dataset("mnist")
    assert f"connection lost at byte {cut:,} of {len(data):,}" in str(caught.value)
    assert f"kept in {folder / (name + '.part')} and the next fetch resumes" in str(caught.value)
    assert not (folder / name).exists() and (folder / f"{name}.part").stat().st_size == cut

    fetch_dataset("mnist")
    asked = [r for r in mirror.requests if r.path == f"/mnist/{name}"]
    assert [(r.range, r.status) for r in asked] == [(None, 200), (f"bytes={cut}-", 206)]
    assert (folder / name).read_bytes() == data and not (folder / f"{name}.part").exists()


def test_a_404_on_the_first_mirror_falls_back_to_the_next(served, mirror, monkeypatch):
    remote = REMOTE_DATASETS["mnist"]
    mirrors = (mirror.url("gone/"), *remote.mirrors)
    monkeypatch.setitem(REMOTE_DATASETS, "mnist", dataclasses.replace(remote, mirrors=mirrors))
    fetch_dataset("mnist")
    statuses = [(r.path.split("/")[1], r.status) for r in mirror.requests]
    assert statuses == [("gone", 404), ("mnist", 200)] * 4


def test_offline_fails_at_once_naming_the_files_and_the_folder(served, monkeypatch, tmp_path):
    remote = REMOTE_DATASETS["cifar10"]
    refused = dataclasses.replace(remote, mirrors=(refused_url(), refused_url()))
    monkeypatch.setitem(REMOTE_DATASETS, "cifar10", refused)
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        fetch_dataset("cifar10")
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        "cannot reach any mirror of cifar10 (offline?): place cifar-10-binary.tar.gz in "
        f"{tmp_path / 'cache' / 'cifar10'} by hand (from {refused.mirrors[0]}) and run again"
    )


def test_a_fetch_goes_to_the_data_cache_where_load_splits_reads(served, tmp_path):
    fetch_dataset("fashion_mnist")
    splits = load_splits("fashion_mnist", {}, None, 0.0, 0.0, seed=0)
    assert len(splits.train) == 30 and len(splits.test) == 10
    assert sorted(os.listdir(tmp_path / "cache" / "fashion_mnist")) == sorted(
        served["fashion_mnist"]
    )


def test_a_fetch_into_a_folder_leaves_the_cache_alone(served, tmp_path):
    fetch_dataset("mnist", tmp_path / "mine")
    assert files_in(tmp_path / "mine") == sorted(served["mnist"])
    assert not (tmp_path / "cache").exists()


def test_a_data_set_trainctl_cannot_fetch_is_refused():
    with pytest.raises(DataError) as caught:
        fetch_dataset("digits")
    assert str(caught.value) == (
        "trainctl cannot fetch a data set called 'digits'; it fetches mnist, fashion_mnist, cifar10"
    )


def test_the_status_of_each_data_set_its_folder_and_size(served, tmp_path):
    fetch_dataset("mnist")
    statuses = {status.name: status for status in dataset_status()}
    assert statuses["mnist"].present and not statuses["cifar10"].present
    assert statuses["mnist"].size == sum(len(d) for d in served["mnist"].values())
    assert statuses["cifar10"].folder == tmp_path / "cache" / "cifar10"
    assert statuses["cifar10"].size == 0


def test_the_data_cache_follows_the_platform_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAINCTL_DATA", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "trainctl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/so/ignored")
    assert data_root() == Path.home() / ".cache" / "trainctl"
    monkeypatch.setattr("sys.platform", "darwin")
    assert data_root() == Path.home() / "Library" / "Caches" / "trainctl"
    monkeypatch.setattr("sys.platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert data_root() == tmp_path / "local" / "trainctl"
    monkeypatch.setenv("TRAINCTL_DATA", str(tmp_path / "moved"))
    assert dataset_folder("mnist") == tmp_path / "moved" / "mnist"
    assert dataset_folder("mnist", tmp_path / "root") == tmp_path / "root" / "mnist"


def fresh_catalog():
    """A fresh copy of the catalog module: the tests' own copy has local mirrors."""
    spec = importlib.util.find_spec("trainctl.data.catalog")
    catalog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(catalog)
    return catalog


def test_the_catalog_holds_a_sha256_and_several_mirrors_for_every_file():
    catalog = fresh_catalog()
    assert list(catalog.REMOTE_DATASETS) == ["mnist", "fashion_mnist", "cifar10"]
    for remote in catalog.REMOTE_DATASETS.values():
        assert len(remote.mirrors) >= 2 and all(m.endswith("/") for m in remote.mirrors)
        for file in remote.files:
            assert re.fullmatch("[0-9a-f]{64}", file.sha256) and file.size > 0


def test_datasets_readme_lists_every_file_with_its_checksum_and_mirrors():
    readme = (Path(__file__).parents[2] / "datasets" / "README.md").read_text()
    for remote in fresh_catalog().REMOTE_DATASETS.values():
        assert all(mirror in readme for mirror in remote.mirrors)
        for file in remote.files:
            assert f"`{file.name}`" in readme and f"`{file.sha256}`" in readme
            assert f"{file.size:,}" in readme


class KilledAfter:
    """A progress bar whose process is 'killed' (KeyboardInterrupt) after some chunks."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    def start(self, name, total, done) -> None:
        pass

    def advance(self, size) -> None:
        self.chunks -= 1
        if self.chunks == 0:
            raise KeyboardInterrupt

    def finish(self) -> None:
        pass


def test_a_download_killed_midway_leaves_only_its_part_file(served, mirror, monkeypatch, tmp_path):
    monkeypatch.setattr("trainctl.data.download.CHUNK", 1024)
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("cifar10", progress=KilledAfter(3))
    folder = tmp_path / "cache" / "cifar10"
    assert files_in(folder) == ["cifar-10-binary.tar.gz.part"]
    assert (folder / "cifar-10-binary.tar.gz.part").stat().st_size == 3 * 1024
    fetch_dataset("cifar10")
    assert mirror.requests[-1].range == "bytes=3072-"
    assert len(files_in(folder)) == 6


class WaitRecorder(NoProgress):
    def __init__(self) -> None:
        self.waited = threading.Event()

    def waiting(self, name, folder) -> None:
        self.waited.set()


def fetch_while_locked(name: str, folder: Path):
    """Start fetching `name` in a thread while this test holds the folder's lock (standing
    in for another trainctl fetching it); returns the thread, its results and the lock."""
    folder.mkdir(parents=True)
    holder = os.open(folder, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    progress, results = WaitRecorder(), []
    waiter = threading.Thread(target=lambda: results.append(fetch_dataset(name, None, progress)))
    waiter.start()
    assert progress.waited.wait(timeout=30)
    return waiter, results, holder


def test_a_second_fetch_of_the_same_folder_waits_for_the_first(served, mirror, tmp_path):
    folder = tmp_path / "cache" / "mnist"
    waiter, results, holder = fetch_while_locked("mnist", folder)
    time.sleep(0.2)
    assert mirror.requests == [] and results == []  # nothing fetched while the lock is held
    os.close(holder)
    waiter.join(timeout=60)
    assert sorted(results[0].fetched) == sorted(served["mnist"])
    assert files_in(folder) == sorted(served["mnist"])


def test_a_fetch_that_waited_uses_what_the_other_fetch_placed(served, mirror, tmp_path):
    folder = tmp_path / "cache" / "cifar10"
    waiter, results, holder = fetch_while_locked("cifar10", folder)
    fetch_dataset("cifar10", tmp_path / "elsewhere")  # the other fetch, done while we wait
    shutil.copytree(tmp_path / "elsewhere", folder, dirs_exist_ok=True)
    asked = len(mirror.requests)
    os.close(holder)
    waiter.join(timeout=60)
    assert results[0].fetched == [] and len(mirror.requests) == asked
    assert len(files_in(folder)) == 6
