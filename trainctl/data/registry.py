"""The data sets a config can name, and `load_splits`, the one way the trainer gets data.

The config loader checks user options against each entry's `args`; `load_splits` checks
them again (for Python callers), loads the data and carves validation and test sets.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainctl.data import cifar, csvfile, digits, idx, imagefolder, npz, synthetic
from trainctl.data.cache import dataset_folder
from trainctl.data.dataset import DatasetEntry, DataSplits
from trainctl.data.options import resolve_options
from trainctl.data.seeding import check_seed
from trainctl.data.splits import check_fraction, split
from trainctl.errors import DataError

DATASETS: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        digits.ENTRY,
        *synthetic.ENTRIES,
        idx.MNIST,
        idx.FASHION_MNIST,
        cifar.ENTRY,
        npz.ENTRY,
        csvfile.ENTRY,
        imagefolder.ENTRY,
    )
}


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry called `name`, or a DataError listing the known names."""
    if name in DATASETS:
        return DATASETS[name]
    close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(
        f"unknown data set {name!r}{hint}; expected one of {', '.join(sorted(DATASETS))}"
    )


def load_splits(
    dataset: str,
    options: Mapping[str, Any],
    path: str | None,
    val_split: float,
    test_split: float,
    seed: int,
    preprocessing: Mapping[str, Any] | None = None,
) -> DataSplits:
    """Load data set `dataset` and split it into train, validation and test sets.

    `test` is the data set's own test split when it has one, else `test_split` of the
    training samples (None for 0); `val` is `val_split` of them (None for 0). A data set
    trainctl can download is read from its folder in the data cache when `path` is None
    (`fetch.fetch_dataset` puts it there). A data set that encodes its rows (csv) fits
    its encoder on the training split, or takes the fit a run stored: `preprocessing`.
    """
    entry = dataset_entry(dataset)
    args = resolve_options("data set", entry, options)
    val_split = check_fraction("val_split", val_split)
    test_split = check_fraction("test_split", test_split)
    seed = check_seed(seed)
    if entry.downloadable and path is None:
        path = str(dataset_folder(entry.name))
    if entry.needs_path and path is None:
        where = f"; get it from {entry.obtain}" if entry.obtain else ""
        raise DataError(f"data set {entry.name!r} needs a path ({entry.help}){where}")
    if not entry.needs_path and path is not None:
        raise DataError(f"data set {entry.name!r} reads no files, but a path was given: {path}")
    loaded = entry.load(args, None if path is None else Path(path).expanduser(), seed)
    splits = split(loaded, entry.name, val_split, test_split, seed)
    if entry.encode is None:
        return splits
    return entry.encode(args, splits, None if preprocessing is None else dict(preprocessing))
