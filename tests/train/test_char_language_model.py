"""The character language model configs learn: the validation loss (nats per character)
falls below the unigram entropy of the training text, which is what a model that ignores
the context scores at best. A short run checks the direction in every test run; the slow
test trains the shipped configs for real, in both modes."""

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trainctl.config import load_config
from trainctl.data.text import read_text
from trainctl.train.metrics_log import read_metrics
from trainctl.train.progress import QuietReporter
from trainctl.train.trainer import TrainOptions, train

ROOT = Path(__file__).parents[2]


def unigram_entropy(text: str) -> float:
    """Nats per character of the best context-free guess: the characters' own frequencies."""
    counts = np.array(list(Counter(text).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _train(config: str, runs: Path, *overrides: str) -> list[dict]:
    cfg = load_config(ROOT / "configs" / config, list(overrides))
    result = train(cfg, TrainOptions(runs_root=runs), QuietReporter())
    assert result.status == "completed"
    return read_metrics(result.run.metrics_path)


def _val_losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if r["kind"] == "eval" and r["split"] == "val"]


def _training_text() -> str:
    text = read_text(ROOT / "datasets" / "genesis.txt.gz")
    return text[: int(len(text) * 0.9)]  # the configs hold out 10% at the end


def test_a_short_run_gets_near_the_unigram_entropy_from_far_above(tmp_path):
    records = _train("char_transformer.yaml", tmp_path, "data.options.seq_len=16",
                     "train.max_steps=40", "train.eval_every=40", "train.log_every=1")  # fmt: skip
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert train_losses[0] > math.log(61) - 0.3  # starts near a uniform guess over 61 tokens
    assert _val_losses(records)[-1] < unigram_entropy(_training_text()) + 0.3


@pytest.mark.slow
@pytest.mark.parametrize("config", ["char_transformer.yaml", "char_lstm.yaml"])
def test_the_configs_learn_well_below_the_unigram_entropy_in_both_modes(tmp_path, config):
    """A few minutes each on two cores; the two modes train the same model."""
    entropy = unigram_entropy(_training_text())
    finals = {}
    for mode in ("graph", "eager"):
        records = _train(config, tmp_path / mode, f"mode={mode}", "train.max_steps=400",
                         "train.eval_every=400")  # fmt: skip
        finals[mode] = _val_losses(records)[-1]
        assert finals[mode] < 0.75 * entropy, (mode, finals[mode], entropy)
    np.testing.assert_allclose(finals["graph"], finals["eager"], rtol=1e-4)
