"""Every config in configs/, shortened to a few small batches, trains to the same losses and
parameters in graph mode as in eager mode. Data sets that need downloaded files are replaced
by random data of their shape; the embedded ones are used as they are."""

from pathlib import Path

import numpy as np
import pytest
from graph_helpers import Run, assert_agree

from trainctl import backend
from trainctl.config import load_config
from trainctl.data.dataset import ArrayDataset, DataSplits
from trainctl.train.components import build_components

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
DOWNLOADED = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
STEPS = 3


def _random_images(name: str, shape: tuple[int, ...]) -> DataSplits:
    rng = np.random.default_rng(0)
    inputs = rng.random((40, *shape), dtype=np.float32)
    train = ArrayDataset(inputs, rng.integers(0, 10, 40), "classification", 10)
    return DataSplits(train, None, None, name, "random stand-in")


def _run(path: Path, mode: str, batches=None):
    config = load_config(path, ["data.batch_size=8", "data.val_split=0", "data.test_split=0"])
    dataset = config.data.dataset
    data = _random_images(dataset, DOWNLOADED[dataset]) if dataset in DOWNLOADED else None
    components = build_components(config, with_data=data)
    if batches is None:
        loader = components.loader("train", training=True)
        batches = []
        for inputs, targets in loader.epoch(0):
            batches.append((inputs, components.prepare_targets(targets)))
            if len(batches) == STEPS:
                break
    step = components.make_step(mode)
    losses = [step.train(x, y) for x, y in batches]
    return batches, {
        "losses": losses,
        "params": components.model.state_dict(),
        "optimizer": components.optimizer.state_dict(),
        "counter": backend.default_generator.counter,
        "outputs": step.evaluate(batches[0][0]),
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_agrees(path):
    batches, eager = _run(path, "eager")
    _, graph = _run(path, "graph", batches)
    assert_agree(Run(**eager, step=None), Run(**graph, step=None))
