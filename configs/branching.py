"""A model with Python control flow on tensor values (see digits_branching.yaml).

trainctl executes this file when a config names it. Eager mode runs the `if` as Python does;
graph mode traces it with the real batch, records the branch taken as a guard, checks the
guard before each replay and traces again when the other branch is due (`trainctl graph`
shows the guard, `trainctl compare` counts traces, guard checks and eager fallbacks).
"""

from trainctl import nn
from trainctl.autograd import ops


class BranchingMLP(nn.Module):
    """An MLP that decides per batch, on a value, how deep to go: a batch whose hidden
    features are weak (mean activation below `threshold`) gets an extra residual block.
    The mean moves with the batch and with training, so the branch flips both ways."""

    def __init__(self, input_shape, hidden=64, classes=10, threshold=0.5):
        super().__init__()
        features = 1
        for size in input_shape:
            features *= size
        self.features, self.threshold = features, threshold
        self.inp = nn.Linear(features, hidden)
        self.extra = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        h = ops.relu(self.inp(ops.reshape(x, (x.shape[0], self.features))))
        if h.mean() < self.threshold:  # a Python `if` on a value: a guard in graph mode
            h = h + ops.relu(self.extra(h))
        return self.out(h)
