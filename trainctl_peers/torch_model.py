"""A trainctl model as a torch.nn model, and the map between the two sets of weights.

trainctl keeps images NHWC, Linear weights (in, out) and Conv2d weights (KH, KW, Cin, Cout);
torch wants NCHW, (out, in) and (Cout, Cin, KH, KW). Images are permuted to NCHW before a
layer that needs channels first (convolution, pooling, batch norm) and back to NHWC before
one where the order of the trailing axes matters (flatten, layer norm) and at the end, so
every activation, and the order of the features a flatten makes, is trainctl's. Elementwise
layers run in whichever layout the images are in; softmax and global pooling map their axes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainctl.nn import Module, layers, sequence
from trainctl.nn.build import LayerSpec
from trainctl_peers import PeerError

Axes = tuple[int, ...] | None  # a transpose from trainctl's layout to torch's
NHWC, NCHW = "nhwc", "nchw"
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
LINEAR_AXES = (1, 0)  # (in, out) -> (out, in)
CONV_AXES = (3, 2, 0, 1)  # (KH, KW, Cin, Cout) -> (Cout, Cin, KH, KW)

# The layout a layer type needs its images in; the other types take either.
_WANTS = {
    "conv2d": NCHW,
    "max_pool2d": NCHW,
    "avg_pool2d": NCHW,
    "batch_norm": NCHW,
    "upsample2d": NCHW,
    "flatten": NHWC,
    "layer_norm": NHWC,
}
# How a layer type changes the number of axes of its input; the other types keep it.
_RANKS: dict[str, Callable[[int], int]] = {
    "flatten": lambda ndim: 2,
    "global_avg_pool": lambda ndim: 2,
    "embedding": lambda ndim: ndim + 1,
}


@dataclass(frozen=True)
class Slot:
    """One trainctl parameter or buffer (by state_dict name), the torch attribute that holds
    its counterpart, and the transpose from trainctl's layout to torch's (None: the same)."""

    name: str
    module: torch.nn.Module
    attr: str
    axes: Axes = None

    @property
    def tensor(self) -> torch.Tensor:
        owner = self.module
        for part in self.attr.split("."):  # a dotted path into a submodule: attn.qkv.weight
            owner = getattr(owner, part)
        return owner

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return array if self.axes is None else array.transpose(self.axes)

    def to_trainctl(self, array: np.ndarray) -> np.ndarray:
        return array if self.axes is None else array.transpose(np.argsort(self.axes))


@dataclass
class TorchModel:
    """The torch model, its weights' slots in trainctl's order, and why exact agreement with
    trainctl cannot be expected (None when it can)."""

    module: torch.nn.Sequential
    slots: list[Slot]
    reason: str | None


class Permute(torch.nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)

    def extra_repr(self) -> str:
        return "NHWC -> NCHW" if self.dims == NHWC_TO_NCHW else "NCHW -> NHWC"


class Mean(torch.nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Residual(torch.nn.Module):
    def __init__(self, body: torch.nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SelfAttention(torch.nn.Module):
    """trainctl's MultiHeadSelfAttention: one fused q/k/v projection, then torch's SDPA."""

    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(mixed.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(torch.nn.Module):
    """trainctl's pre-norm TransformerBlock, submodules named as trainctl names them."""

    def __init__(self, layer: sequence.TransformerBlock) -> None:
        super().__init__()
        dim, hidden = layer.fc1.in_features, layer.fc1.out_features
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, layer.attn.heads, layer.attn.causal)
        self.fc1, self.fc2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        hidden = torch.nn.functional.gelu(self.fc1(self.norm2(x)), approximate="tanh")
        return x + self.fc2(hidden)


class PositionalEmbedding(torch.nn.Module):
    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]


