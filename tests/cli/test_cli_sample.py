"""The character language model end to end: train on the shipped text, eval, and
`trainctl sample` (same seed, same text; characters outside the vocabulary refused)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app
from trainctl.predict.incremental import decodable
from trainctl.predict.sample import sample_text
from trainctl.predict.text import LanguageModel

ROOT = Path(__file__).parents[2]
runner = CliRunner()
SHORT = ["--set", "data.options.seq_len=16", "--set", "train.max_steps=6",
         "--set", "train.eval_every=6"]  # fmt: skip


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _train(config, runs, *extra):
    result = invoke("train", ROOT / "configs" / config, *SHORT, *extra, "--runs-root", runs)
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return _train("char_transformer.yaml", tmp_path_factory.mktemp("runs"))


def test_the_run_keeps_its_vocabulary_and_reports_perplexity(char_run):
    summary = json.loads((char_run / "summary.json").read_text())
    assert summary["class_names"][:3] == ["\ufffd", "\n", " "] and len(summary["class_names"]) == 61
    assert summary["status"] == "completed"
    result = invoke("eval", char_run, "--split", "val")
    assert result.exit_code == 0, result.output
    report = json.loads((char_run / "eval-val.json").read_text())
    assert report["metrics"]["perplexity"] > 1 and 0 <= report["metrics"]["accuracy"] <= 1


def test_sample_continues_the_prompt_the_same_way_for_the_same_seed(char_run):
    args = ("sample", char_run, "--prompt", "And God", "--tokens", "12", "--seed", "3")
    first, again = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    text = first.output.rstrip("\n")
    assert text.startswith("And God") and len(text) == len("And God") + 12
    assert again.output == first.output
    other = invoke(*args[:-1], "4")
    assert other.exit_code == 0 and other.output != first.output


def test_sample_never_writes_the_unknown_token(char_run):
    """Token 0 stands for no character (after 6 steps its logit is still near the others')."""
    result = invoke("sample", char_run, "--prompt", "A", "--tokens", "150", "--temperature", "2")
    assert result.exit_code == 0 and len(result.output) == 152, result.output
    assert "\ufffd" not in result.output


def test_greedy_sampling_matches_in_eager_and_graph_mode(char_run):
    args = ("sample", char_run, "--prompt", "In the", "--tokens", "20", "--temperature", "0")
    graph, eager = invoke(*args), invoke(*args, "--set", "mode=eager")
    assert graph.exit_code == 0 and eager.exit_code == 0, graph.output + eager.output
    assert graph.output == eager.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "Xerxes"], "--prompt: character 'X' (U+0058) at position 0 is not in the "
                                "run's vocabulary of 60 characters"),
        (["--prompt", ""], "--prompt: expected at least one character"),
        (["--prompt", "And", "--temperature", "-1"], "--temperature: expected a number >= 0"),
    ],
)  # fmt: skip
def test_sample_refuses_bad_prompts_in_one_line(char_run, extra, message):
    result = invoke("sample", char_run, *extra)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_sample_refuses_a_run_that_is_not_a_language_model(tmp_path):
    result = invoke("train", ROOT / "configs/digits_mlp.yaml", "--set", "train.max_steps=2",
                    "--runs-root", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    result = invoke("sample", run, "--prompt", "a")
    assert result.exit_code == 2 and "is not a character language model" in result.output


def test_sample_refuses_a_model_that_looks_ahead(tmp_path):
    """A transformer without its causal mask sees the characters it should predict: refused
    in one line, exit code 2, in both modes (found by running it, not by its layer names)."""
    run = _train("char_transformer.yaml", tmp_path, "--set",
                 "model.layers[3].transformer_block.causal=false")  # fmt: skip
    for mode in ("graph", "eager"):
        result = invoke("sample", run, "--prompt", "And", "--set", f"mode={mode}")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.output.count("\n") == 1
        assert (
            "is not a causal language model: its outputs at the first 1 position(s) change "
            "with the characters after them" in result.output
        )


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    return _train("char_lstm.yaml", tmp_path_factory.mktemp("lstm"), "--set", "mode=eager")


def test_the_lstm_config_trains_and_samples(lstm_run):
    result = invoke("sample", lstm_run, "--prompt", "God", "--tokens", "5")
    assert result.exit_code == 0 and len(result.output.rstrip("\n")) == 8, result.output


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_the_kv_cache_writes_the_same_text_as_the_full_forward(
    char_run, lstm_run, mode, monkeypatch
):
    """Same seed, same characters, with the cache and without, for the transformer and the
    LSTM; the prompt of 7 and 30 more pass the window of 16, so both the cached steps and the
    full forwards past the window run, and the full forward runs only past it."""
    full_forwards = []
    full = LanguageModel.next_logits

    def counted(self, context):
        full_forwards.append(len(context))
        return full(self, context)

    monkeypatch.setattr(LanguageModel, "next_logits", counted)
    for run in (char_run, lstm_run):
        predictor = trainctl.load(run, overrides=[f"mode={mode}"])
        assert decodable(predictor.restored.components.model)
        for temperature in (1.0, 0.0):
            args = (predictor, "And God", 30, temperature, 5)
            full_forwards.clear()
            cached = sample_text(*args, cache=True)
            assert full_forwards == list(range(17, 37))
            assert cached == sample_text(*args, cache=False)


def test_a_sequence_loss_on_labels_and_labels_loss_on_text_are_config_errors(tmp_path):
    wrong_loss = invoke("validate", ROOT / "configs/char_transformer.yaml", "--build",
                        "--set", "loss=cross_entropy")  # fmt: skip
    assert wrong_loss.exit_code == 2
    assert "loss: data set 'text' gives a token id per position: use sequence_cross_entropy" in (
        wrong_loss.output
    )
    wrong_head = invoke("validate", ROOT / "configs/char_transformer.yaml", "--build",
                        "--set", "model.layers[5].linear.out=60")  # fmt: skip
    assert wrong_head.exit_code == 2
    assert "needs outputs of shape (64, 61) per sample (a last linear layer with out: 61)" in (
        wrong_head.output
    )
    on_digits = invoke("validate", ROOT / "configs/digits_mlp.yaml", "--build",
                       "--set", "loss=sequence_cross_entropy")  # fmt: skip
    assert on_digits.exit_code == 2 and "needs a token id per position" in on_digits.output
