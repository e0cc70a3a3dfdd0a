"""The Loader: batches are a pure function of (seed, epoch, batch); prefetch threads stop."""

import threading
import time

import numpy as np
import pytest

from trainctl.data import TRANSFORMS, ArrayDataset, DataError, Loader, TransformEntry

AUGMENT = [
    ("random_crop", {"padding": 1}),
    ("random_flip", {}),
    ("normalize", {"mean": 0.5, "std": 0.2}),
]


def numbered_images(n=23):
    """Images whose every pixel holds the sample number, so batches can be traced back."""
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 4, 4, 1)).copy()
    x[:, 0, 0, 0] += 0.5  # a corner marks the orientation, so flips and crops show
    return ArrayDataset(x, np.arange(n) % 3, "classification", 3)


def make(dataset=None, batch_size=5, **kwargs):
    options = {"shuffle": True, "drop_last": False, "seed": 7, **kwargs}
    return Loader(numbered_images() if dataset is None else dataset, batch_size, **options)


def sample_ids(batches):
    return [int(i) for x, _ in batches for i in x[:, 1, 1, 0]]


def loader_threads():
    return {t for t in threading.enumerate() if t.name.startswith("trainctl-loader")}


def test_every_sample_once_per_epoch_in_a_seeded_order():
    loader = make()
    epochs = [sample_ids(loader.epoch(e)) for e in range(3)]
    for ids in epochs:
        assert sorted(ids) == list(range(23))
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] == sample_ids(make().epoch(0))  # same seed, same order
    assert epochs[0] != sample_ids(make(seed=8).epoch(0))


def test_no_shuffle_keeps_the_order_and_labels_follow_inputs():
    batches = list(make(shuffle=False).epoch(4))
    assert sample_ids(batches) == list(range(23))
    for x, y in batches:
        np.testing.assert_array_equal(y, x[:, 1, 1, 0].astype(int) % 3)


def test_batch_sizes_and_drop_last():
    kept = list(make(batch_size=5).epoch(0))
    assert [len(x) for x, _ in kept] == [5, 5, 5, 5, 3]
    assert make(batch_size=5).batches_per_epoch == 5
    dropped = make(batch_size=5, drop_last=True)
    assert dropped.batches_per_epoch == 4
    batches = list(dropped.epoch(0))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 5]
    assert len(set(sample_ids(batches))) == 20
    assert make(batch_size=23, drop_last=True).batches_per_epoch == 1


def test_prefetch_and_inline_batches_are_identical():
    for epoch in (0, 3):
        inline = list(make(transforms=AUGMENT, augment=True, prefetch=0).epoch(epoch))
        prefetched = list(make(transforms=AUGMENT, augment=True, prefetch=3).epoch(epoch))
        assert len(inline) == len(prefetched) == 5
        for (xa, ya), (xb, yb) in zip(inline, prefetched, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_resuming_at_start_batch_gives_the_rest_of_the_epoch(prefetch):
    full = list(make(transforms=AUGMENT, augment=True).epoch(2))
    resumed = list(
        make(transforms=AUGMENT, augment=True, prefetch=prefetch).epoch(2, start_batch=3)
    )
    assert len(resumed) == 2
    for (xa, ya), (xb, yb) in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert list(make().epoch(0, start_batch=5)) == []


def test_augmentation_differs_between_batches_and_epochs():
    loader = make(
        dataset=numbered_images(40),
        batch_size=40,
        shuffle=False,
        transforms=AUGMENT[:1],
        augment=True,
    )
    ((first, _),) = loader.epoch(0)
    ((second, _),) = loader.epoch(1)
    assert not np.array_equal(first, second)


def test_batches_are_fresh_arrays():
    dataset = numbered_images()
    loader = make(dataset, shuffle=False)
    kept = list(loader.epoch(0))
    before = dataset.inputs.copy()
    for x, y in kept:
        x[:] = -1
        y[:] = -1
    np.testing.assert_array_equal(dataset.inputs, before)
    again = list(loader.epoch(0))
    assert sample_ids(again) == list(range(23))


@pytest.mark.parametrize("how", ["break", "close", "consumer_error"])
def test_leaving_early_stops_the_prefetch_thread(how):
    before = loader_threads()  # threads another test may have left behind are not ours
    loader = make(batch_size=1, prefetch=2)
    batches = loader.epoch(0)
    next(batches)
    assert len(loader_threads() - before) == 1
    if how == "break":
        for _ in batches:
            break
        del batches
    elif how == "close":
        batches.close()
    else:
        with pytest.raises(RuntimeError, match="consumer failed"):
            for _ in batches:
                raise RuntimeError("consumer failed")
        del batches
    assert not loader_threads() - before


def test_an_exception_in_the_producer_is_raised_in_the_consumer(monkeypatch):
    calls = []

    def fail_on_batch_2(x, y, args, rng, num_classes):
        calls.append(len(x))
        if len(calls) == 4:  # the first call fits the transform at construction
            raise ValueError("boom in the producer")
        return x, y

    entry = TransformEntry(name="failing", random=False, apply=fail_on_batch_2)
    monkeypatch.setitem(TRANSFORMS, "failing", entry)
    before = loader_threads()
    loader = make(transforms=[("failing", {})], prefetch=2)
    received = []
    with pytest.raises(ValueError, match="boom in the producer"):
        for batch in loader.epoch(0):
            received.append(batch)
    assert len(received) == 2
    assert not loader_threads() - before


def test_wait_seconds_counts_the_time_spent_waiting_for_batches(monkeypatch):
    def slow(x, y, args, rng, num_classes):
        time.sleep(0.02)
        return x, y

    monkeypatch.setitem(TRANSFORMS, "slow", TransformEntry(name="slow", random=False, apply=slow))
    for prefetch in (0, 2):
        loader = make(transforms=[("slow", {})], prefetch=prefetch)
        assert loader.wait_seconds == 0.0
        list(loader.epoch(0))
        assert loader.wait_seconds >= 0.02 * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, found 0"),
        ({"batch_size": 2.0}, "batch_size must be an integer >= 1, found 2.0"),
        ({"prefetch": -1}, "prefetch must be an integer >= 0, found -1"),
        ({"seed": -3}, "seed must be an integer >= 0, found -3"),
        (
            {"batch_size": 30, "drop_last": True},
            "batch_size 30 with drop_last leaves no batch from 23",
        ),
    ],
)
def test_bad_loader_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        make(**kwargs)


def test_bad_epoch_arguments():
    loader = make()
    with pytest.raises(DataError, match="start_batch 6 is past the end of an epoch of 5 batches"):
        loader.epoch(0, start_batch=6)
    with pytest.raises(DataError, match="epoch must be an integer >= 0, found -1"):
        loader.epoch(-1)


def test_empty_data_set():
    empty = ArrayDataset(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), "classification", 2)
    with pytest.raises(DataError, match="cannot batch an empty data set"):
        make(empty)
