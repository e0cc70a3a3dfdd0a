"""The CLI on a model that branches on a tensor value (configs/digits_branching.yaml):
`graph` shows the guard, `compare` reports traces, guard checks and eager fallbacks beside
the speedup, and both modes agree."""

import json
from pathlib import Path

from typer.testing import CliRunner

from trainctl.cli import app
from trainctl.train.metrics_log import read_metrics

CONFIG = str(Path(__file__).parents[2] / "configs" / "digits_branching.yaml")
runner = CliRunner()


def test_graph_shows_the_guard_and_its_expected_outcome():
    result = runner.invoke(app, ["graph", CONFIG])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "# guards: 1, checked before each replay" in result.output
    (guard,) = [line for line in lines if line.startswith("# guard 1: ")]
    assert guard.startswith("# guard 1: bool(greater(0.65, mul(sum(relu(")
    assert guard.endswith(("== True", "== False"))
    # a guarded trace updates each parameter on its own: no flat state another trace could share
    assert "state %param:" in result.output and "%flat:" not in result.output


def test_compare_reports_traces_guard_checks_and_fallbacks(tmp_path):
    # a threshold at the first steps' mean activation: the branch flips from batch to batch
    sets = ["threads=1", "graph.max_traces=1", "model.args.threshold=0.28"]
    args = ["compare", CONFIG, "--steps", "6", "--warmup", "1", "--rounds", "2",
            "--runs-root", str(tmp_path), *(f"--set={s}" for s in sets)]  # fmt: skip
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    (measured,) = report["results"]
    guards = measured["modes"]["graph"]["guards"]
    assert guards["steps"] == 8 and guards["traces"] == 1 and guards["max_traces"] == 1
    assert guards["guard_checks"] == 7  # every step but the traced one
    assert guards["eager_fallbacks"] == guards["guard_misses"] >= 1  # and still agree
    assert "guards" not in measured["modes"]["eager"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "traces / guard checks / eager fallbacks" in table.output
    assert "guards: 1 traces, 7 guard checks" in " ".join(table.output.split())


def train(runs: Path, *sets: str) -> Path:
    fixed = ["threads=1", "train.log_every=1", "model.args.threshold=0.28"]
    args = [f"--set={s}" for s in (*fixed, *sets)]
    result = runner.invoke(app, ["train", CONFIG, "--runs-root", str(runs), "-q", *args])
    assert result.exit_code == 0, result.output
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


def test_training_flips_branches_like_eager_and_resumes_with_another_bound(tmp_path):
    """A run in graph mode trains as eager mode does while the branch flips; a resume may
    lower graph.max_traces (the steps past it run eagerly) and still goes on exactly."""
    eager = train(tmp_path / "eager", "train.max_steps=12")
    graph = train(tmp_path / "graph", "train.max_steps=12", "mode=graph")
    assert losses(graph) == losses(eager) and len(losses(eager)) == 12
    summary = json.loads((graph / "summary.json").read_text())["graph"]
    assert summary["guard_misses"] >= 1 and summary["eager_fallbacks"] == 0
    short = train(tmp_path / "short", "train.max_steps=6", "mode=graph")
    sets = ["--set=train.max_steps=12", "--set=graph.max_traces=1"]
    result = runner.invoke(app, ["train", "--resume", str(short), "-q", *sets])
    assert result.exit_code == 0, result.output
    assert losses(short) == losses(eager)
    resumed = json.loads((short / "summary.json").read_text())["graph"]
    assert resumed["max_traces"] == 1 and resumed["eager_fallbacks"] >= 1
    (told,) = [
        line for line in (short / "train.log").read_text().splitlines() if "runs eagerly" in line
    ]
    assert "graph.max_traces=1" in told
