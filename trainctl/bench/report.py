"""The faces of a comparison: a Rich table and bar chart, a Markdown report, a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_BAR = "█"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _rows(result: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(figure, one cell per mode) for one batch size."""
    modes = result["modes"]
    names = list(modes)

    def row(label: str, cell) -> tuple[str, list[str]]:
        return label, [cell(modes[m]) for m in names]

    rows = [
        row("step median ms", lambda d: _ms(d["step_ms"]["median"])),
        row("step p10 / p90 ms", lambda d: f"{_ms(d['step_ms']['p10'])} / "
                                           f"{_ms(d['step_ms']['p90'])}"),
        row("samples/s", lambda d: f"{d['samples_per_s']:,.0f}"),
        row("first step ms", lambda d: _ms(d["first_step_ms"])),
        row("trace + compile s", lambda d: f"{d['trace_compile_s']:.3f}"
                                           if "trace_compile_s" in d else "-"),
        row("peak bytes / step", lambda d: _bytes(d.get("peak_step_bytes"))),
        row("ops / nodes per step", _ops_cell),
    ]  # fmt: skip
    if any("guards" in d for d in modes.values()):
        rows.append(row("traces / guard checks / eager fallbacks", _guards_cell))
    if any("cuda_graph" in d for d in modes.values()):
        rows.append(row("GPU launches / step", _launches_cell))
    if any("eval_ms" in d for d in modes.values()):
        rows.append(row("eval median ms", lambda d: _ms(d.get("eval_ms", {}).get("median"))))
    return rows


def _ops_cell(details: dict[str, Any]) -> str:
    if "ops_per_step" in details:
        return f"{details['ops_per_step']} ops"
    if "nodes_traced" in details:
        return f"{details['nodes_traced']} -> {details['nodes_optimized']} nodes"
    return "-"


def _guards_cell(details: dict[str, Any]) -> str:
    guards = details.get("guards")
    if guards is None:
        return "-"
    return f"{guards['traces']} / {guards['guard_checks']} / {guards['eager_fallbacks']}"


def _guards_text(guards: dict[str, Any]) -> str:
    """The cost of Python control flow on values, told beside the speedup it bought."""
    return (
        f"{guards['traces']} traces, {guards['guard_checks']} guard checks "
        f"({guards['guard_misses']} missed), {guards['eager_fallbacks']} eager fallbacks "
        f"in {guards['steps']} steps (graph.max_traces={guards['max_traces']})"
    )


def _launches_cell(details: dict[str, Any]) -> str:
    """A captured step's kernels, copies and memsets, each a launch without the CUDA graph,
    against the one launch that replays them all."""
    status = details.get("cuda_graph")
    if status is None:
        return "-"
    if not status["captured"]:
        return f"not captured: {status['reason']}"
    operations = sum(status["nodes"].values())
    return f"{operations} -> 1 (CUDA graph)" if operations else "1 (CUDA graph)"


def _speedup_lines(result: dict[str, Any]) -> list[str]:
    data = result["data"]["batch_ms"]
    lines = [f"data loading: {data['median']:.3f} ms per batch (median; outside the step times)"]
    for key, s in result["speedup"].items():
        other = key.removesuffix("_vs_eager")
        low, high = s["bootstrap_90"]
        lo_round, hi_round = s["rounds_min_max"]
        ratio = s["ratio"]
        how = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        line = (
            f"{other} vs eager: {how} (eager median / {other} median = {ratio:.2f}; bootstrap "
            f"90% {low:.2f}-{high:.2f}, rounds {lo_round:.2f}-{hi_round:.2f})"
        )
        guards = result["modes"].get(other, {}).get("guards")
        lines.append(line + (f"; guards: {_guards_text(guards)}" if guards else ""))
    return lines


def _agreement_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for label, a in result["agreement"].items():
        verdict = {True: "agree", False: "DISAGREE", None: "not comparable"}[a["ok"]]
        if label not in ("eager", "graph") and a["ok"] is False:
            verdict = "differ beyond the peer tolerance (reported, not a failure)"
        text = (
            f"{label} vs {a['reference']}: {verdict}: max loss difference "
            f"{a['max_loss_rel_diff']:.2e} relative (tolerance {a['loss_rtol']:.0e}), max "
            f"parameter difference {a['max_param_abs_diff']:.2e} (tolerance {a['param_atol']:.0e})"
        )
        if a.get("reason"):
            text += f"; {a['reason']}"
        lines.append(text)
    return lines


def bar_chart(results: list[dict[str, Any]], width: int = 40) -> str:
    """Median step time per mode and batch size as bars scaled to the slowest."""
    entries = [
        (r["batch_size"], mode, d["step_ms"]["median"])
        for r in results
        for mode, d in r["modes"].items()
    ]
    longest = max(value for _, _, value in entries)
    lines = []
    for batch_size, mode, value in entries:
        bar = _BAR * max(1, round(value / longest * width))
        lines.append(f"batch {batch_size:>5} {mode:<6} {bar} {value:.3f} ms")
    return "\n".join(lines)


