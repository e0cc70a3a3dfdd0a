"""A DAG of named blocks: run order, joins, shapes, gradients through concat and add, and
join mismatches reported with both blocks' shapes and lines."""

import numpy as np
import pytest
from gradcheck import gradcheck

from trainctl.autograd import Tensor
from trainctl.config import ConfigError, parse_config
from trainctl.nn.blocks import Blocks, build_blocks
from trainctl.nn.build import ModelError
from trainctl.train.components import build_components

# Listed out of order: `out` first; it must still run after the blocks it reads.
DAG = """data: {dataset: digits}
model:
  blocks:
    out: {inputs: [skip], layers: [{linear: {out: 3}}]}
    a: {inputs: input, layers: [{linear: {out: 4}}, tanh]}
    b: {inputs: input, layers: [{linear: {out: 2}}, sigmoid]}
    c: {inputs: input, layers: [{linear: {out: 2}}]}
    cat: {inputs: [b, c], join: concat}
    skip: {inputs: [a, cat], join: add, layers: [tanh]}
  output: out
"""


def dag(text: str = DAG):
    model = parse_config(text, "dag.yaml").model
    return build_blocks(model.blocks, model.output, (5,))


def test_blocks_run_after_their_inputs_and_report_each_shape():
    model, out_shape = dag()
    assert out_shape == (3,)
    assert [name for name, _, _ in model.wiring] == ["a", "b", "c", "cat", "skip", "out"]
    assert model.shapes == {"a": (4,), "b": (2,), "c": (2,), "cat": (4,), "skip": (4,),
                            "out": (3,)}  # fmt: skip
    assert model.describe()[3:] == [
        "cat: concat(b, c) -> (4,)",
        "skip: add(a, cat) -> 1 layer -> (4,)",
        "out: skip -> 1 layer -> (3,)  (output)",
    ]
    assert [name for name, _ in model.named_parameters()][:2] == ["a.0.weight", "a.0.bias"]


def test_the_forward_is_the_wiring_written_out():
    model, _ = dag()
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    blocks = dict(model.named_modules())
    a, b, c = (blocks[name](Tensor(x)).data for name in "abc")
    skip = np.tanh(a + np.concatenate([b, c], axis=-1))
    expected = blocks["out"](Tensor(skip)).data
    np.testing.assert_allclose(model(Tensor(x)).data, expected, rtol=1e-6)


def test_gradients_through_concat_and_add_match_finite_differences():
    model, _ = dag()
    model.to(dtype=np.float64)
    x = Tensor(np.random.default_rng(1).standard_normal((3, 5)), dtype=np.float64,
               requires_grad=True)  # fmt: skip
    assert gradcheck(lambda: model(x), [x, *model.parameters()]) < 1e-6


def test_image_blocks_concatenate_along_the_channels():
    text = """data: {dataset: digits}
model:
  blocks:
    wide: {layers: [{conv2d: {out: 3, padding: 1}}]}
    narrow: {inputs: input, layers: [{conv2d: {out: 2, kernel: 1}}]}
    both: {inputs: [wide, narrow, input], join: concat, layers: [flatten]}
"""
    model = parse_config(text, "c.yaml").model
    built, out_shape = build_blocks(model.blocks, model.output, (8, 8, 1))
    assert isinstance(built, Blocks) and out_shape == (8 * 8 * 6,)


@pytest.mark.parametrize(
    "change, where, message",
    [
        (("inputs: [a, cat], join: add", "inputs: [a, cat, b], join: add"),
         "model.blocks.skip.inputs",
         "add needs the same shape: a (line 5) gives (4,), cat (line 8) gives (4,), b (line 6) "
         "gives (2,)"),
        (("inputs: [b, c], join: concat", "inputs: [b, c, input], join: add"),
         "model.blocks.cat.inputs",
         "add needs the same shape: b (line 6) gives (2,), c (line 7) gives (2,), input (the "
         "model's input) gives (5,)"),
        (("layers: [{linear: {out: 4}}, tanh]", "layers: [{conv2d: {out: 4}}]"),
         "model.blocks.a.layers[0].conv2d",
         "needs (H, W, C) image input, got samples of shape (5,)"),
    ],
)  # fmt: skip
def test_a_join_that_does_not_fit_names_both_blocks_lines_and_shapes(change, where, message):
    with pytest.raises(ModelError) as caught:
        dag(DAG.replace(*change))
    assert (caught.value.where, caught.value.message) == (where, message)


def test_a_build_error_in_a_block_is_a_config_error_at_its_line():
    text = DAG.replace("  blocks:\n", "  blocks:\n    flat: {layers: [flatten]}\n")
    text = text.replace("inputs: input", "inputs: flat").replace(
        "{out: 2}}]}\n    cat", "{out: 3}}]}\n    cat"
    )
    with pytest.raises(ConfigError) as caught:
        build_components(parse_config(text, "dag.yaml"))
    assert str(caught.value) == (
        "dag.yaml:10: model.blocks.skip.inputs: add needs the same shape: a (line 6) gives (4,), "
        "cat (line 9) gives (5,)"
    )


def test_blocks_may_take_the_names_of_module_attributes():
    text = """data: {dataset: digits}
model:
  blocks:
    train: {layers: [{linear: {out: 3}}]}
    to: {inputs: input, layers: [{linear: {out: 3}}]}
    output: {inputs: [train, to], join: add, layers: [{dropout: {p: 0.5}}]}
"""
    model, _ = dag(text)
    model.to(dtype=np.float64).eval()
    assert model.training is False and model.output == "output"
    assert [name for name, _ in model.named_parameters()] == [
        "train.0.weight", "train.0.bias", "to.0.weight", "to.0.bias"
    ]  # fmt: skip
    x = Tensor(np.ones((2, 5)))
    np.testing.assert_array_equal(model(x).data, model(x).data)  # eval: no dropout
