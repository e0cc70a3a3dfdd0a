"""`trainctl compare`: the report's shape, the sweep, the agreement check that catches a
wrong graph, and the peer column."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainctl.autograd import passes
from trainctl.autograd.graph import Node
from trainctl.bench.compare import bootstrap_ratio
from trainctl.cli import app

ROOT = Path(__file__).parents[2]
DIGITS = ROOT / "configs" / "digits_mlp.yaml"
QUICK = ["--steps", "8", "--warmup", "1", "--rounds", "2"]
runner = CliRunner()


def compare(tmp_path: Path, *args: str):
    result = runner.invoke(
        app, ["compare", str(DIGITS), *QUICK, "--runs-root", str(tmp_path), "--json", *args]
    )
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


def test_report_schema_and_files(tmp_path):
    result, report = compare(tmp_path, "--eval", "--profile")
    assert result.exit_code == 0, result.output
    assert report["ok"] is True and report["name"] == "digits-mlp"
    assert report["options"]["steps"] == 8 and report["machine"]["cpu_count"] >= 1
    (row,) = report["results"]
    assert row["batch_size"] == 32
    eager, graph = row["modes"]["eager"], row["modes"]["graph"]
    for details in (eager, graph):
        assert set(details["step_ms"]) >= {"median", "p10", "p90", "count"}
        assert details["step_ms"]["count"] == 8 and len(details["samples_ms"]) == 8
        assert (
            details["step_ms"]["p10"] <= details["step_ms"]["median"] <= details["step_ms"]["p90"]
        )
        assert details["samples_per_s"] > 0 and details["first_step_ms"] > 0
        assert details["peak_step_bytes"] > 0 and details["eval_ms"]["median"] > 0
    assert eager["ops_per_step"] == sum(eager["ops_by_name"].values()) > 10
    assert graph["traces"] >= 1 and graph["trace_compile_s"] > 0
    assert graph["nodes_optimized"] <= graph["nodes_traced"]
    assert [p["name"] for p in graph["passes"]] == list(passes.PIPELINE)
    speed = row["speedup"]["graph_vs_eager"]
    low, high = speed["bootstrap_90"]
    assert low <= high and speed["ratio"] > 0
    agreement = row["agreement"]["graph"]
    assert agreement["ok"] is True and agreement["max_loss_rel_diff"] <= 1e-6
    profile = row["profile"]
    assert profile["op_compute_ms"] + profile["framework_overhead_ms"] == pytest.approx(
        profile["step_ms"], rel=1e-2
    )
    assert {op["op"] for op in profile["ops"]} >= {"matmul", "softmax_cross_entropy"}
    folder = Path(report["report_dir"])
    assert folder.parent == tmp_path and folder.name.startswith("compare-digits-mlp-")
    saved = json.loads((folder / "compare.json").read_text())
    assert saved["results"][0]["batch_size"] == 32 and saved["command"].startswith("trainctl ")
    markdown = (folder / "compare.md").read_text()
    assert "## Batch size 32" in markdown and "graph vs eager" in markdown


def test_batch_size_sweep_gives_one_row_each(tmp_path):
    result, report = compare(tmp_path, "--batch-sizes", "8,64")
    assert result.exit_code == 0, result.output
    assert [r["batch_size"] for r in report["results"]] == [8, 64]
    assert all(r["agreement"]["graph"]["ok"] for r in report["results"])


def test_single_mode_has_no_pairs(tmp_path):
    result, report = compare(tmp_path, "--modes", "eager")
    assert result.exit_code == 0, result.output
    (row,) = report["results"]
    assert list(row["modes"]) == ["eager"] and row["speedup"] == {} and row["agreement"] == {}


def _perturbed_fuse(graph):
    """The real last pass, then one float literal nudged: a wrong graph that still runs."""
    graph = passes.fuse_elementwise(graph)
    nodes = list(graph.nodes)
    for i, node in enumerate(nodes):
        for j, x in enumerate(node.inputs):
            if type(x) is float and x not in (0.0, 1.0):
                inputs = node.inputs[:j] + (x * 1.01,) + node.inputs[j + 1 :]
                nodes[i] = Node(node.op, inputs, node.attrs, node.out)
                return graph.with_nodes(nodes, graph.outputs)
    raise AssertionError("no float literal to perturb")


def test_disagreement_is_caught_and_fails_the_command(tmp_path, monkeypatch):
    monkeypatch.setitem(passes.PASSES, "fuse", _perturbed_fuse)
    result, report = compare(tmp_path)
    assert result.exit_code == 1
    assert report["ok"] is False
    agreement = report["results"][0]["agreement"]["graph"]
    assert agreement["ok"] is False and agreement["first_step_beyond_tolerance"] is not None
    assert "the modes disagree beyond tolerance" in result.stderr


def test_rich_output_shows_the_table_chart_and_verdict(tmp_path):
    result = runner.invoke(
        app, ["compare", str(DIGITS), *QUICK, "--runs-root", str(tmp_path)],
        env={"COLUMNS": "160"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "step median ms" in result.output and "graph vs eager:" in result.output
    assert "median step time" in result.output and "█" in result.output
    assert "data loading: " in result.output and "outside the step times" in result.output
    assert "agree" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps and --rounds must be >= 1"),
        (["--modes", "eager,lazy"], "--modes takes a list of eager, graph"),
        (["--batch-sizes", "8,x"], "--batch-sizes takes integers"),
        (["--with", "jax"], "--with takes torch"),
        (["--loss-rtol", "-1"], "--loss-rtol takes a finite number >= 0, got -1.0"),
        (["--loss-rtol", "nan"], "--loss-rtol takes a finite number >= 0, got nan"),
        (["--param-atol", "inf"], "--param-atol takes a finite number >= 0, got inf"),
        (["--loss-rtol", "tiny"], "invalid value for '--loss-rtol'"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, args, message):
    result = runner.invoke(app, ["compare", str(DIGITS), "--runs-root", str(tmp_path), *args])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert message in line
    assert list(tmp_path.iterdir()) == []  # nothing ran, no report


def test_bootstrap_interval_brackets_the_ratio():
    slow = [10.0 + 0.1 * (i % 7) for i in range(50)]
    fast = [2.0 + 0.05 * (i % 5) for i in range(50)]
    low, high = bootstrap_ratio(slow, fast, seed=0)
    assert low <= (sorted(slow)[25] / sorted(fast)[25]) <= high
    assert 4.5 < low <= high < 5.5


def test_with_torch_adds_a_checked_peer_column(tmp_path):
    pytest.importorskip("torch")
    result, report = compare(tmp_path, "--with", "torch")
    assert result.exit_code == 0, result.output
    row = report["results"][0]
    torch_column = row["modes"]["torch"]
    assert torch_column["step_ms"]["count"] == 8 and torch_column["version"]
    assert torch_column["peak_step_bytes"] is None  # tracemalloc cannot see torch's allocator
    agreement = row["agreement"]["torch"]
    assert agreement["comparable"] is True and agreement["ok"] is True
    assert agreement["max_loss_rel_diff"] < 1e-5
    assert "torch_vs_eager" in row["speedup"]


def test_with_torch_when_torch_is_missing_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    result = runner.invoke(
        app, ["compare", str(DIGITS), *QUICK, "--runs-root", str(tmp_path), "--with", "torch"]
    )
    assert result.exit_code == 2
    assert "--with torch needs PyTorch, which is not installed: pip install torch" in result.output
    assert "--index-url https://download.pytorch.org/whl/cpu" in result.output
    assert "Traceback" not in result.output


def test_png_chart_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    result, report = compare(tmp_path, "--batch-sizes", "8,16")
    assert result.exit_code == 0, result.output
    png = Path(report["report_dir"]) / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_without_matplotlib_the_chart_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    result = runner.invoke(app, ["compare", str(DIGITS), *QUICK, "--runs-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "matplotlib is not installed" in result.output
    (folder,) = tmp_path.iterdir()
    assert not (folder / "compare.png").exists() and (folder / "compare.json").exists()


def test_a_peer_that_differs_is_reported_but_does_not_fail(tmp_path):
    pytest.importorskip("torch")
    from trainctl.bench.compare import CompareOptions
    from trainctl.bench.compare import compare as run_compare
    from trainctl.config import load_config

    options = CompareOptions(steps=4, warmup=1, rounds=2, with_torch=True, peer_loss_rtol=0.0)
    report = run_compare(load_config(DIGITS), options)
    agreement = report["results"][0]["agreement"]
    assert agreement["graph"]["ok"] is True
    assert agreement["torch"]["ok"] is False  # float32 rounding differs from trainctl's
    assert report["ok"] is True


def test_gpu_launches_per_step_with_and_without_the_cuda_graph():
    from trainctl.bench.report import _rows

    def result(status):
        details = {
            "step_ms": {"median": 1.0, "p10": 0.9, "p90": 1.1},
            "samples_per_s": 64000.0,
            "first_step_ms": 5.0,
        }
        graph = {**details, "cuda_graph": status} if status else details
        return {"modes": {"eager": details, "graph": graph}}

    captured = {"captured": True, "nodes": {"kernel": 40, "memcpy": 2, "memset": 1}}
    rows = dict(_rows(result(captured)))
    assert rows["GPU launches / step"] == ["-", "43 -> 1 (CUDA graph)"]
    refused = {"captured": False, "reason": "the step draws random numbers"}
    assert dict(_rows(result(refused)))["GPU launches / step"][1] == (
        "not captured: the step draws random numbers"
    )
    assert "GPU launches / step" not in dict(_rows(result(None)))  # on the CPU


def test_every_engine_runs_on_the_configured_threads(tmp_path):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    result, report = compare(tmp_path, "--with", "torch", "--set", "threads=1")
    assert result.exit_code == 0, result.output
    assert report["threads"] == 1
    assert report["results"][0]["modes"]["torch"]["threads"] == 1
    assert torch.get_num_threads() == before  # torch's process-wide setting is given back
    markdown = (Path(report["report_dir"]) / "compare.md").read_text()
    assert "every engine on 1 CPU thread(s)" in markdown
