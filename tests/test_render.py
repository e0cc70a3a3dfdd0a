"""Terminal renderings: the loss curve and the tables the CLI prints."""

import numpy as np
import pytest
from rich.console import Console

from trainctl.number_format import duration
from trainctl.render import (
    confusion_table,
    loss_curve,
    runs_table,
    runs_tsv,
    scores_table,
    summary_table,
)


def render(renderable, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def column_heights(chart: str) -> list[int]:
    """How many rows of the chart each column reaches into (the y axis and labels cut off)."""
    rows = [line.split("┤" if "┤" in line else "│", 1)[1] for line in chart.splitlines()[:-2]]
    return [sum(row[i] != " " for row in rows) for i in range(len(rows[0]))]


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


def test_confusion_table_labels_classes_by_name_verbatim():
    text = render(confusion_table(np.array([[3, 1], [0, 4]]), ("cat", "[bold]dog")))
    lines = text.splitlines()
    assert [line.split() for line in lines if "cat" in line or "dog" in line] == [
        ["┃", "┃", "cat", "┃", "[bold]dog", "┃"],
        ["│", "cat", "│", "3", "│", "1", "│"],
        ["│", "[bold]dog", "│", "0", "│", "4", "│"],
    ]


def test_a_loss_spanning_decades_is_drawn_on_a_log_scale():
    """From 2.3 down to 1e-5 a linear chart is a spike then a flat floor; on a log scale an
    exponential decay is a straight slope, and the chart says which scale it uses."""
    points = [(step, 2.3 * 10 ** (-step / 20)) for step in range(1, 101)]  # 5 decades
    chart = loss_curve(points, width=20, height=8)
    heights = column_heights(chart)
    assert heights[0] == 8 and heights[-1] == 1
    assert 3 <= heights[10] <= 5  # halfway down, not on the floor
    assert chart.splitlines()[-1].endswith("step 1 … 100; loss on a log scale")
    flat = loss_curve([(step, 2.0 - step / 100) for step in range(1, 101)], width=20)
    assert "log" not in flat


def test_scores_keep_four_significant_digits():
    text = render(scores_table({"loss": 2.628e-06, "accuracy": 1.0, "mse": 12345.678}))
    assert "2.628e-06" in text and "0.0000" not in text
    assert "1.000" in text and "1.235e+04" in text


RUNS = [
    ("digits-mlp-20261123-071451", {"status": "completed", "steps": 675, "duration_s": 1.6,
     "mode": "eager", "device": "cpu",
     "best": {"metric": "val/accuracy", "value": 0.9778, "step": 315}}),
    ("cifar10-cnn-20261123-101500", {"status": "interrupted", "steps": 12000,
     "duration_s": 3725.0, "mode": "graph", "device": "cuda",
     "best": {"metric": "val/loss", "value": 2.628e-06, "step": 11500}}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("width", "columns"),
    [
        (120, ["run", "status", "steps", "best (val)", "duration", "mode", "device"]),
        (80, ["run", "status", "steps", "best (val)"]),
        (60, ["run", "status"]),
    ],
)
def test_runs_table_leaves_columns_out_instead_of_cutting_cells(width, columns):
    text = render(runs_table(RUNS, width), width)
    lines = text.splitlines()
    assert lines[0].split() == " ".join(columns).split()
    assert "…" not in text and all(len(line.rstrip()) <= width for line in lines)
    for name, summary in RUNS:
        row = next(line for line in lines if line.startswith(name))  # whole, on one line
        assert summary["status"] in row
    if "best (val)" in columns:
        assert "loss 2.628e-06 @ 11500" in text


def test_runs_tsv_has_every_column_for_grep_and_cut():
    lines = runs_tsv(RUNS).splitlines()
    assert lines[0].split("\t") == ["run", "status", "steps", "best (val)", "duration", "mode",
                                     "device"]  # fmt: skip
    assert lines[1].split("\t") == ["digits-mlp-20261123-071451", "completed", "675",
                                     "accuracy 0.9778 @ 315", "1.6s", "eager", "cpu"]  # fmt: skip
    assert [line for line in lines if "completed" in line] == [lines[1]]
    odd = runs_tsv([("x", {"status": "bad\tvalue\nhere"})]).splitlines()
    assert odd[1].split("\t")[:2] == ["x", "bad value here"]  # one run, one line


def test_runs_table_prints_brackets_as_they_are():
    text = render(runs_table([("x", {"status": "completed", "mode": "[red]eager[/red]"})]))
    assert "[red]eager[/red]" in text
