"""Neural-network building blocks: Module, layers, initialisers and losses.

Everything is composed of the primitives in `trainctl.autograd.ops`, so eager and graph mode
run the same layer code.
"""

from trainctl.nn import functional, init
from trainctl.nn.layers import (
    ELU,
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    Upsample2d,
)
from trainctl.nn.losses import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    sequence_cross_entropy,
)
from trainctl.nn.module import Module, Parameter
from trainctl.nn.sequence import (
    LSTM,
    MultiHeadSelfAttention,
    PositionalEmbedding,
    TransformerBlock,
)

__all__ = [
    "ELU",
    "GELU",
    "LSTM",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2d",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "MultiHeadSelfAttention",
    "Module",
    "Parameter",
    "PositionalEmbedding",
    "ReLU",
    "Residual",
    "Sequential",
    "Sigmoid",
    "SiLU",
    "Softplus",
    "Softmax",
    "Tanh",
    "TransformerBlock",
    "Upsample2d",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "functional",
    "init",
    "mse_loss",
    "sequence_cross_entropy",
]
