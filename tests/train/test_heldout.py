"""The split identity and the keys that decide the splits (`trainctl.train.heldout`)."""

import inspect

import pytest
from signals import SignalAtStep

from trainctl.config import ConfigError, parse_config
from trainctl.data import load_splits
from trainctl.data.identity import split_identity
from trainctl.train.components import SPLIT_KEYS, load_data
from trainctl.train.progress import QuietReporter
from trainctl.train.trainer import TrainOptions, train

CONFIG = """\
name: blobs
data: {dataset: blobs, options: {samples: 120}, batch_size: 16}
model:
  layers: [linear: {out: 3}]
train: {max_steps: 20, checkpoint_every: 5}
"""


def identity(*overrides: str):
    return split_identity(load_data(parse_config(CONFIG, "c.yaml", overrides)))


def test_the_split_keys_are_exactly_what_load_splits_reads():
    """A new input to the data (and so to the splits) must join SPLIT_KEYS. A run's stored
    preprocessing is no config key: it encodes the rows the keys chose, never chooses them."""
    parameters = set(inspect.signature(load_splits).parameters) - {"preprocessing"}
    assert sorted(key.rsplit(".", 1)[-1] for key in SPLIT_KEYS) == sorted(parameters)


@pytest.mark.parametrize(
    "override",
    ["seed=1", "data.val_split=0.3", "data.test_split=0.3", "data.options.samples=121",
     "data.options.spread=2.0", "data={dataset: spirals, options: {samples: 120}}"],
)  # fmt: skip
def test_each_split_key_changes_the_identity(override):
    assert identity(override) != identity()


@pytest.mark.parametrize(
    "override",
    ["data.batch_size=7", "data.eval_batch_size=5", "data.shuffle=false", "mode=graph",
     "dtype=float64", "data.transforms=[{normalize: {mean: 1, std: 2}}]", "train.max_steps=3",
     "optimizer.lr=0.5", "name=other"],
)  # fmt: skip
def test_other_keys_leave_the_identity_alone(override):
    assert identity(override) == identity()


def test_a_resume_may_not_redraw_the_splits_even_with_force(tmp_path):
    options = TrainOptions(runs_root=tmp_path)
    stopped = train(parse_config(CONFIG, "c.yaml"), options, SignalAtStep(7))
    changed = parse_config(CONFIG, "c.yaml", ["seed=5"])
    with pytest.raises(ConfigError, match=r"^--set seed=5: seed: expected the run's own value 0"):
        train(changed, TrainOptions(resume=stopped.run.path, force=True), QuietReporter())
    resumed = train(None, TrainOptions(resume=stopped.run.path), QuietReporter())
    assert resumed.status == "completed"
