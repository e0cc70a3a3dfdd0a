"""`trainctl predict RUN INPUT`: a run's model on the samples of a file, as CSV or JSON (a
character language model's on the lines of a text file: see `predict/text.py`)."""

from __future__ import annotations

from pathlib import Path

from trainctl.predict.inputs import read_inputs
from trainctl.predict.model import Predictor
from trainctl.predict.output import check_top_k, prediction_records, render
from trainctl.predict.progress import PredictProgress
from trainctl.predict.text import (
    encoded_lines,
    is_text_run,
    language_model,
    next_character_records,
)


def predict_file(
    predictor: Predictor,
    path: Path,
    fmt: str = "csv",
    *,
    top_k: int = 1,
    key: str | None = None,
    resize: bool = False,
    progress: PredictProgress | None = None,
) -> str:
    """The predictions for every sample in `path` (see `read_inputs`), rendered as `fmt`.

    `progress` defaults to a bar on stderr for inputs of several batches."""
    check_top_k(predictor.input, top_k)
    if is_text_run(predictor):
        model = language_model(predictor)
        contexts, lines = encoded_lines(model, path)
        bar = progress or PredictProgress(len(contexts), predictor.batch_size)
        try:
            outputs = predictor.predict(model.windows(contexts)[0], bar.advance, where=str(path))
        finally:
            bar.close()
        return render(next_character_records(model, outputs, contexts, lines, top_k), fmt)
    inputs, samples = read_inputs(predictor, path, key=key, resize=resize)
    bar = progress or PredictProgress(len(inputs), predictor.batch_size)
    try:
        outputs = predictor.predict(inputs, bar.advance, where=str(path))
    finally:
        bar.close()
    return render(prediction_records(predictor.input, predictor.loss, outputs, samples, top_k), fmt)
