"""Mixed precision, as Keras names it: `dtype: mixed_float16` or `mixed_bfloat16`.

Parameters, their gradients and the optimizer's state stay float32 (the "master weights");
layers compute in the low-precision dtype where that is safe: matrix products, convolutions
and elementwise ops. Losses, the model's output, means (average pooling) and normalisation
statistics (BatchNorm, LayerNorm, softmax) are computed in float32. With float16, whose
range is small, the loss is scaled up before the backward pass so small gradients do not
flush to zero, and the gradients scaled back down (`optim.LossScaler`); bfloat16 has
float32's range and needs no scaling.

The layers read their compute dtype from `Module.compute_dtype`, set for a whole model by
`model.set_compute_dtype(...)`; with None (plain float32 or float64) nothing is cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainctl.errors import DeviceError

MIXED = ("mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class Precision:
    """The dtype of the parameters, the dtype layers compute in (None: the same), and
    whether the loss is scaled (float16)."""

    name: str
    param_dtype: np.dtype
    compute_dtype: np.dtype | None
    loss_scaling: bool


def bfloat16() -> np.dtype:
    """NumPy's bfloat16, from ml_dtypes (the package JAX and TensorFlow use for it)."""
    try:
        import ml_dtypes
    except ImportError:  # a dependency of trainctl: only a broken install lacks it
        raise DeviceError(
            "mixed_bfloat16 needs the ml_dtypes package: pip install ml_dtypes"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


def precision_of(name: str) -> Precision:
    """The precision of a config's `dtype`: float32, float64 or one of MIXED."""
    if name == "mixed_float16":
        return Precision(name, np.dtype(np.float32), np.dtype(np.float16), True)
    if name == "mixed_bfloat16":
        return Precision(name, np.dtype(np.float32), bfloat16(), False)
    return Precision(name, np.dtype(name), None, False)
