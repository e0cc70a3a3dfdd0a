"""A finished run's model rebuilt from its config and loaded with one of its checkpoints.

`eval` and `predict` (and `trainctl.load`) restore a run here, so they run the same model
with the same weights: the config's own build, the checkpoint checked against it tensor by
tensor before it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainctl.config import Config
from trainctl.errors import CheckpointError
from trainctl.train.checkpoint import Checkpoint, check_compatible, load_checkpoint
from trainctl.train.components import Components, build_components
from trainctl.train.model_input import stand_in_data
from trainctl.train.preprocessing import stored_preprocessing
from trainctl.train.rundir import CHECKPOINT_TAGS, RunFolder


@dataclass
class RestoredRun:
    """A run's components with the checkpoint's weights loaded into the model."""

    run: RunFolder
    config: Config
    components: Components
    checkpoint: Checkpoint

    @property
    def checkpoint_step(self) -> int | None:
        return self.checkpoint.trainer_state.get("trainer", {}).get("step")


def checkpoint_file(run: RunFolder, checkpoint: str) -> Path:
    """The file `checkpoint` names: best, last (in the run) or a path; it must exist."""
    path = run.checkpoint_path(checkpoint) if checkpoint in CHECKPOINT_TAGS else Path(checkpoint)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist (expected best, last or a file path)"
        )
    return path


def restore_run(
    run: RunFolder, config: Config, checkpoint: str = "best", *, read_data: bool = True
) -> RestoredRun:
    """Build the run's components from `config` and load `checkpoint` into the model.

    `read_data=False` (predict, export, serve) builds the model from what the run recorded
    it takes (`model_input.json`) instead of loading the data, where the run has the record.
    """
    saved = load_checkpoint(checkpoint_file(run, checkpoint))
    components = build_components(
        config,
        with_data=None if read_data else stand_in_data(run),
        preprocessing=stored_preprocessing(run),
    )
    state = components.model.state_dict()
    check_compatible(
        saved,
        {name: tuple(a.shape) for name, a in state.items()},
        {name: a.dtype for name, a in state.items()},
    )
    components.model.load_state_dict(saved.model_state)
    return RestoredRun(run, config, components, saved)
