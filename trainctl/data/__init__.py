"""Data sets, file readers, splits, transforms and the batch loader.

    splits = load_splits("digits", {}, None, val_split=0.1, test_split=0.1, seed=0)
    loader = Loader(splits.train, 64, shuffle=True, drop_last=False, seed=0, augment=True)
    for x, y in loader.epoch(0):
        ...

Every data set ends up as an ArrayDataset: float32 inputs, (N, F) features or NHWC images
in [0, 1], and int64 class labels (N,) or float32 regression targets (N, T).
"""

from trainctl.data.dataset import ArrayDataset, DatasetEntry, DataSplits
from trainctl.data.loader import Loader
from trainctl.data.registry import DATASETS, dataset_entry, load_splits
from trainctl.data.transforms import TRANSFORMS, TransformEntry, TransformError
from trainctl.errors import DataError

__all__ = [
    "DATASETS",
    "TRANSFORMS",
    "ArrayDataset",
    "DataError",
    "DataSplits",
    "DatasetEntry",
    "Loader",
    "TransformEntry",
    "TransformError",
    "dataset_entry",
    "load_splits",
]
