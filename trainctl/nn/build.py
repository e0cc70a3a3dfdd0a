"""Models from a list of layer specs, with input sizes inferred from the data (lazy layers).

A config says `linear: {out: 128}`, never `in_features`: `build_model` walks the list with the
shape of one sample, builds each layer for the shape that reaches it, and finds the shape it
passes on by running it once on a single zero sample. `LAYERS` declares the arguments of
every layer type; the config loader validates against it and the README's reference is made
from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from trainctl.autograd.tensor import Tensor, no_grad
from trainctl.errors import ShapeError, TrainctlError
from trainctl.nn import layers, sequence
from trainctl.nn.init import WEIGHT_INITS
from trainctl.nn.module import Module
from trainctl.spec import Arg, Entry

Shape = tuple[int, ...]


class ModelError(TrainctlError):
    """A layer list that cannot be built for the data it is given.

    `where` is the dotted key of the layer (`model.layers[2].conv2d`), `indices` its position
    at each nesting level, so the config can point at the line it came from.
    """

    def __init__(self, where: str, indices: tuple[int, ...], message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.indices, self.message = where, indices, message


class LayerSpec(Protocol):
    """What build_model reads of a config's layer entry."""

    type: str
    args: Mapping[str, Any]
    layers: Sequence[LayerSpec] | None


@dataclass(frozen=True)
class LayerEntry(Entry):
    """A layer type: its arguments and how to build it for the shape of one input sample."""

    build: Callable[..., Module] | None = None


def _features(shape: Shape) -> int:
    if len(shape) != 1:
        raise ShapeError(
            f"needs (features,) input, got samples of shape {shape}; add flatten first"
        )
    return shape[0]


def _channels(shape: Shape) -> int:
    if len(shape) != 3:
        raise ShapeError(f"needs (H, W, C) image input, got samples of shape {shape}")
    return shape[2]


def _sequence(shape: Shape) -> tuple[int, int]:
    if len(shape) != 2:
        raise ShapeError(
            f"needs (T, features) sequences, got samples of shape {shape}; "
            "token ids go through embedding first"
        )
    return shape[0], shape[1]


def _positional_embedding(shape: Shape, max_len: int | None) -> Module:
    length, dim = _sequence(shape)
    return sequence.PositionalEmbedding(max_len or length, dim)


def _self_attention(shape: Shape, heads: int, causal: bool) -> Module:
    return sequence.MultiHeadSelfAttention(_sequence(shape)[1], heads, causal)


def _transformer_block(shape: Shape, heads: int, mlp_ratio: int, causal: bool) -> Module:
    return sequence.TransformerBlock(_sequence(shape)[1], heads, mlp_ratio, causal)


def _lstm(shape: Shape, hidden: int) -> Module:
    return sequence.LSTM(_sequence(shape)[1], hidden)


def _linear(shape: Shape, out: int, bias: bool, init: str) -> Module:
    features = _sequence(shape)[1] if len(shape) == 2 else _features(shape)  # per position
    return layers.Linear(features, out, bias=bias, init=init)


def _conv2d(
    shape: Shape, out: int, kernel: int, stride: int, padding: int, bias: bool, init: str
) -> Module:
    return layers.Conv2d(_channels(shape), out, kernel, stride, padding, bias=bias, init=init)


def _batch_norm(shape: Shape, eps: float, momentum: float, sync: bool) -> Module:
    if len(shape) == 1:
        return layers.BatchNorm1d(shape[0], eps, momentum, sync)
    return layers.BatchNorm2d(_channels(shape), eps, momentum, sync)


def _images(make: Callable[[], Module]) -> Callable[..., Module]:
    def build(shape: Shape, **args: Any) -> Module:
        _channels(shape)
        return make(**args)

    return build


_HEADS = Arg("int", 4, "attention heads (they must divide the features)", low=1)
_CAUSAL = Arg("bool", True, "each position sees only itself and earlier ones (false: all)")
_INIT = Arg("str", "kaiming_uniform", "weight initialiser", choices=tuple(WEIGHT_INITS))
_POSITIVE = {"low": 1}


