"""The data sets `trainctl data fetch` knows: their files, SHA-256 sums and mirrors.

Sizes and SHA-256 sums are the ones TensorFlow Datasets publishes for these exact files
(github.com/tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt at commit
31f1255e57e519a6c004f0b097a2f5cfcf0dde7d, fashion_mnist.txt and cifar10.txt at commit
333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5). The mirrors are the ones torchvision, Keras and
TensorFlow Datasets download from, tried in order. Tests replace `REMOTE_DATASETS` entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainctl.data import cifar
from trainctl.data.idx import SPLIT_FILES


@dataclass(frozen=True)
class RemoteFile:
    """One file as a mirror serves it, with its published size and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteDataset:
    """A data set trainctl can fetch: `files` from any of `mirrors` (base URLs ending in /).

    `needed` are the files the reader wants once fetched (a file given as name.gz may also be
    there unpacked); an archive (`unpack`) is unpacked into `subfolder` and then removed.
    """

    name: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    needed: tuple[str, ...]
    unpack: bool = False
    subfolder: str = ""


_IDX_NAMES = tuple(f"{name}.gz" for pair in SPLIT_FILES.values() for name in pair)

REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        name="mnist",
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                9912422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                28881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                1648877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                4542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's first
            "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow Datasets'
            "http://yann.lecun.com/exdb/mnist/",  # the original
        ),
        needed=_IDX_NAMES,
    ),
    "fashion_mnist": RemoteDataset(
        name="fashion_mnist",
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                26421880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                29515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                4422102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                5148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # torchvision, TFDS
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",  # Keras
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        needed=_IDX_NAMES,
    ),
    "cifar10": RemoteDataset(
        name="cifar10",
        files=(
            RemoteFile(
                "cifar-10-binary.tar.gz",
                170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            ),
        ),
        mirrors=("https://www.cs.toronto.edu/~kriz/", "http://www.cs.toronto.edu/~kriz/"),
        needed=(*cifar.TRAIN_FILES, cifar.TEST_FILE),
        unpack=True,
        subfolder=cifar.SUBFOLDER,
    ),
}