def rich_report(report: dict[str, Any]) -> Group:
    parts: list[Any] = []
    for result in report["results"]:
        table = Table(title=f"{report['name']}: batch size {result['batch_size']}")
        table.add_column("figure", style="bold")
        for mode in result["modes"]:
            table.add_column(mode, justify="right")
        for label, cells in _rows(result):
            table.add_row(label, *cells)
        parts.append(table)
        for line in _speedup_lines(result) + _agreement_lines(result):
            style = "bold red" if "DISAGREE" in line else ""
            parts.append(Text(line, style=style))
        if "profile" in result:
            parts.append(profile_table(result["profile"]))
    parts.append(Text(f"every engine ran on {report['threads']} CPU thread(s)"))
    parts.append(Text("\nmedian step time", style="bold"))
    parts.append(Text(bar_chart(report["results"])))
    return Group(*parts)


def profile_table(profile: dict[str, Any], top: int = 12) -> Table:
    table = Table(
        title=(
            f"eager profile (separate instrumented pass, {profile['steps']} steps): "
            f"{profile['step_ms']:.3f} ms/step = {profile['op_compute_ms']:.3f} ms op compute + "
            f"{profile['framework_overhead_ms']:.3f} ms framework overhead"
        )
    )
    for column in ("op", "calls/step", "ms/step", "share"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for op in profile["ops"][:top]:
        table.add_row(
            op["op"], f"{op['calls_per_step']:g}", f"{op['ms_per_step']:.4f}", f"{op['share']:.1%}"
        )
    return table


def markdown_report(report: dict[str, Any], command: str) -> str:
    machine = report["machine"]
    blas = machine.get("blas") or {}
    lines = [
        f"# trainctl compare: {report['name']}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine.get('cpu') or machine.get('platform')}, "
        f"{machine.get('cpu_count')} cores; Python {machine.get('python')}, NumPy "
        f"{machine.get('numpy')}" + (f" ({blas.get('name')})" if blas.get("name") else "")
        + f"; trainctl {machine.get('trainctl')}; device {report['device']}, {report['dtype']}"
        + f"; every engine on {report['threads']} CPU thread(s).",
        "",
        f"{report['options']['steps']} timed steps per mode after {report['options']['warmup']} "
        f"warm-up steps, in {report['options']['rounds']} alternating rounds; step time is the "
        "whole training step (forward, loss, backward, update); data loading is excluded.",
    ]  # fmt: skip
    for result in report["results"]:
        modes = list(result["modes"])
        lines += ["", f"## Batch size {result['batch_size']}", ""]
        lines.append("| figure | " + " | ".join(modes) + " |")
        lines.append("|---|" + "---:|" * len(modes))
        for label, cells in _rows(result):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {line}" for line in _speedup_lines(result) + _agreement_lines(result)]
        if "profile" in result:
            profile = result["profile"]
            lines += [
                "",
                f"Eager profile (a separate instrumented pass): {profile['step_ms']:.3f} ms/step = "
                f"{profile['op_compute_ms']:.3f} ms op compute + "
                f"{profile['framework_overhead_ms']:.3f} ms framework overhead.",
                "",
                "| op | calls/step | ms/step | share |",
                "|---|---:|---:|---:|",
            ]
            lines += [
                f"| {op['op']} | {op['calls_per_step']:g} | {op['ms_per_step']:.4f} | "
                f"{op['share']:.1%} |"
                for op in profile["ops"][:12]
            ]
    verdict = "all modes agree" if report["ok"] else "MODES DISAGREE"
    lines += ["", f"Verdict: {verdict}.", ""]
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> str | None:
    """A PNG of step-time distributions per mode and batch size; None when it was written,
    else the reason it was skipped (matplotlib is an optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'trainctl[plot]'): skipped the PNG chart"
    results = report["results"]
    figure, axes = plt.subplots(1, len(results), figsize=(4 * len(results) + 1, 4), squeeze=False)
    for axis, result in zip(axes[0], results, strict=True):
        modes = list(result["modes"])
        samples = [result["modes"][m]["samples_ms"] for m in modes]
        axis.boxplot(samples, showfliers=False)
        axis.set_xticks(range(1, len(modes) + 1), modes)
        axis.set_title(f"batch {result['batch_size']}")
        axis.set_ylabel("step time (ms)")
        axis.set_ylim(bottom=0)
    figure.suptitle(f"trainctl compare: {report['name']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def save_report(report: dict[str, Any], runs_root: Path, command: str) -> tuple[Path, str | None]:
    """`runs/compare-<name>-<time>/` with compare.json, compare.md and compare.png.

    Returns the folder and, when the chart was skipped, why.
    """
    from trainctl.train.atomic import atomic_write_json, atomic_write_text
    from trainctl.train.rundir import RunFolder

    folder = RunFolder.create(runs_root, f"compare-{report['name']}", layout=False).path
    atomic_write_json(folder / "compare.json", {**report, "command": command})
    atomic_write_text(folder / "compare.md", markdown_report(report, command))
    return folder, write_chart(report, folder / "compare.png")


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
