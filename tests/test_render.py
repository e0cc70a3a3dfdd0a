"""Terminal renderings: the loss curve and the tables the CLI prints."""

import numpy as np
from rich.console import Console

from trainctl.render import confusion_table, duration, loss_curve, runs_table, summary_table


def render(renderable) -> str:
    console = Console(width=120, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_loss_curve_falls_from_top_left_to_bottom_right():
    points = [(step, 101.0 - step) for step in range(1, 101)]  # 20 columns of 5 points each
    chart = loss_curve(points, width=20, height=4).splitlines()
    top, bottom = chart[0], chart[3]
    assert top.startswith("98 ┤")  # mean of the first column: 100..96
    assert bottom.lstrip().startswith("3 ┤")  # mean of the last column: 5..1
    body_top, body_bottom = top.split("┤")[1], bottom.split("┤")[1]
    assert body_top[0] != " " and body_top[-1] == " "  # high at the start only
    assert body_bottom[-1] != " "  # the last column still has its floor block
    assert "step 1 … 100" in chart[-1]


def test_loss_curve_skips_non_finite_and_handles_empty():
    assert "no finite" in loss_curve([(1, float("nan"))])
    chart = loss_curve([(1, 2.0), (2, float("inf")), (3, 2.0)], width=10, height=2)
    assert "step 1 … 3" in chart


def test_duration_formats():
    assert duration(5.25) == "5.2s"
    assert duration(125) == "2m05s"
    assert duration(3 * 3600 + 60) == "3h01m"
    assert duration(None) == "-"


def test_runs_and_summary_tables_show_the_fields():
    summary = {"status": "completed", "steps": 120, "duration_s": 12.5, "mode": "eager",
               "device": "cpu", "name": "x", "best": {"metric": "val/accuracy", "value": 0.97,
               "step": 100}, "final": {"train_loss": 0.1, "val": {"accuracy": 0.96}}}  # fmt: skip
    text = render(runs_table([("x-20260101-000000", summary)]))
    assert "x-20260101-000000" in text and "completed" in text and "0.9700 @ 100" in text
    text = render(summary_table(summary))
    assert "final val accuracy" in text and "0.9600" in text


def test_confusion_table_lists_every_cell():
    matrix = np.array([[3, 1], [0, 4]])
    text = render(confusion_table(matrix))
    rows = [line for line in text.splitlines() if line.strip().startswith(("│ 0", "│ 1"))]
    assert len(rows) == 2
    assert "3" in rows[0] and "4" in rows[1]
