"""The training loop through its Python API: run folders, exact resume, stops and failures."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from signals import SignalAtStep

from trainctl.config import parse_config
from trainctl.data.fetch import fetch_dataset
from trainctl.train.checkpoint import load_checkpoint
from trainctl.train.events import read_scalars
from trainctl.train.metrics_log import read_metrics
from trainctl.train.progress import QuietReporter, Reporter
from trainctl.train.trainer import ResumeError, TrainingError, TrainOptions, train

# Dropout, BatchNorm, augmentation and a schedule: every kind of state a resume must restore.
CONFIG = """
name: resume-check
seed: 3
data:
  dataset: digits
  batch_size: 32
  val_split: 0.1
  test_split: 0.1
  transforms: [random_flip]
model:
  layers:
    - flatten
    - linear: {out: 32}
    - batch_norm
    - relu
    - dropout: {p: 0.2}
    - linear: {out: 10}
optimizer: {name: adam, lr: 0.01}
schedule: {name: cosine, warmup_steps: 5}
train: {max_steps: 40, log_every: 1, eval_every: 10, checkpoint_every: 15}
"""


def config(text: str = CONFIG, *overrides: str):
    return parse_config(text, "test.yaml", overrides)


def run_train(cfg, tmp_path: Path, reporter: Reporter | None = None, **options):
    return train(cfg, TrainOptions(runs_root=tmp_path / "runs", **options),
                 reporter or QuietReporter())  # fmt: skip


def train_losses(run_dir: Path) -> list[tuple[int, float]]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def test_run_folder_holds_everything(tmp_path):
    result = run_train(config(), tmp_path, command=["trainctl", "train", "test.yaml"])
    run = result.run.path
    assert result.status == "completed" and result.exit_code == 0
    assert run.parent == tmp_path / "runs" and run.name.startswith("resume-check-")
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "train.log", "checkpoints"} <= names
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["steps"] == 40 and summary["seed"] == 3
    assert summary["command"] == "trainctl train test.yaml"
    assert summary["best"]["metric"] == "val/accuracy"
    assert "numpy" in json.dumps(summary["versions"]).lower()
    assert summary["step_time_ms"]["median"] > 0
    losses = train_losses(run)
    assert [step for step, _ in losses] == list(range(1, 41))
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20, 30, 40]
    assert all(0 <= r["accuracy"] <= 1 for r in evals)
    best = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert best.trainer_state["trainer"]["step"] == summary["best"]["step"]
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert last.trainer_state["trainer"]["step"] == 40
    scalars = read_scalars(run / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 41))
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [v for _, v in losses],
                               rtol=1e-6)  # fmt: skip
    assert len(scalars["val/accuracy"]) == 4
    assert "train step 40" in (run / "train.log").read_text()


def test_resume_after_sigint_reproduces_the_uninterrupted_losses(tmp_path):
    straight = run_train(config(), tmp_path / "a")
    expected = train_losses(straight.run.path)

    stopped = run_train(config(), tmp_path / "b", reporter=SignalAtStep(17))
    assert stopped.status == "interrupted" and stopped.exit_code == 130
    assert stopped.resume_command.startswith("trainctl train --resume ")
    summary = json.loads((stopped.run.path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 17

    resumed = train(None, TrainOptions(resume=stopped.run.path), QuietReporter())
    assert resumed.status == "completed" and resumed.run.path == stopped.run.path
    got = train_losses(stopped.run.path)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert got == expected  # bit for bit: same batches, masks, statistics and schedule


def test_resume_from_an_earlier_checkpoint_rewrites_later_history(tmp_path):
    straight = run_train(config(), tmp_path / "a")
    expected = train_losses(straight.run.path)
    stopped = run_train(config(), tmp_path / "b", reporter=SignalAtStep(17))
    run = stopped.run.path
    # Pretend the process died after step 17 before its final checkpoint: restore step 15.
    (run / "checkpoints" / "last.safetensors").unlink()
    os.rename(run / "checkpoints" / "best.safetensors", run / "checkpoints" / "last.safetensors")
    restored = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert restored.trainer_state["trainer"]["step"] < 17
    train(None, TrainOptions(resume=run), QuietReporter())
    assert train_losses(run) == expected


def test_sigterm_stops_with_143(tmp_path):
    result = run_train(config(), tmp_path, reporter=SignalAtStep(5, signal.SIGTERM))
    assert result.status == "interrupted" and result.exit_code == 143
    assert json.loads((result.run.path / "summary.json").read_text())["signal"] == "SIGTERM"


def test_resume_with_a_changed_config_is_refused_unless_forced(tmp_path):
    stopped = run_train(config(), tmp_path, reporter=SignalAtStep(5))
    changed = config(CONFIG, "optimizer.lr=0.02", "train.log_every=2")
    with pytest.raises(ResumeError, match=r"changes optimizer\.lr of the run"):
        train(changed, TrainOptions(resume=stopped.run.path), QuietReporter())
    result = train(changed, TrainOptions(resume=stopped.run.path, force=True), QuietReporter())
    assert result.status == "completed"


def test_non_finite_loss_fails_the_run_and_keeps_the_last_checkpoint(tmp_path):
    text = CONFIG.replace("{name: adam, lr: 0.01}", "{name: sgd, lr: 1.0e+30}")
    with pytest.raises(TrainingError, match=r"step \d+: the loss is (nan|inf)"):
        run_train(config(text, "train.checkpoint_every=1", "data.transforms=[]"), tmp_path)
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss is" in summary["error"]
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert all(np.isfinite(a).all() for a in last.model_state.values())


def test_early_stopping_ends_the_run(tmp_path):
    overrides = ["train.max_steps=400", "train.eval_every=2", "optimizer.lr=1.0e-9",
                 "train.early_stopping={metric: loss, patience: 2, min_delta: 1.0}"]  # fmt: skip
    result = run_train(config(CONFIG, *overrides), tmp_path)
    summary = result.summary
    assert summary["early_stopped"] is True
    assert summary["steps"] == 6  # evaluations at 2 (first best), 4 and 6 (no improvement)
    assert "early stopping at step 6" in (result.run.path / "train.log").read_text()


def test_digits_mlp_quickstart_reaches_95_percent(tmp_path):
    cfg_path = Path(__file__).parents[2] / "configs" / "digits_mlp.yaml"
    from trainctl.config import load_config

    result = run_train(load_config(cfg_path), tmp_path)
    assert result.summary["final"]["val"]["accuracy"] > 0.95


# ---------------------------------------------------------------- changing a run on resume

STEP_SCHEDULE = "schedule={name: step, step_size: 10, gamma: 0.5}"


def test_resume_with_set_extends_a_run_to_the_losses_of_the_longer_run(tmp_path):
    longer = run_train(config(CONFIG, STEP_SCHEDULE, "train.max_steps=60"), tmp_path / "a")
    finished = run_train(config(CONFIG, STEP_SCHEDULE), tmp_path / "b")
    assert finished.summary["steps"] == 40
    run = finished.run.path
    options = TrainOptions(resume=run, overrides=["train.max_steps=60", "train.log_every=2"])
    extended = train(None, options, QuietReporter())
    assert extended.status == "completed" and extended.summary["steps"] == 60
    got = train_losses(run)
    assert got[:40] == train_losses(longer.run.path)[:40]  # the first 40 steps, logged singly
    singly = [loss for _, loss in train_losses(longer.run.path)[40:]]
    pairs = [(41 + i + 1, float(np.mean(singly[i : i + 2]))) for i in range(0, 20, 2)]
    assert got[40:] == pairs  # then the mean of every two steps
    saved = (run / "config.yaml").read_text()
    assert "max_steps: 60" in saved and "log_every: 2" in saved
    log = (run / "train.log").read_text()
    assert "resuming with new values for train.max_steps, train.log_every" in log
    longer_weights = load_checkpoint(longer.run.path / "checkpoints" / "last.safetensors")
    weights = load_checkpoint(run / "checkpoints" / "last.safetensors")
    for name, array in longer_weights.model_state.items():
        np.testing.assert_array_equal(weights.model_state[name], array)


@pytest.mark.parametrize(
    ("settings", "change"),
    [
        (("mode=graph",), "graph.cuda_graphs=false"),
        (("data.dataset=mnist", "data.download=false", "data.transforms=[]"), "data.download=true"),
    ],
)
def test_resume_may_switch_cuda_graphs_and_downloads_and_goes_on_exactly(
    settings, change, served, tmp_path
):
    fetch_dataset("mnist")  # a download on resume then finds it there
    uninterrupted = run_train(config(CONFIG, *settings), tmp_path / "a").run.path
    run = run_train(config(CONFIG, *settings), tmp_path / "b", reporter=SignalAtStep(5)).run.path
    resumed = train(None, TrainOptions(resume=run, overrides=[change]), QuietReporter())
    assert resumed.status == "completed"
    assert train_losses(run) == train_losses(uninterrupted)


def test_resume_with_set_refuses_keys_that_make_another_run_and_changes_nothing(tmp_path):
    run = run_train(config(), tmp_path, reporter=SignalAtStep(5)).run.path
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    overrides = ["train.epochs=3", "optimizer.lr=0.5", "seed=9", "model.layers[1].linear.out=8"]
    with pytest.raises(ResumeError) as refused:
        train(None, TrainOptions(resume=run, overrides=overrides), QuietReporter())
    message = str(refused.value)
    assert message.startswith(
        f"--set changes seed, model.layers[1].linear.out, optimizer.lr of the run {run}"
    )
    assert "may change only train.epochs, train.max_steps, train.log_every" in message
    assert "train.epochs," in message and "--force" in message
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_stretched_cosine_schedule_is_announced(tmp_path):
    run = run_train(config(), tmp_path).run.path
    train(None, TrainOptions(resume=run, overrides=["train.max_steps=50"]), QuietReporter())
    assert (
        "schedule cosine spans the run (total_steps: null): from step 40 on, the learning rate "
        "follows the plan for 50 steps instead of 40" in (run / "train.log").read_text()
    )


def test_an_early_stopped_run_trains_on_with_more_patience(tmp_path):
    overrides = ["train.max_steps=400", "train.eval_every=2", "optimizer.lr=1.0e-9",
                 "train.early_stopping={metric: loss, patience: 2, min_delta: 1.0}"]  # fmt: skip
    stopped = run_train(config(CONFIG, *overrides), tmp_path)
    assert stopped.summary["steps"] == 6
    run = stopped.run.path
    again = train(None, TrainOptions(resume=run), QuietReporter())
    assert again.summary["steps"] == 6  # the same rule: still stopped, and it says how to go on
    assert "resume with --set train.early_stopping=" in (run / "train.log").read_text()
    more = ["train.early_stopping.patience=4"]
    result = train(None, TrainOptions(resume=run, overrides=more), QuietReporter())
    assert result.summary["steps"] == 10  # two more evaluations without improvement: 8, 10
    assert result.summary["early_stopped"] is True


def test_early_stopping_on_a_new_metric_starts_counting_again(tmp_path):
    overrides = ["train.max_steps=400", "train.eval_every=2", "optimizer.lr=1.0e-9",
                 "train.early_stopping={metric: loss, patience: 2, min_delta: 1.0}"]  # fmt: skip
    run = run_train(config(CONFIG, *overrides), tmp_path).run.path
    new_rule = ["train.early_stopping={metric: accuracy, patience: 2, min_delta: 1.0}"]
    result = train(None, TrainOptions(resume=run, overrides=new_rule), QuietReporter())
    assert result.summary["steps"] == 12  # 8: first accuracy seen, 10 and 12 no better
