"""Small runs trained once per session for the predict tests: features from an .npz archive
(graph mode, with BatchNorm and dropout), a regression table from a CSV file (eager), an
image folder (graph mode, with a random flip), and a character language model on text. The
first three normalize their inputs, so a prediction that skipped the run's transforms, or
applied its training-only ones, would differ."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from predict_files import NPZ_CONFIG, train, write_png

ROOT = Path(__file__).parents[2]

TABLE_CONFIG = """\
name: table
data:
  dataset: csv
  path: table.csv
  options: {target: price}
  batch_size: 8
  val_split: 0.2
  test_split: 0.3
  transforms: [{normalize: {mean: [1.0, -1.0, 0.0], std: [2.0, 0.5, 3.0]}}]
model:
  layers: [linear: {out: 8}, tanh, linear: {out: 1}]
loss: mse
train: {max_steps: 12}
"""

IMAGE_CONFIG = """\
name: pictures
mode: graph
data:
  dataset: image_folder
  path: images
  options: {size: [6, 6]}
  batch_size: 4
  val_split: 0.25
  test_split: 0.4
  transforms: [{random_flip: {p: 0.5}}, {normalize: {mean: [0.5, 0.4, 0.3], std: 0.25}}]
model:
  layers: [flatten, linear: {out: 3}]
train: {max_steps: 6}
"""

TABLE_HEADER = "size,price,rooms,age"


@pytest.fixture(scope="session")
def npz_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("npz-run")
    generator = np.random.default_rng(0)
    x = generator.normal(size=(60, 5)).astype(np.float32)
    np.savez(folder / "features.npz", x=x, y=(x[:, 0] > 0) + 2 * (x[:, 1] > 0))
    return train(folder, NPZ_CONFIG)


@pytest.fixture(scope="session")
def table_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("table-run")
    generator = np.random.default_rng(1)
    rows = generator.normal(size=(50, 4))
    rows[:, 1] = rows[:, 0] * 3 - rows[:, 2]
    np.savetxt(folder / "table.csv", rows, delimiter=",", fmt="%.6f", header=TABLE_HEADER,
               comments="")  # fmt: skip
    return train(folder, TABLE_CONFIG)


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Path:
    pytest.importorskip("PIL")
    from data_files import write_image_folder

    folder = tmp_path_factory.mktemp("image-run")
    write_image_folder(folder / "images", per_class=5)
    return train(folder, IMAGE_CONFIG)


PLAIN_IMAGE_CONFIG = """\
name: gray
data:
  dataset: image_folder
  path: images
  options: {channels: 1}
  batch_size: 4
  val_split: 0
  test_split: 0
model:
  layers: [flatten, linear: {out: 2}]
train: {max_steps: 2}
"""


@pytest.fixture(scope="session")
def plain_image_run(tmp_path_factory) -> Path:
    """Grayscale 5x5 images trained without a `size` option: predict resizes only if asked."""
    pytest.importorskip("PIL")
    folder = tmp_path_factory.mktemp("plain-image-run")
    for index in range(3):
        write_png(folder / "images" / "dark" / f"{index}.png", (5, 5), 20 + index)
        write_png(folder / "images" / "light" / f"{index}.png", (5, 5), 220 - index)
    return train(folder, PLAIN_IMAGE_CONFIG)


def text_config(vocabulary: int, causal: bool = True) -> str:
    """A tiny character transformer on text.txt, with `vocabulary` tokens."""
    return f"""\
name: chars
mode: graph
data:
  dataset: text
  path: text.txt
  options: {{seq_len: 16}}
  batch_size: 16
  val_split: 0.1
  test_split: 0
model:
  layers:
    - embedding: {{num: {vocabulary}, dim: 16}}
    - positional_embedding
    - transformer_block: {{heads: 2, mlp_ratio: 2, causal: {str(causal).lower()}}}
    - layer_norm
    - linear: {{out: {vocabulary}}}
loss: sequence_cross_entropy
metrics: [perplexity]
train: {{max_steps: 8}}
"""


def train_on_text(folder: Path, causal: bool = True) -> Path:
    """A run on the first 3,000 characters of the shipped text, whose file is deleted once
    it has trained: predict and serve must take the vocabulary from the run."""
    text = gzip.decompress((ROOT / "datasets" / "genesis.txt.gz").read_bytes()).decode()[:3000]
    (folder / "text.txt").write_text(text)
    run = train(folder, text_config(len(set(text)) + 1, causal))
    (folder / "text.txt").unlink()
    return run


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> Path:
    return train_on_text(tmp_path_factory.mktemp("text-run"))
