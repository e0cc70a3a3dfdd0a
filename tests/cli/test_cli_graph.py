"""`trainctl graph`: the step's IR, DOT and generated code for a config, and its errors."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl.autograd.passes import PIPELINE
from trainctl.cli import app

CONFIG = str(Path(__file__).parents[2] / "configs" / "digits_mlp.yaml")
runner = CliRunner()


def graph(*args: str):
    return runner.invoke(app, ["graph", CONFIG, *args])


def header_counts(text: str) -> dict[str, int]:
    counts = {}
    for line in text.splitlines():
        if line.startswith(("# traced:", "# optimized:")):
            name, rest = line[2:].split(":", 1)
            counts[name] = int(rest.split()[0])
    return counts


def test_text_has_a_header_per_pass_and_one_line_per_node():
    result = graph()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    passes = [line for line in lines if line.startswith("# pass ")]
    assert [line.split()[2].rstrip(":") for line in passes] == list(PIPELINE)
    counts = header_counts(result.output)
    assert counts["optimized"] < counts["traced"]
    assert any(line.startswith("# buffers: ") and "bytes" in line for line in lines)
    assert "inputs float32[32, 8, 8, 1], targets int64[32]" in lines[0]


def test_traced_stage_and_disabled_passes_keep_more_nodes():
    traced = header_counts(graph("--stage", "traced").output)
    unfused = header_counts(graph("--disable", "fuse,cse").output)
    optimized = header_counts(graph().output)
    assert traced["traced"] == optimized["traced"]
    assert optimized["optimized"] < unfused["optimized"]  # fusion and CSE remove nodes


def test_code_is_python_and_dot_is_a_digraph(tmp_path):
    code = graph("--format", "code")
    assert code.exit_code == 0, code.output
    compile(code.output, "<step>", "exec")  # the generated source is valid Python
    assert "def step(" in code.output and "xp.matmul(" in code.output
    target = tmp_path / "step.dot"
    result = graph("--format", "dot", "-o", str(target))
    assert result.exit_code == 0 and f"wrote {target}" in result.output
    dot = target.read_text()
    assert "digraph" in dot and dot.rstrip().endswith("}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--disable", "bogus"], "unknown passes 'bogus'"),
        (["--format", "svg"], "unknown format 'svg'"),
        (["--stage", "final"], "unknown stage 'final'"),
    ],
)
def test_bad_options_are_one_line_errors(args, message):
    result = graph(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