class LSTM(torch.nn.Module):
    """torch's LSTM with trainctl's one bias: `bias_hh_l0` is held at zero, untrained."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size, hidden_size, batch_first=True)
        self.lstm.bias_hh_l0.requires_grad_(False)
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


# (trainctl's name, axes) of each weight, or (trainctl's name, axes, torch's dotted path)
# where the two names differ
Params = tuple[tuple[str, Axes] | tuple[str, Axes, str], ...]
Translation = Callable[[Module, bool], tuple[torch.nn.Module, Params]]


def _weight_bias(layer: Module, axes: tuple[int, ...]) -> Params:
    return (("weight", axes),) + ((("bias", None),) if layer.bias is not None else ())


def _linear(layer: layers.Linear, nchw: bool) -> tuple[torch.nn.Module, Params]:
    bias = layer.bias is not None
    module = torch.nn.Linear(layer.in_features, layer.out_features, bias=bias)
    return module, _weight_bias(layer, LINEAR_AXES)


def _conv2d(layer: layers.Conv2d, nchw: bool) -> tuple[torch.nn.Module, Params]:
    module = torch.nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        bias=layer.bias is not None,
    )
    return module, _weight_bias(layer, CONV_AXES)


def _batch_norm(
    layer: layers.BatchNorm1d | layers.BatchNorm2d, nchw: bool
) -> tuple[torch.nn.Module, Params]:
    kind = torch.nn.BatchNorm1d if isinstance(layer, layers.BatchNorm1d) else torch.nn.BatchNorm2d
    module = kind(layer.num_features, layer.eps, layer.momentum)
    names = ("weight", "bias", "running_mean", "running_var")
    return module, tuple((name, None) for name in names)


def _layer_norm(layer: layers.LayerNorm, nchw: bool) -> tuple[torch.nn.Module, Params]:
    module = torch.nn.LayerNorm(layer.normalized_shape, layer.eps)
    return module, (("weight", None), ("bias", None))


def _softmax(layer: layers.Softmax, nchw: bool) -> tuple[torch.nn.Module, Params]:
    dim = NCHW_TO_NHWC[layer.axis % 4] if nchw else layer.axis
    return torch.nn.Softmax(dim), ()


def _linear_params(prefix: str) -> Params:
    return ((f"{prefix}.weight", LINEAR_AXES), (f"{prefix}.bias", None))


def _norm_params(prefix: str) -> Params:
    return ((f"{prefix}.weight", None), (f"{prefix}.bias", None))


def _attention_params(prefix: str) -> Params:
    return _linear_params(f"{prefix}qkv") + _linear_params(f"{prefix}proj")


def _transformer_block(layer: sequence.TransformerBlock, nchw: bool):
    params = (
        _norm_params("norm1") + _attention_params("attn.") + _norm_params("norm2")
        + _linear_params("fc1") + _linear_params("fc2")
    )  # fmt: skip
    return TransformerBlock(layer), params


def _lstm(layer: sequence.LSTM, nchw: bool) -> tuple[torch.nn.Module, Params]:
    params = (
        ("weight_ih", LINEAR_AXES, "lstm.weight_ih_l0"),
        ("weight_hh", LINEAR_AXES, "lstm.weight_hh_l0"),
        ("bias", None, "lstm.bias_ih_l0"),
    )
    return LSTM(layer.input_size, layer.hidden_size), params


def _stateless(make: Callable[[Module], torch.nn.Module]) -> Translation:
    return lambda layer, nchw: (make(layer), ())


_TRANSLATIONS: dict[str, Translation] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "max_pool2d": _stateless(lambda m: torch.nn.MaxPool2d(m.kernel_size, m.stride)),
    "avg_pool2d": _stateless(lambda m: torch.nn.AvgPool2d(m.kernel_size, m.stride)),
    "global_avg_pool": lambda m, nchw: (Mean((2, 3) if nchw else (1, 2)), ()),
    "upsample2d": _stateless(lambda m: torch.nn.Upsample(scale_factor=m.scale, mode="nearest")),
    "flatten": _stateless(lambda m: torch.nn.Flatten()),
    "dropout": _stateless(lambda m: torch.nn.Dropout(m.p)),
    "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "embedding": lambda m, nchw: (
        torch.nn.Embedding(m.num_embeddings, m.embedding_dim),
        (("weight", None),),
    ),
    "relu": _stateless(lambda m: torch.nn.ReLU()),
    "leaky_relu": _stateless(lambda m: torch.nn.LeakyReLU(m.negative_slope)),
    "gelu": _stateless(lambda m: torch.nn.GELU(approximate="tanh")),
    "tanh": _stateless(lambda m: torch.nn.Tanh()),
    "sigmoid": _stateless(lambda m: torch.nn.Sigmoid()),
    "silu": _stateless(lambda m: torch.nn.SiLU()),
    "softplus": _stateless(lambda m: torch.nn.Softplus()),
    "elu": _stateless(lambda m: torch.nn.ELU(m.alpha)),
    "softmax": _softmax,
    "positional_embedding": lambda m, nchw: (
        PositionalEmbedding(m.max_len, m.dim),
        (("weight", None),),
    ),
    "self_attention": lambda m, nchw: (
        SelfAttention(m.dim, m.heads, m.causal),
        _attention_params(""),
    ),
    "transformer_block": _transformer_block,
    "lstm": _lstm,
}
LAYER_TYPES = (*_TRANSLATIONS, "residual")


def _permute(layout: str) -> Permute:
    return Permute(NHWC_TO_NCHW if layout == NCHW else NCHW_TO_NHWC)


def _wanted(spec: LayerSpec) -> str | None:
    """The image layout `spec` needs: a residual block needs what its first picky layer does."""
    if spec.type == "residual":
        return next(filter(None, map(_wanted, spec.layers or [])), None)
    return _WANTS.get(spec.type)


class _Translator:
    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self.reason: str | None = None

    def sequence(
        self,
        specs: Sequence[LayerSpec],
        built: Iterable[Module],
        prefix: str,
        ndim: int,
        layout: str,
    ) -> tuple[list[torch.nn.Module], int, str]:
        """Torch modules for `specs` (trainctl's `built` layers, named `prefix` + index) taking
        inputs of `ndim` axes in `layout`; returns them with the rank and layout they leave."""
        modules: list[torch.nn.Module] = []
        for index, (spec, layer) in enumerate(zip(specs, built, strict=True)):
            name, wanted = f"{prefix}{index}", _wanted(spec)
            if ndim == 4 and wanted is not None and wanted != layout:
                modules.append(_permute(wanted))
                layout = wanted
            if spec.type == "residual":
                inner = spec.layers or []
                body, _, end = self.sequence(inner, layer.body, f"{name}.body.", ndim, layout)
                if end != layout:
                    body.append(_permute(layout))
                modules.append(Residual(torch.nn.Sequential(*body)))
                continue
            translate = _TRANSLATIONS.get(spec.type)
            if translate is None:
                raise PeerError(f"{name}: the torch peer has no equivalent of layer {spec.type!r}")
            module, params = translate(layer, ndim == 4 and layout == NCHW)
            for ours, axes, *theirs in params:
                self.slots.append(
                    Slot(f"{name}.{ours}", module, theirs[0] if theirs else ours, axes)
                )
            if spec.type == "dropout" and layer.p > 0:
                self.reason = "dropout masks come from different random generators"
            modules.append(module)
            rank = _RANKS.get(spec.type)
            if rank is not None:
                ndim, layout = rank(ndim), NHWC
        return modules, ndim, layout


def build_torch_model(
    specs: Sequence[LayerSpec], model: layers.Sequential, input_ndim: int, dtype: torch.dtype
) -> TorchModel:
    """The torch equivalent of trainctl's `model` (built from `specs`) for batches of
    `input_ndim` axes, in `dtype`; its weights are torch's defaults until copied in."""
    translator = _Translator()
    modules, ndim, layout = translator.sequence(specs, model, "", input_ndim, NHWC)
    if ndim == 4 and layout == NCHW:
        modules.append(_permute(NHWC))
    module = torch.nn.Sequential(*modules).to(dtype)
    return TorchModel(module, translator.slots, translator.reason)
