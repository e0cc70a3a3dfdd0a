"""trainctl: a command-line deep-learning training tool with its own autograd engine."""

__version__ = "0.1.0"
