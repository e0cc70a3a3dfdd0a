"""Models written in Python for trainctl configs (see digits_python.yaml).

trainctl executes this file when a config names it (model: {python: models.py:ResidualCNN}),
so keep it to model definitions. A model is a trainctl.nn.Module subclass; its __init__
gets the config's model.args, plus input_shape (one sample's shape) if it asks for it.
"""

from trainctl import nn
from trainctl.autograd import ops


class ResidualCNN(nn.Module):
    """A conv stem, a residual block written in Python, and a two-branch head whose
    branches (global average and global max of the features) are concatenated."""

    def __init__(self, input_shape, width=16, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[-1], width, 3, padding=1)  # NHWC: channels last
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = ops.relu(self.stem(x))
        x = ops.relu(x + self.conv2(ops.relu(self.conv1(x))))  # the residual connection
        x = self.pool(x)
        mean = ops.mean(x, axis=(1, 2))
        peak = ops.reduce_max(x, axis=(1, 2))
        return self.head(ops.concatenate([mean, peak], axis=-1))
