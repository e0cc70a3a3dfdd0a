"""The model forms beyond a layer list in a config: a DAG of named blocks and a Python class.
Each mistake is one line naming the file, line and key, and what was expected."""

import pytest

from trainctl.config import ConfigError, config_to_dict, dump_config, parse_config
from trainctl.config.schema import BlockConfig, LayerConfig

HEAD = "data: {dataset: digits}\n"


def errors(text: str, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + text, "m.yaml", overrides)
    return [str(issue) for issue in caught.value.issues]


INCEPTION = """model:
  blocks:
    stem: {layers: [{conv2d: {out: 4}}, relu]}
    a: {inputs: stem, layers: [{conv2d: {out: 2, kernel: 1}}]}
    b: {inputs: [stem], layers: [{conv2d: {out: 3, kernel: 1}}]}
    both: {inputs: [a, b], join: concat}
    head: {layers: [flatten, {linear: {out: 10}}]}
"""


def test_blocks_default_their_inputs_to_the_block_before_and_the_output_to_the_last():
    model = parse_config(HEAD + INCEPTION, "m.yaml").model
    assert model.kind == "blocks" and model.output == "head"
    assert model.blocks[0] == BlockConfig(
        "stem", ["input"], None, [LayerConfig("conv2d", model.blocks[0].layers[0].args),
                                  LayerConfig("relu")]
    )  # fmt: skip
    assert [(b.name, b.inputs, b.join) for b in model.blocks[1:]] == [
        ("a", ["stem"], None), ("b", ["stem"], None), ("both", ["a", "b"], "concat"),
        ("head", ["both"], None),
    ]  # fmt: skip
    assert [b.line for b in model.blocks] == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    "text",
    [INCEPTION, INCEPTION.replace("join: concat", "join: add") + "  output: head\n"],
)
def test_a_blocks_config_dumps_and_loads_back_equal(text):
    config = parse_config(HEAD + text, "m.yaml")
    assert parse_config(dump_config(config), "again.yaml") == config
    assert "layers" not in config_to_dict(config)["model"]["blocks"]["both"]


