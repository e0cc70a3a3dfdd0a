"""Batch transforms named in a config: `normalize`, `random_flip`, `random_crop`, `one_hot`.

Each takes a batch `(x, y)` and returns a new one; none writes into its input. Random
transforms (`random=True`) run only on augmented (training) batches and draw from the
generator the loader hands them, seeded by (seed, epoch, batch), so an augmented batch is
reproducible. A transform that does not fit the data raises DataError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.errors import DataError
from trainctl.spec import Arg, Entry

Batch = tuple[np.ndarray, np.ndarray]
TransformFn = Callable[
    [np.ndarray, np.ndarray, dict[str, Any], np.random.Generator, int | None], Batch
]


class TransformError(DataError):
    """A transform that does not fit the data; `index` is its place in the transform list."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, kw_only=True)
class TransformEntry(Entry):
    """A transform a config can name: `apply(x, y, args, rng, num_classes) -> (x, y)`.

    A deterministic one also says what it does to the inputs as ONNX nodes (`onnx(b, x, args,
    sample) -> name`, with `b` an export.onnx_builder.OnnxBuilder and `sample` one input of
    the data's shape), so an exported model takes the inputs `predict` takes.
    """

    random: bool
    apply: TransformFn
    onnx: Callable[[Any, str, dict[str, Any], np.ndarray], str] | None = None


def _require_images(name: str, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise DataError(
            f"transform {name} needs NHWC images, but the samples have shape {x.shape[1:]}"
        )


def _per_channel(name: str, key: str, value: float | list[float], x: np.ndarray) -> np.ndarray:
    """A scalar, or one value per channel (last axis) broadcastable against `x`."""
    if not isinstance(value, list):
        return np.float32(value)
    channels = x.shape[-1] if x.ndim > 1 else 1
    if len(value) != channels:
        raise DataError(
            f"transform {name}: {key} has {len(value)} values, but the samples have "
            f"{channels} {'channels' if x.ndim == 4 else 'features'} (shape {x.shape[1:]})"
        )
    return np.asarray(value, dtype=np.float32)


def normalize(
    x: np.ndarray,
    y: np.ndarray,
    args: dict[str, Any],
    rng: np.random.Generator,
    num_classes: int | None,
) -> Batch:
    mean = _per_channel("normalize", "mean", args["mean"], x)
    std = _per_channel("normalize", "std", args["std"], x)
    if np.any(std <= 0):
        raise DataError(f"transform normalize: std must be > 0, found {args['std']}")
    return ((x - mean) / std).astype(np.float32, copy=False), y


def normalize_onnx(b: Any, x: str, args: dict[str, Any], sample: np.ndarray) -> str:
    mean = _per_channel("normalize", "mean", args["mean"], sample)
    std = _per_channel("normalize", "std", args["std"], sample)
    return b.op("Div", b.op("Sub", x, b.const(mean)), b.const(std))


def random_flip(
    x: np.ndarray,
    y: np.ndarray,
    args: dict[str, Any],
    rng: np.random.Generator,
    num_classes: int | None,
) -> Batch:
    """Mirror each image left-right with probability p."""
    _require_images("random_flip", x)
    flip = rng.random(len(x)) < args["p"]
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x), y


def random_crop(
    x: np.ndarray,
    y: np.ndarray,
    args: dict[str, Any],
    rng: np.random.Generator,
    num_classes: int | None,
) -> Batch:
    """Zero-pad by `padding` on every side, then crop back to the size at a random offset."""
    _require_images("random_crop", x)
    pad = args["padding"]
    n, height, width, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=(2, n))
    rows = top[:, None] + np.arange(height)
    cols = left[:, None] + np.arange(width)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]], y


def one_hot(
    x: np.ndarray,
    y: np.ndarray,
    args: dict[str, Any],
    rng: np.random.Generator,
    num_classes: int | None,
) -> Batch:
    """Class labels (N,) -> float32 (N, C), for losses that compare dense targets."""
    if num_classes is None or y.ndim != 1:
        raise DataError(
            f"transform one_hot needs class labels, but the targets have shape {y.shape[1:]} "
            "(a regression data set)"
        )
    return x, np.eye(num_classes, dtype=np.float32)[y]


TRANSFORMS: dict[str, TransformEntry] = {
    entry.name: entry
    for entry in (
        TransformEntry(
            name="normalize",
            help="(x - mean) / std, with one value or one per channel (or feature)",
            args={
                "mean": Arg("float_or_floats", help="subtracted: a number or one per channel"),
                "std": Arg(
                    "float_or_floats",
                    low=0,
                    low_open=True,
                    help="divided by: a number or one per channel, each > 0",
                ),
            },
            random=False,
            apply=normalize,
            onnx=normalize_onnx,
        ),
        TransformEntry(
            name="random_flip",
            help="mirrors each training image left-right (NHWC) with probability p",
            args={"p": Arg("float", 0.5, low=0, high=1, help="probability of a flip")},
            random=True,
            apply=random_flip,
        ),
        TransformEntry(
            name="random_crop",
            help="zero-pads each training image, then crops it back at a random offset",
            args={"padding": Arg("int", 4, low=0, help="pixels of zeros added on every side")},
            random=True,
            apply=random_crop,
        ),
        TransformEntry(
            name="one_hot",
            help="class labels (N,) -> float32 one-hot targets (N, classes)",
            random=False,
            apply=one_hot,
            onnx=lambda b, x, args, sample: x,  # targets only
        ),
    )
}