def _entry(name: str, help: str, build: Callable[..., Module], **args: Arg) -> LayerEntry:
    return LayerEntry(name, args, help, build)


LAYERS: dict[str, LayerEntry] = {
    entry.name: entry
    for entry in (
        _entry(
            "linear", "fully connected: y = x W + b over the last axis", _linear,
            out=Arg("int", help="output features", **_POSITIVE),
            bias=Arg("bool", True, "learn a bias"),
            init=_INIT,
        ),
        _entry(
            "conv2d", "2-d convolution of NHWC images, square kernel", _conv2d,
            out=Arg("int", help="output channels", **_POSITIVE),
            kernel=Arg("int", 3, "kernel size", **_POSITIVE),
            stride=Arg("int", 1, "stride", **_POSITIVE),
            padding=Arg("int", 0, "zero padding on each side", low=0),
            bias=Arg("bool", True, "learn a bias"),
            init=_INIT,
        ),
        _entry(
            "max_pool2d", "maximum over kernel x kernel windows",
            _images(lambda kernel, stride: layers.MaxPool2d(kernel, stride)),
            kernel=Arg("int", 2, "window size", **_POSITIVE),
            stride=Arg("int", None, "stride (null: the window size)", nullable=True, low=1),
        ),
        _entry(
            "avg_pool2d", "mean over kernel x kernel windows",
            _images(lambda kernel, stride: layers.AvgPool2d(kernel, stride)),
            kernel=Arg("int", 2, "window size", **_POSITIVE),
            stride=Arg("int", None, "stride (null: the window size)", nullable=True, low=1),
        ),
        _entry(
            "global_avg_pool", "mean of each channel over the image: (H, W, C) -> (C,)",
            _images(layers.GlobalAvgPool2d),
        ),
        _entry(
            "upsample2d", "repeat each pixel scale x scale times: (H, W, C) -> (sH, sW, C)",
            _images(layers.Upsample2d),
            scale=Arg("int", 2, "the factor on height and width", **_POSITIVE),
        ),
        _entry("flatten", "(d1, d2, ...) -> (d1 * d2 * ...,) per sample",
               lambda shape: layers.Flatten()),
        _entry(
            "dropout", "zero units with probability p while training",
            lambda shape, p: layers.Dropout(p),
            p=Arg("float", 0.5, "drop probability", low=0, high=1, high_open=True),
        ),
        _entry(
            "batch_norm", "batch normalisation (1-d for features, 2-d for images)", _batch_norm,
            eps=Arg("float", 1e-5, "added to the variance", low=0, low_open=True),
            momentum=Arg("float", 0.1, "running statistics update rate", low=0, high=1),
            sync=Arg(
                "bool",
                False,
                "with --nproc N, batch statistics over the whole global batch (SyncBatchNorm); "
                "false: each rank's shard's, running statistics averaged",
            ),
        ),
        _entry(
            "layer_norm", "normalise each sample over its last axis",
            lambda shape, eps: layers.LayerNorm(shape[-1], eps),
            eps=Arg("float", 1e-5, "added to the variance", low=0, low_open=True),
        ),
        _entry(
            "embedding", "integer indices -> learned vectors",
            lambda shape, num, dim: layers.Embedding(num, dim),
            num=Arg("int", help="number of distinct indices", **_POSITIVE),
            dim=Arg("int", help="vector size", **_POSITIVE),
        ),
        _entry(
            "positional_embedding", "adds a learned vector per position to (T, D) sequences",
            _positional_embedding,
            max_len=Arg("int", None, "longest sequence (null: the data's length)",
                        nullable=True, low=1),
        ),
        _entry(
            "self_attention", "multi-head self-attention over (T, D) sequences",
            _self_attention, heads=_HEADS, causal=_CAUSAL,
        ),
        _entry(
            "transformer_block",
            "pre-norm transformer block: x + attention(norm(x)), then + GELU MLP(norm(x))",
            _transformer_block,
            heads=_HEADS,
            mlp_ratio=Arg("int", 4, "MLP hidden units per feature", **_POSITIVE),
            causal=_CAUSAL,
        ),
        _entry(
            "lstm", "LSTM over (T, D) sequences: the hidden state at every step", _lstm,
            hidden=Arg("int", help="hidden units", **_POSITIVE),
        ),
        _entry("relu", "max(x, 0)", lambda shape: layers.ReLU()),
        _entry(
            "leaky_relu", "x if x > 0 else slope * x",
            lambda shape, slope: layers.LeakyReLU(slope),
            slope=Arg("float", 0.01, "slope for negative inputs"),
        ),
        _entry("gelu", "GELU (tanh approximation)", lambda shape: layers.GELU()),
        _entry("tanh", "hyperbolic tangent", lambda shape: layers.Tanh()),
        _entry("sigmoid", "logistic function", lambda shape: layers.Sigmoid()),
        _entry("silu", "x * sigmoid(x) (swish)", lambda shape: layers.SiLU()),
        _entry("softplus", "log(1 + exp(x))", lambda shape: layers.Softplus()),
        _entry(
            "elu", "x if x > 0 else alpha * (exp(x) - 1)",
            lambda shape, alpha: layers.ELU(alpha),
            alpha=Arg("float", 1.0, "scale of the negative part"),
        ),
        _entry(
            "softmax", "softmax over an axis", lambda shape, axis: layers.Softmax(axis),
            axis=Arg("int", -1, "the axis"),
        ),
        LayerEntry("residual", {}, "x + body(x): takes a nested list of layers, keeps the shape"),
    )
}  # fmt: skip


