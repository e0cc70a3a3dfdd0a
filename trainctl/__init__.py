"""trainctl: a command-line deep-learning training tool with its own autograd engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainctl.predict import Predictor

__version__ = "0.1.0"


def load(run: Any, checkpoint: str = "best", **options: Any) -> Predictor:
    """A finished run ready for predictions in a notebook: see `trainctl.predict.load`.

    Imported on call, so `import trainctl` (and `trainctl --help`) stays light."""
    from trainctl.predict import load as load_run

    return load_run(run, checkpoint, **options)
