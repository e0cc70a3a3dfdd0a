"""Everything `train` does before its first step; `validate --build` does it and stops there.

One function for both, so a config that `validate --build` passes gets past every check that
training makes before it starts: the data files and splits, the memory and length of the
run, the model against the data, the optimizer and schedule, the transforms against a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainctl import backend
from trainctl.config import Config
from trainctl.data import Loader
from trainctl.distributed import World, current_world
from trainctl.distributed.parallel import DataParallel, check_data_parallel
from trainctl.train.components import Components, build_components, load_data
from trainctl.train.resources import ResourceError, check_resources
from trainctl.train.step import Step


@dataclass
class PreparedTraining:
    """A run ready for its first step."""

    components: Components
    step: Step
    loader: Loader  # the training batches, transforms fitted to the data
    notices: list[str]  # the refusals --force turned into notices, files the data skipped
    parallel: DataParallel | None = None  # this rank's share of a data-parallel run


def prepare_training(
    config: Config,
    force: bool = False,
    preprocessing: dict[str, Any] | None = None,
    world: World | None = None,
) -> PreparedTraining:
    """Load the data (encoded with a resumed run's stored `preprocessing`), check that the
    run fits and ends (before any allocation), build it. In a job of several processes
    (`world`, default: this process's) each one builds a full replica, whose gradients the
    ranks average every step."""
    world = current_world() if world is None else world
    data = load_data(config, preprocessing)
    notices = check_resources(config, data, backend.get_device(config.device), force)
    if data.skipped_files:
        notices.append(
            f"skipped {len(data.skipped_files)} unreadable file(s) (data.options.skip_bad), "
            f"the first: {data.skipped_files[0]}"
        )
    notices += data.notes
    try:
        components = build_components(config, with_data=data)
    except MemoryError as exc:
        message = f"{config.source}: out of memory while building the model: {exc}"
        raise ResourceError(message) from exc
    loader = components.loader("train", training=True)
    step = components.make_step(cuda_graphs=world.size == 1)
    if world.size == 1:
        return PreparedTraining(components, step, loader, notices)
    distributed = config.distributed
    parallel = DataParallel(
        world, distributed.bucket_mb, distributed.check_every, distributed.timeout_s
    )
    synced = parallel.synchronise_batch_norm(components.model)
    check_data_parallel(config, world.size, len(data.train), synced)
    step.gradient_reducer = parallel.reducer
    return PreparedTraining(components, step, loader, notices, parallel)