def build_model(
    specs: Sequence[LayerSpec],
    input_shape: Shape,
    input_dtype: Any = np.float32,
    where: str = "model.layers",
) -> tuple[layers.Sequential, Shape]:
    """A Sequential for samples of `input_shape` (parameters drawn from the default
    generator) and the shape of one sample of its output, found while building it.

    Errors name the layer by its position (`model.layers[2].conv2d`) and say which shape
    reached it.
    """
    return _build_sequence(specs, tuple(input_shape), np.dtype(input_dtype), where, ())


def _build_sequence(
    specs: Sequence[LayerSpec], shape: Shape, dtype: np.dtype, where: str, indices: tuple[int, ...]
) -> tuple[layers.Sequential, Shape]:
    if not specs:
        raise ModelError(where, indices, "expected a non-empty list of layers")
    model = layers.Sequential()
    for index, spec in enumerate(specs):
        here, position = f"{where}[{index}].{spec.type}", (*indices, index)
        if spec.type == "residual":
            body, out_shape = _build_sequence(
                spec.layers or [], shape, dtype, f"{here}.layers", position
            )
            if out_shape != shape:
                raise ModelError(
                    here, position,
                    f"the block turns samples of shape {shape} into {out_shape}; "
                    "a residual block must keep the shape",
                )  # fmt: skip
            layer = layers.Residual(body)
        else:
            entry = LAYERS.get(spec.type)
            if entry is None or entry.build is None:
                raise ModelError(here, position, f"unknown layer type {spec.type!r}")
            try:
                layer = entry.build(shape, **spec.args)
                out_shape = _output_shape(layer, shape, dtype)
            except (ShapeError, ValueError) as exc:
                raise ModelError(here, position, str(exc)) from None
        model.append(layer)
        shape, dtype = out_shape, np.dtype(np.float32)
    return model, shape


def _output_shape(layer: Module, shape: Shape, dtype: np.dtype) -> Shape:
    """Run `layer` once on one zero sample in eval mode (no gradient, no random draws)."""
    layer.eval()
    try:
        with no_grad():
            out = layer(Tensor(np.zeros((1, *shape), dtype=dtype)))
    finally:
        layer.train()
    return tuple(out.shape[1:])


def count_parameters(model: Module) -> int:
    return sum(p.size for p in model.parameters())
