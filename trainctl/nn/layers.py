"""The layers: Modules holding parameters, whose forward is a call into `functional`.

Images are NHWC; Linear weights are (in, out) and Conv2d weights (KH, KW, Cin, Cout).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd import ops
from trainctl.autograd.tensor import Tensor
from trainctl.errors import ShapeError
from trainctl.nn import functional as F
from trainctl.nn.init import normal, ones, weight_and_bias, zeros
from trainctl.nn.module import Module, Parameter

Operand = ops.Operand


def _check(layer: Module, x: Operand, ok: bool, expected: str) -> None:
    if not ok:
        raise ShapeError(
            f"{type(layer).__name__}({layer.extra_repr()}) expects input of shape {expected}, "
            f"got {tuple(x.shape)}"
        )


class Linear(Module):
    """y = x @ W + b over the last axis, W of shape (in_features, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "kaiming_uniform",
        generator: backend.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        w, b = weight_and_bias((in_features, out_features), init, bias, generator)
        self.weight = Parameter(w)
        self.bias = None if b is None else Parameter(b)

    def forward(self, x: Operand) -> Operand:
        ok = x.ndim >= 1 and x.shape[-1] == self.in_features
        _check(self, x, ok, f"(..., {self.in_features})")
        return F.linear(self.autocast(x), self.autocast(self.weight), self.autocast(self.bias))

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


class Conv2d(Module):
    """2-d convolution of NHWC images with a square kernel; weight (KH, KW, Cin, Cout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        init: str = "kaiming_uniform",
        generator: backend.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        w, b = weight_and_bias(shape, init, bias, generator)
        self.weight = Parameter(w)
        self.bias = None if b is None else Parameter(b)

    def forward(self, x: Operand) -> Operand:
        ok = x.ndim == 4 and x.shape[-1] == self.in_channels
        _check(self, x, ok, f"(N, H, W, {self.in_channels}) (NHWC)")
        weight, bias = self.autocast(self.weight), self.autocast(self.bias)
        return F.conv2d(self.autocast(x), weight, bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )


class _Pool2d(Module):
    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def _check_images(self, x: Operand) -> None:
        _check(self, x, x.ndim == 4, "(N, H, W, C) (NHWC)")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    def forward(self, x: Operand) -> Operand:
        self._check_images(x)
        return F.max_pool2d(x, self.kernel_size, self.stride)


class AvgPool2d(_Pool2d):
    def forward(self, x: Operand) -> Operand:
        self._check_images(x)
        mean = F.avg_pool2d(self.full_precision(x), self.kernel_size, self.stride)
        return self.autocast(mean)


class GlobalAvgPool2d(Module):
    """(N, H, W, C) -> (N, C): the mean of each channel over the whole image."""

    def forward(self, x: Operand) -> Operand:
        _check(self, x, x.ndim == 4, "(N, H, W, C) (NHWC)")
        return self.autocast(self.full_precision(x).mean(axis=(1, 2)))


class Flatten(Module):
    """(N, ...) -> (N, everything else): the batch axis is kept."""

    def forward(self, x: Operand) -> Operand:
        _check(self, x, x.ndim >= 1, "(N, ...)")
        return F.flatten(x)


class Dropout(Module):
    """Inverted dropout in training, identity in evaluation; masks come from `generator`
    (the default generator when None, looked up at call time so `manual_seed` applies)."""

    def __init__(self, p: float = 0.5, generator: backend.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: Operand) -> Operand:
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _BatchNorm(Module):
    """Per-channel normalisation over every axis but the last; see `functional.batch_norm`."""

    ndim: int
    layout: str

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(ones((num_features,)))
        self.bias = Parameter(zeros((num_features,)))
        self.register_buffer("running_mean", Tensor(zeros((num_features,))))
        self.register_buffer("running_var", Tensor(ones((num_features,))))

    def forward(self, x: Operand) -> Operand:
        ok = x.ndim == self.ndim and x.shape[-1] == self.num_features
        _check(self, x, ok, self.layout.format(C=self.num_features))
        y, self.running_mean, self.running_var = F.batch_norm(
            self.full_precision(x), self.weight, self.bias, self.running_mean,
            self.running_var, self.training, self.momentum, self.eps,
        )  # fmt: skip
        return self.autocast(y)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of (N, C) features."""

    ndim, layout = 2, "(N, {C})"


class BatchNorm2d(_BatchNorm):
    """Batch norm of NHWC images: statistics over N, H and W for each channel."""

    ndim, layout = 4, "(N, H, W, {C}) (NHWC)"


class LayerNorm(Module):
    """Normalises each sample over its trailing `normalized_shape` axes, then scales and shifts."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape, self.eps = tuple(shape), eps
        self.weight = Parameter(ones(self.normalized_shape))
        self.bias = Parameter(zeros(self.normalized_shape))

    def forward(self, x: Operand) -> Operand:
        k = len(self.normalized_shape)
        ok = x.ndim >= k and tuple(x.shape[x.ndim - k :]) == self.normalized_shape
        _check(self, x, ok, f"(..., {', '.join(map(str, self.normalized_shape))})")
        y = F.layer_norm(self.full_precision(x), self.weight, self.bias, k, self.eps)
        return self.autocast(y)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class Embedding(Module):
    """A lookup table: integer indices of any shape -> rows of a (num_embeddings, dim) weight.

    The weight starts at N(0, 1), as in PyTorch.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        generator: backend.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(normal((num_embeddings, embedding_dim), 1.0, generator))

    def forward(self, indices: Any) -> Operand:
        if not isinstance(indices, Operand):
            indices = Tensor(indices, device=self.weight.device)
        if not np.issubdtype(indices.dtype, np.integer):
            raise ShapeError(
                f"Embedding({self.extra_repr()}) needs integer indices, got {indices.dtype}"
            )
        return self.autocast(ops.gather_rows(self.weight, indices))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class ReLU(Module):
    def forward(self, x: Operand) -> Operand:
        return ops.relu(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Operand) -> Operand:
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """GELU, tanh approximation (see `functional.gelu`)."""

    def forward(self, x: Operand) -> Operand:
        return F.gelu(x)


class Tanh(Module):
    def forward(self, x: Operand) -> Operand:
        return ops.tanh(x)


class Sigmoid(Module):
    def forward(self, x: Operand) -> Operand:
        return ops.sigmoid(x)


class SiLU(Module):
    def forward(self, x: Operand) -> Operand:
        return ops.silu(x)


class Softplus(Module):
    def forward(self, x: Operand) -> Operand:
        return ops.softplus(x)


class ELU(Module):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Operand) -> Operand:
        return ops.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softmax(Module):
    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: Operand) -> Operand:
        return ops.softmax(self.full_precision(x), self.axis)  # float32 under mixed precision

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Sequential(Module):
    """Layers applied in order; children are named "0", "1", ..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for layer in layers:
            self.append(layer)

    def append(self, layer: Module) -> Sequential:
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential takes Modules, got {type(layer).__name__}")
        setattr(self, str(len(self._modules)), layer)
        return self

    def __getitem__(self, index: int | slice) -> Any:
        layers = list(self._modules.values())
        return Sequential(*layers[index]) if isinstance(index, slice) else layers[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def forward(self, x: Any) -> Any:
        for layer in self._modules.values():
            x = layer(x)
        return x


class Residual(Module):
    """x + body(x); the body must keep the shape of its input."""

    def __init__(self, body: Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Operand) -> Operand:
        y = self.body(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ShapeError(
                f"Residual: body output shape {tuple(y.shape)} differs from input shape "
                f"{tuple(x.shape)}, so they cannot be added"
            )
        return x + y
