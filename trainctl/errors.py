"""One error hierarchy: the CLI turns any TrainctlError into a one-line message and exit code 2."""


class TrainctlError(Exception):
    """Base of every error trainctl reports to a user (as opposed to a bug)."""


class DeviceError(TrainctlError):
    """A device that was asked for cannot be used."""


class ShapeError(TrainctlError):
    """Operands whose shapes or dtypes do not fit an op."""


class StateDictError(TrainctlError):
    """A state dict whose names or shapes do not match the module or optimizer."""


class OptimizerError(TrainctlError):
    """An optimizer or LR schedule set up with values out of range or names that do not exist."""