@pytest.mark.parametrize(
    "replace, expected",
    [
        (("inputs: [a, b]", "inputs: [a, c]"),
         "m.yaml:7: model.blocks.both.inputs[1]: expected input or the name of a block (stem, "
         "a, b, both, head), found 'c'"),
        (("inputs: stem, layers", "inputs: stemm, layers"),
         "m.yaml:5: model.blocks.a.inputs[0]: expected input or the name of a block (stem, a, "
         "b, both, head), found 'stemm' (did you mean 'stem'?)"),
        ((", join: concat", ""),
         "m.yaml:7: model.blocks.both.join: expected how 2 inputs meet: concat or add, found "
         "nothing"),
        (("join: concat", "join: stack"),
         "m.yaml:7: model.blocks.both.join: expected how 2 inputs meet: concat or add, found "
         "'stack'"),
        (("inputs: stem, layers", "inputs: stem, join: add, layers"),
         "m.yaml:5: model.blocks.a.join: expected no join (the block has one input), found "
         "'add'"),
        (("stem: {layers", "stem: {inputs: head, layers"),
         "m.yaml:4: model.blocks.stem.inputs: expected blocks whose inputs form no cycle, "
         "found stem -> head -> both -> a -> stem"),
        (("inputs: [a, b]", "inputs: [a, both]"),
         "m.yaml:7: model.blocks.both.inputs[1]: expected another block or input, found "
         "'both', the block itself"),
        (("inputs: [a, b]", "inputs: [a, a]"),
         "m.yaml:6: model.blocks.b: expected every block to lead to the output (head), found "
         "a block that does not"),
        (("b: {inputs", "input: {inputs"),
         "m.yaml:6: model.blocks.input: expected a block name of letters, digits and _ other "
         "than input, found 'input'"),
        (("stem: {layers", "stem: {layer"),
         "m.yaml:4: model.blocks.stem.layer: expected a key of a block (inputs, join, layers), "
         "found 'layer' (did you mean 'layers'?)"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_blocks_is_one_line_at_its_key(replace, expected):
    assert errors(INCEPTION.replace(*replace)) == [expected]


def test_an_unknown_output_and_an_empty_blocks_mapping():
    assert errors(INCEPTION + "  output: hed\n") == [
        "m.yaml:9: model.output: expected the name of a block (stem, a, b, both, head), found 'hed'"
    ]
    assert errors("model: {blocks: {}}\n") == [
        "m.yaml:2: model.blocks: expected a mapping of named blocks (name: {inputs, join, "
        "layers}), found an empty mapping"
    ]


def test_a_model_takes_one_form():
    assert errors("model: {layers: [relu], python: m.py:Net}\n") == [
        "m.yaml:2: model: expected one of layers, blocks or python, found layers and python"
    ]
    assert errors("model: {python: m.py:Net, output: x}\n")[0] == (
        "m.yaml:2: model.output: expected a key of a model with python (python, args), "
        "found 'output'"
    )


def test_a_python_model_names_its_file_from_the_configs_folder(tmp_path):
    (tmp_path / "nets.py").write_text("")
    text = HEAD + "model: {python: nets.py:Net, args: {width: 3}}\n"
    model = parse_config(text, "m.yaml", folder=tmp_path).model
    assert model.kind == "python"
    assert model.python == f"{tmp_path}/nets.py:Net" and model.args == {"width": 3}
    config = parse_config(text, "m.yaml", folder=tmp_path)
    assert parse_config(dump_config(config), "again.yaml") == config
    assert parse_config(HEAD + "model: {python: 'pkg.nets:Net'}\n").model.python == "pkg.nets:Net"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("nets.py:Net", "expected a Python file at {dir}/nets.py, found nothing there"),
        ("nets.py", "expected FILE.py:Class or package.module:Class, found 'nets.py'"),
        ("nets.py:2Net", "expected FILE.py:Class or package.module:Class, found 'nets.py:2Net'"),
        ("null", "expected FILE.py:Class or package.module:Class, found nothing"),
    ],
)
def test_python_model_mistakes(tmp_path, value, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + f"model: {{python: {value}}}\n", "m.yaml", folder=tmp_path)
    (issue,) = caught.value.issues
    assert str(issue) == f"m.yaml:2: model.python: {expected.format(dir=tmp_path)}"


def test_python_model_args_must_be_a_mapping(tmp_path):
    (tmp_path / "nets.py").write_text("")
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + "model: {python: nets.py:Net, args: [3]}\n", "m.yaml", folder=tmp_path)
    assert str(caught.value) == (
        "m.yaml:2: model.args: expected a mapping of the arguments of the class, found [3]"
    )


def test_a_long_chain_of_blocks_is_checked_without_recursion_and_in_linear_time():
    import time

    from trainctl.nn.blocks import run_order

    count = 1500  # deeper than Python's default recursion limit (1000)
    chain = "".join(f"    b{i}: {{layers: [relu]}}\n" for i in range(count))
    started = time.perf_counter()
    model = parse_config(HEAD + "model:\n  blocks:\n" + chain, "m.yaml").model
    assert run_order(model.blocks) == [f"b{i}" for i in range(count)]
    cyclic = chain.replace("b0: {layers", f"b0: {{inputs: b{count - 1}, layers")
    assert errors("model:\n  blocks:\n" + cyclic) == [
        "m.yaml:4: model.blocks.b0.inputs: expected blocks whose inputs form no cycle, found "
        f"b0 -> b{count - 1} -> b{count - 2} -> b{count - 3} -> ... -> b1 -> b0 ({count} blocks)"
    ]
    assert time.perf_counter() - started < 20  # a hang guard with a wide margin, not a target


def test_blocks_run_in_the_configs_order_where_their_inputs_allow():
    from trainctl.nn.blocks import run_order

    text = """model:
  blocks:
    a: {inputs: input}
    c: {inputs: b}
    b: {inputs: input}
    d: {inputs: [a, c], join: add}
"""
    assert run_order(parse_config(HEAD + text, "m.yaml").model.blocks) == ["a", "b", "c", "d"]
