"""`trainctl predict` and `trainctl serve` on a character language model: texts in (a line
of a file, a string of a request), encoded with the run's stored vocabulary (its training
text is gone), out the likeliest next characters and the text's perplexity, as the model's
own logits give them; characters outside the vocabulary and models that look ahead refused.
"""

import csv
import io
import json

import numpy as np
import pytest
from conftest import train_on_text
from typer.testing import CliRunner

import trainctl
from trainctl.cli import app
from trainctl.predict.model import InputError

runner = CliRunner()
LINES = ["And God said", "In the beginning God created the heaven", "L"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def lines_file(tmp_path, lines, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def expected_records(run, lines):
    """Next character, its probability and the perplexity of each line, from the model's
    logits on windows built here with the vocabulary in the run's summary."""
    model = trainctl.load(run)
    vocabulary = json.loads((run / "summary.json").read_text())["class_names"]
    window = model.input.shape[0]
    records = []
    for line in lines:
        tokens = [vocabulary.index(char) for char in line[-window:]]
        batch = np.zeros((1, window), np.int64)
        batch[0, : len(tokens)] = tokens
        z = model.predict(batch)[0].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        last = np.exp(log_p[len(tokens) - 1])
        nll = -np.mean([log_p[t, tokens[t + 1]] for t in range(len(tokens) - 1)] or [np.nan])
        records.append((vocabulary[int(np.argmax(last))], last.max(), np.exp(nll)))
    return records


def test_predict_gives_the_next_character_and_perplexity_of_each_line(text_run, tmp_path):
    assert not (text_run.parent.parent / "text.txt").exists()  # only the run's vocabulary
    result = invoke("predict", text_run, lines_file(tmp_path, LINES), "--format", "json",
                    "--top-k", "3")  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["sample"] for r in records] == [1, 2, 3]
    for record, (char, probability, perplexity) in zip(
        records, expected_records(text_run, LINES), strict=True
    ):
        assert record["next"] == char == record["top_k"][0]["next"]
        assert record["probability"] == pytest.approx(probability, rel=1e-5)
        probabilities = [entry["probability"] for entry in record["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 3
        if np.isnan(perplexity):  # a single character: nothing of its own to predict
            assert record["perplexity"] is None
        else:
            assert record["perplexity"] == pytest.approx(perplexity, rel=1e-5)


def test_csv_columns_and_the_same_figures_in_eager_and_graph_mode(text_run, tmp_path):
    path = lines_file(tmp_path, LINES)
    graph = invoke("predict", text_run, path, "--top-k", "2")
    eager = invoke("predict", text_run, path, "--top-k", "2", "--set", "mode=eager")
    assert graph.exit_code == 0 and eager.exit_code == 0, graph.output + eager.output
    assert graph.stdout == eager.stdout
    rows = list(csv.DictReader(io.StringIO(graph.stdout)))
    assert list(rows[0]) == ["sample", "next", "probability", "perplexity", "next_2",
                             "probability_2"]  # fmt: skip
    assert [r["sample"] for r in rows] == ["1", "2", "3"] and rows[2]["perplexity"] == ""


def test_a_line_longer_than_the_context_keeps_its_last_characters(text_run, tmp_path):
    long_line = "And the earth was without form, and void; and darkness was upon the face"
    window = trainctl.load(text_run).input.shape[0]
    path = lines_file(tmp_path, [long_line, long_line[-window:]])
    result = invoke("predict", text_run, path, "--format", "json")
    assert result.exit_code == 0, result.output
    whole, tail = json.loads(result.stdout)
    assert {k: v for k, v in whole.items() if k != "sample"} == {
        k: v for k, v in tail.items() if k != "sample"
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("And God\nXerxes said\n", "prompts.txt:2: character 'X' (U+0058) at position 0 is not "
                                   "in the run's vocabulary of"),
        ("And God\n\nsaid\n", "prompts.txt:2: an empty line; expected a text per line"),
        ("", "prompts.txt: no lines of text to continue"),
    ],
)  # fmt: skip
def test_predict_refuses_texts_it_cannot_encode_in_one_line(text_run, tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    path.write_text(content)
    result = invoke("predict", text_run, path)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.fixture(scope="module")
def looking_ahead_run(tmp_path_factory):
    return train_on_text(tmp_path_factory.mktemp("non-causal"), causal=False)


def test_predict_and_serve_refuse_a_model_that_looks_ahead(looking_ahead_run, tmp_path):
    result = invoke("predict", looking_ahead_run, lines_file(tmp_path, LINES))
    assert result.exit_code == 2 and "is not a causal language model" in result.stderr
    pytest.importorskip("starlette")
    from trainctl.serve.app import ServeOptions, create_app

    with pytest.raises(InputError, match="is not a causal language model"):
        create_app(trainctl.load(looking_ahead_run), ServeOptions("model"))
