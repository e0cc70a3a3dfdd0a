"""Models built from layer specs: input sizes are inferred, errors name the layer."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from trainctl import nn
from trainctl.autograd import Tensor
from trainctl.backend import manual_seed
from trainctl.nn.build import LAYERS, ModelError, build_model, count_parameters
from trainctl.spec import resolve_args


@dataclass
class Spec:
    type: str
    args: dict = field(default_factory=dict)
    layers: list | None = None


def spec(name, layers=None, **given):
    args = {} if name == "residual" else resolve_args(LAYERS[name], given)
    return Spec(name, args, layers)


def test_mlp_infers_input_features_from_sample_shape():
    model, _ = build_model(
        [spec("flatten"), spec("linear", out=32), spec("relu"), spec("linear", out=10)], (8, 8, 1)
    )
    first, last = model[1], model[3]
    assert (first.in_features, first.out_features) == (64, 32)
    assert (last.in_features, last.out_features) == (32, 10)
    assert count_parameters(model) == 64 * 32 + 32 + 32 * 10 + 10


def test_cnn_infers_channels_and_flattened_size():
    layers = [
        spec("conv2d", out=8, kernel=3, padding=1),
        spec("batch_norm"),
        spec("relu"),
        spec("max_pool2d"),
        spec("conv2d", out=16, kernel=3),
        spec("flatten"),
        spec("linear", out=4),
    ]
    model, shape = build_model(layers, (12, 12, 3))
    assert shape == (4,)
    assert model[0].in_channels == 3
    assert isinstance(model[1], nn.BatchNorm2d) and model[1].num_features == 8
    assert model[4].in_channels == 8
    assert model[6].in_features == 4 * 4 * 16
    out = model(Tensor(np.zeros((5, 12, 12, 3), np.float32)))
    assert out.shape == (5, 4)


def test_residual_block_keeps_shape_and_adds_input():
    block = spec("residual", layers=[spec("linear", out=6), spec("tanh")])
    model, _ = build_model([block], (6,))
    assert isinstance(model[0], nn.Residual)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    body = model[0].body(Tensor(x)).numpy()
    np.testing.assert_allclose(model(Tensor(x)).numpy(), x + body, rtol=1e-6)


def test_residual_block_that_changes_shape_is_refused():
    block = spec("residual", layers=[spec("linear", out=3)])
    with pytest.raises(ModelError, match=r"model.layers\[0\].residual: .* keep the shape"):
        build_model([block], (6,))


def test_linear_on_images_says_to_flatten():
    with pytest.raises(ModelError, match=r"model.layers\[0\].linear: .*add flatten first"):
        build_model([spec("linear", out=3)], (8, 8, 1))


def test_conv_on_features_names_the_layer_and_shape():
    with pytest.raises(ModelError, match=r"layers\[1\].conv2d: needs \(H, W, C\).*\(64,\)"):
        build_model([spec("flatten"), spec("conv2d", out=3)], (8, 8, 1))


def test_kernel_larger_than_image_is_a_model_error():
    with pytest.raises(ModelError, match=r"layers\[0\].conv2d"):
        build_model([spec("conv2d", out=3, kernel=5)], (3, 3, 1))


def test_batch_norm_picks_1d_for_features():
    model, _ = build_model([spec("linear", out=4), spec("batch_norm")], (3,))
    assert isinstance(model[1], nn.BatchNorm1d)


def test_embedding_takes_integer_samples():
    model, _ = build_model(
        [spec("embedding", num=10, dim=4), spec("flatten"), spec("linear", out=2)],
        (5,),
        input_dtype=np.int64,
    )
    assert model[2].in_features == 20


def test_same_seed_same_weights_and_every_layer_type_builds():
    layers = [
        spec("conv2d", out=4, padding=1),
        spec("leaky_relu"),
        spec("avg_pool2d"),
        spec("upsample2d", scale=3),
        spec("gelu"),
        spec("global_avg_pool"),
        spec("layer_norm"),
        spec("dropout", p=0.1),
        spec("linear", out=3),
        spec("sigmoid"),
        spec("silu"),
        spec("softplus"),
        spec("elu", alpha=0.5),
        spec("softmax"),
    ]
    built = []
    for _ in range(2):
        manual_seed(7)
        built.append(build_model(layers, (6, 6, 2))[0].state_dict())
    assert built[0].keys() == built[1].keys()
    for key in built[0]:
        np.testing.assert_array_equal(built[0][key], built[1][key])
    sequence_layers = {"positional_embedding", "self_attention", "transformer_block", "lstm"}
    assert set(LAYERS) - sequence_layers - {"residual", "embedding", "batch_norm", "flatten",
                          "relu", "tanh", "max_pool2d"} <= {s.type for s in layers}  # fmt: skip


def test_a_character_language_model_builds_from_specs():
    layers = [
        spec("embedding", num=11, dim=8),
        spec("positional_embedding"),
        spec("transformer_block", heads=2),
        spec("self_attention", heads=4, causal=False),
        spec("lstm", hidden=6),
        spec("linear", out=11),
    ]
    model, shape = build_model(layers, (5,), input_dtype=np.int64)
    assert shape == (5, 11)
    assert model[1].max_len == 5 and model[2].attn.causal and not model[3].causal
    assert (model[4].input_size, model[4].hidden_size) == (8, 6)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([spec("flatten"), spec("lstm", hidden=3)], r"lstm: needs \(T, features\) sequences"),
        ([spec("embedding", num=4, dim=6), spec("self_attention", heads=4)], "4 heads do not"),
        (
            [spec("embedding", num=4, dim=6), spec("positional_embedding", max_len=3)],
            r"positional_embedding: PositionalEmbedding\(max_len=3, dim=6\) expects",
        ),
    ],
)
def test_sequence_layers_name_their_place_when_they_cannot_build(layers, message):
    with pytest.raises(ModelError, match=message):
        build_model(layers, (5,), input_dtype=np.int64)
