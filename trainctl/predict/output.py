"""Predictions as records, CSV or JSON: per sample its class and probability (top k), or its
regression values.

Numbers are written in the shortest form that reads back to the same value in the model's
dtype (0.9, not 0.8999999761581421), so a float32 output read from the file is the output.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainctl.errors import TrainctlError
from trainctl.predict.model import InputDescription

FORMATS = ("csv", "json")


class OutputError(TrainctlError):
    """Predictions that cannot be written as asked: an unknown format, a top-k too large."""


def output_scores(outputs: np.ndarray, loss: str) -> tuple[np.ndarray, str]:
    """The outputs as the loss reads them, same shape, and what they are: probabilities for
    the losses that define them (softmax for cross_entropy, sigmoid for bce_with_logits), the
    raw outputs ("score") otherwise (mse)."""
    z = outputs.reshape(len(outputs), -1).astype(np.float64)
    if loss == "cross_entropy":
        exp = np.exp(z - z.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True), "probability"
    if loss == "bce_with_logits":
        return 1.0 / (1.0 + np.exp(-z)), "probability"
    return z, "score"


def class_scores(outputs: np.ndarray, loss: str) -> tuple[np.ndarray, str]:
    """Per sample and class a score (see `output_scores`); a single output is class 1's, and
    class 0's is its complement."""
    scores, kind = output_scores(outputs, loss)
    if scores.shape[1] == 1:
        scores = np.concatenate([1.0 - scores, scores], axis=1)
    return scores, kind


def prediction_records(
    description: InputDescription,
    loss: str,
    outputs: np.ndarray,
    samples: Sequence[Any],
    top_k: int = 1,
) -> list[dict[str, Any]]:
    """One JSON-ready record per sample: {"sample", "class", "probability"} (plus "top_k", a
    list of k {"class", "probability"}, when k > 1), or {"sample", "value" | "values"}."""
    number = shortest(outputs.dtype)
    if description.task != "classification":
        values = outputs.reshape(len(outputs), -1)
        pairs = zip(samples, values, strict=True)
        if values.shape[1] == 1:
            return [{"sample": s, "value": number(v[0])} for s, v in pairs]
        return [{"sample": s, "values": [number(x) for x in v]} for s, v in pairs]
    check_top_k(description, top_k)
    names = description.class_names or ()
    scores, kind = class_scores(outputs, loss)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    records = []
    for sample, row, order in zip(samples, scores, best, strict=True):
        ranked = [{"class": names[i], kind: number(row[i])} for i in order]
        record = {"sample": sample, **ranked[0]}
        if top_k > 1:
            record["top_k"] = ranked
        records.append(record)
    return records


def check_top_k(description: InputDescription, top_k: int) -> None:
    """An OutputError unless `top_k` is between 1 and the number of classes (1 for values)."""
    classes = len(description.class_names or ()) or 1
    if not 1 <= top_k <= classes:
        what = "the classes" if description.class_names else "a regression run"
        raise OutputError(f"--top-k must be between 1 and {classes} ({what}), got {top_k}")


def shortest(dtype: np.dtype):
    """A float of `value` in its shortest form that reads back to the same `dtype` value."""
    scalar = np.dtype(dtype).type if np.dtype(dtype).kind == "f" else np.float64
    return lambda value: float(str(scalar(value)))


def render(records: list[dict[str, Any]], fmt: str) -> str:
    """The records as CSV (one row per sample; top-k as class_2, probability_2, ...) or JSON."""
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    if fmt != "csv":
        raise OutputError(f"unknown output format {fmt!r}: expected one of {', '.join(FORMATS)}")
    rows = [_flat(record) for record in records]
    columns = list(rows[0]) if rows else ["sample"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in record.items() if key not in ("top_k", "values")}
    for rank, entry in enumerate(record.get("top_k", [])[1:], start=2):
        flat.update({f"{key}_{rank}": value for key, value in entry.items()})
    for index, value in enumerate(record.get("values", []), start=1):
        flat[f"value_{index}"] = value
    return flat


def format_for(path: str | None, fmt: str | None) -> str:
    """The output format: `fmt` if given, else by the file's suffix, else csv."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise OutputError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    if path is None:
        return "csv"
    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
    if suffix not in FORMATS:
        raise OutputError(
            f"-o {path}: cannot tell the format from its suffix: name it .csv or .json, "
            "or give --format"
        )
    return suffix
