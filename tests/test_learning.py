"""End to end in eager mode: models built from nn layers actually learn with the optimizers."""

import numpy as np

from trainctl import nn, optim
from trainctl.autograd import Tensor, no_grad
from trainctl.backend import manual_seed


def two_spirals(points_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in the plane: not linearly separable."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1.0, points_per_class)) * 3 * np.pi
    arms = []
    for label, turn in enumerate((0.0, np.pi)):
        xy = np.stack([t * np.cos(t + turn), t * np.sin(t + turn)], axis=1) / (3 * np.pi)
        arms.append((xy + rng.normal(0, 0.02, xy.shape), np.full(points_per_class, label)))
    x = np.concatenate([a[0] for a in arms]).astype(np.float32)
    y = np.concatenate([a[1] for a in arms])
    return x, y


def accuracy(logits: Tensor, labels: np.ndarray) -> float:
    return float((logits.numpy().argmax(axis=1) == labels).mean())


def test_mlp_separates_two_spirals(device):
    manual_seed(0)
    x, y = two_spirals(200, seed=1)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
    ).to(device)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    inputs, labels = Tensor(x, device=device), Tensor(y, device=device)

    with no_grad():
        before = accuracy(model(inputs), y)
    for _ in range(600):
        loss = nn.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with no_grad():
        after = accuracy(model(inputs), y)

    assert before < 0.75
    assert after > 0.95


def class_patterns(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of one random 12x12 template per class, NHWC."""
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((classes, 12, 12, 1))
    labels = rng.integers(0, classes, n)
    images = templates[labels] + rng.normal(0, 0.5, (n, 12, 12, 1))
    return images.astype(np.float32), labels


def test_small_cnn_loss_falls_more_than_five_fold(device):
    manual_seed(0)
    images, labels = class_patterns(128, classes=4, seed=2)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 16, 4),
    ).to(device)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = Tensor(images, device=device), Tensor(labels, device=device)

    losses = []
    for _ in range(60):
        loss = nn.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] / 5
