"""Rich renderings the CLI prints: score tables, run lists, summaries and loss curves.

Pure functions from plain data to Rich renderables (or text), so they are testable without a
terminal and the CLI commands stay thin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from trainctl.number_format import duration, metric_text


def scores_table(scores: dict[str, Any]) -> Table:
    table = Table()
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in scores.items():
        table.add_row(key, metric_text(value))
    return table


def confusion_table(matrix: np.ndarray, class_names: Sequence[str] | None = None) -> Table:
    """Rows are true classes, columns predicted; the diagonal (correct) is highlighted.
    Classes are labelled by name where the data set names them, else by index."""
    labels = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("", style="bold", justify="right")
    for j in range(matrix.shape[1]):
        table.add_column(Text(labels[j]), justify="right")
    for i, row in enumerate(matrix):
        cells = [Text(str(v), style="bold green" if i == j else "") for j, v in enumerate(row)]
        table.add_row(Text(labels[i]), *cells)
    return table


def best_text(summary: dict[str, Any]) -> str:
    best = summary.get("best")
    if not best:
        return "-"
    metric = str(best.get("metric", "?")).removeprefix("val/")
    return f"{metric} {metric_text(best.get('value'))} @ {metric_text(best.get('step'))}"


_STATUS_STYLE = {
    "completed": "green",
    "running": "yellow",
    "interrupted": "yellow",
    "stopped": "yellow",
    "failed": "red",
}


# The columns of `trainctl runs`, left to right, and the order a narrow screen drops them in.
_RUN_COLUMNS = ("run", "status", "steps", "best (val)", "duration", "mode", "device")
_DROPPED_FIRST = ("device", "mode", "duration", "steps", "best (val)")


def _run_cells(name: str, summary: dict[str, Any]) -> dict[str, str]:
    return {
        "run": name,
        "status": str(summary.get("status", "?")),
        "steps": metric_text(summary.get("steps")),
        "best (val)": best_text(summary),
        "duration": duration(summary.get("duration_s")),
        "mode": str(summary.get("mode", "-")),
        "device": str(summary.get("device", "-")),
    }


def runs_table(rows: Sequence[tuple[str, dict[str, Any]]], width: int | None = None) -> Table:
    """One row per run: (folder name, summary dict). To fit in `width` columns, columns go
    in the order device, mode, duration, steps, best; no cell is ever cut to '…'."""
    cells = [_run_cells(name, summary) for name, summary in rows]
    columns = list(_RUN_COLUMNS)
    table = _runs_table(columns, cells)
    for dropped in _DROPPED_FIRST:
        if width is None or _natural_width(table) <= width:
            break
        columns.remove(dropped)
        table = _runs_table(columns, cells)
    return table


def _runs_table(columns: list[str], cells: list[dict[str, str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in columns:
        right = column in ("steps", "duration")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for row in cells:  # Text, not markup: a summary edited by hand may hold brackets
        style = {"status": _STATUS_STYLE.get(row["status"], "")}
        table.add_row(*(Text(row[column], style=style.get(column, "")) for column in columns))
    return table


def _natural_width(table: Table) -> int:
    """The cells the table takes when nothing has to wrap."""
    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def runs_tsv(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """`trainctl runs` for pipes: a header, then one tab-separated line per run, every column."""
    lines = ["\t".join(_RUN_COLUMNS)]
    for name, summary in rows:
        cells = _run_cells(name, summary)
        lines.append("\t".join(" ".join(cells[c].split()) for c in _RUN_COLUMNS))
    return "\n".join(lines) + "\n"


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Run {summary.get('name', '')}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    keys = ("status", "run_dir", "mode", "device", "dtype", "seed", "dataset", "parameters",
            "steps", "planned_steps", "epochs_completed", "early_stopped", "started_at",
            "finished_at", "command", "resume_command", "error")  # fmt: skip
    for key in keys:
        if summary.get(key) is not None:
            table.add_row(key, Text(str(summary[key])))
    table.add_row("duration", duration(summary.get("duration_s")))
    table.add_row("best", best_text(summary))
    final = summary.get("final") or {}  # null in a summary edited by hand
    if "train_loss" in final:
        table.add_row("final train loss", metric_text(final["train_loss"]))
    for key, value in (final.get("val") or {}).items():
        table.add_row(f"final val {key}", metric_text(value))
    timing = summary.get("step_time_ms")
    if timing:
        median, p90 = (_milliseconds(timing.get(key)) for key in ("median", "p90"))
        table.add_row("step time", f"median {median}, p90 {p90}")
    return table


def _milliseconds(value: Any) -> str:
    return f"{value:.3f} ms" if isinstance(value, (int, float)) else "-"


_LEVELS = " ▁▂▃▄▅▆▇█"
LOG_SCALE_DECADES = 1.5  # a loss that falls further than this is drawn on a log scale


def loss_curve(points: Sequence[tuple[int, float]], width: int = 60, height: int = 8) -> str:
    """A block-character chart of (step, loss): columns average the points they cover; a
    loss spanning more than 1.5 decades is drawn on a log scale (the chart says so), or
    everything after its first drop would sit flat on the floor."""
    finite = [
        (s, v)
        for s, v in points
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    if not finite:
        return "(no finite losses logged yet)"
    values = np.array([v for _, v in finite], dtype=float)
    columns = min(width, len(values))
    chunks = np.array_split(values, columns)
    means = np.array([c.mean() for c in chunks])
    low, high = float(means.min()), float(means.max())
    log_scale = low > 0 and math.log10(high / low) > LOG_SCALE_DECADES
    heights = np.log10(means) if log_scale else means
    bottom = float(heights.min())
    span = float(heights.max()) - bottom or 1.0
    # Row units; the lowest column keeps a one-eighth block so the curve never vanishes.
    levels = (heights - bottom) / span * (height - 0.125) + 0.125
    rows = []
    for row in range(height, 0, -1):
        line = ""
        for level in levels:
            fill = level - (row - 1)
            line += _LEVELS[int(np.clip(round(fill * 8), 0, 8))]
        rows.append(line)
    first, last = finite[0][0], finite[-1][0]
    label_top, label_bottom = f"{high:.4g}", f"{low:.4g}"
    pad = max(len(label_top), len(label_bottom))
    lines = [f"{label_top:>{pad}} ┤{rows[0]}"]
    lines += [f"{'':>{pad}} │{r}" for r in rows[1:-1]]
    lines.append(f"{label_bottom:>{pad}} ┤{rows[-1]}")
    lines.append(f"{'':>{pad}} └{'─' * columns}")
    scale = "; loss on a log scale" if log_scale else ""
    lines.append(f"{'':>{pad}}  step {first} … {last}{scale}")
    return "\n".join(lines)


def datasets_lines(statuses: Sequence[Any]) -> str:
    """`trainctl data list`: data set, present or missing, size on disk, folder."""
    from rich.filesize import decimal

    rows = [("data set", "status", "size", "folder")]
    for status in statuses:
        size = decimal(status.size) if status.size else "-"
        rows.append(
            (status.name, "present" if status.present else "missing", size, str(status.folder))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for *cells, folder in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        lines.append("  ".join([*padded, folder]))
    return "\n".join(lines)
