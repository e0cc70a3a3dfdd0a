"""Rich renderings the CLI prints: score tables, run lists, summaries and loss curves.

Pure functions from plain data to Rich renderables (or text), so they are testable without a
terminal and the CLI commands stay thin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def scores_table(scores: dict[str, Any]) -> Table:
    table = Table()
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in scores.items():
        table.add_row(key, _number(value))
    return table


def confusion_table(matrix: np.ndarray) -> Table:
    """Rows are true classes, columns predicted; the diagonal (correct) is highlighted."""
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("", style="bold", justify="right")
    for j in range(matrix.shape[1]):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(matrix):
        cells = [Text(str(v), style="bold green" if i == j else "") for j, v in enumerate(row)]
        table.add_row(str(i), *cells)
    return table


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def best_text(summary: dict[str, Any]) -> str:
    best = summary.get("best")
    if not best:
        return "-"
    metric = str(best.get("metric", "?")).removeprefix("val/")
    return f"{metric} {_number(best.get('value'))} @ {_number(best.get('step'))}"


_STATUS_STYLE = {
    "completed": "green",
    "running": "yellow",
    "interrupted": "yellow",
    "stopped": "yellow",
    "failed": "red",
}


def runs_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    """One row per run: (folder name, summary dict)."""
    table = Table(title="Runs")
    for column in ("run", "status", "steps", "best (val)", "duration", "mode", "device"):
        table.add_column(
            column,
            justify="right" if column in ("steps", "duration") else "left",
            no_wrap=column in ("run", "best (val)"),
        )
    for name, summary in rows:
        status = str(summary.get("status", "?"))
        table.add_row(
            name,
            Text(status, style=_STATUS_STYLE.get(status, "")),
            _number(summary.get("steps")),
            best_text(summary),
            duration(summary.get("duration_s")),
            str(summary.get("mode", "-")),
            str(summary.get("device", "-")),
        )
    return table


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
        table.add_row("final train loss", _number(final["train_loss"]))
    for key, value in (final.get("val") or {}).items():
        table.add_row(f"final val {key}", _number(value))
    timing = summary.get("step_time_ms")
    if timing:
        median, p90 = (_milliseconds(timing.get(key)) for key in ("median", "p90"))
        table.add_row("step time", f"median {median}, p90 {p90}")
    return table


def _milliseconds(value: Any) -> str:
    return f"{value:.3f} ms" if isinstance(value, (int, float)) else "-"


_LEVELS = " ▁▂▃▄▅▆▇█"


def loss_curve(points: Sequence[tuple[int, float]], width: int = 60, height: int = 8) -> str:
    """A block-character chart of (step, loss): columns average the points they cover."""
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
    span = high - low or 1.0
    # Row units; the lowest column keeps a one-eighth block so the curve never vanishes.
    levels = (means - low) / span * (height - 0.125) + 0.125
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
    lines.append(f"{'':>{pad}}  step {first} … {last}")
    return "\n".join(lines)
