"""One error hierarchy: the CLI turns any TrainctlError into a one-line message and exit code 2."""

from dataclasses import dataclass


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


class DataError(TrainctlError):
    """A data set that cannot be found, read, split or batched as asked."""


class RunFolderError(TrainctlError):
    """A run folder, or a file in it, that cannot be created, read or written."""


class CheckpointError(TrainctlError):
    """A checkpoint file that is missing, damaged, or not one trainctl wrote."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where it is (file or `--set` override, line, key) and what."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(TrainctlError):
    """Every problem found in a config at once, one line each, so a user fixes them in one go."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))
