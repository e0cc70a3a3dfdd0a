"""A training run from its start to its end: `train(config, options, reporter)`.

A run is a pure function of its config: the batches depend only on (seed, epoch, batch), the
dropout masks on the default generator's counter, and a checkpoint stores every piece of
state (weights, buffers, optimizer state and clock, generator, position in the data, early
stopping, best metric, the losses not yet logged, the last evaluation). Resuming from a
checkpoint therefore replays exactly the losses the uninterrupted run would have produced.

What can go wrong on the way stops the run with its step number and keeps the last good
checkpoint: a non-finite loss (or, with debug.check_numerics, the first non-finite op output),
a checkpoint that would hold NaN or Inf (it is never written), a failed write (a full disk),
running out of memory. SIGINT/SIGTERM stop it cleanly at the end of the current step, or in
the middle of an evaluation (which then runs again on resume). A run killed before its first
checkpoint resumes from step 0.

The parts: `loop` (the Trainer: steps, evaluation, checkpoints), `resume` (the config and
state a resume goes on with), `run_summary` (summary.json), `signals` (stopping cleanly).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainctl.config import Config, dump_config
from trainctl.distributed import World, current_world
from trainctl.distributed.collectives import CollectiveTimeoutError
from trainctl.distributed.parallel import AgreedStop
from trainctl.errors import RunFolderError
from trainctl.train.atomic import atomic_write_text
from trainctl.train.heldout import check_splits, record_splits
from trainctl.train.loop import Trainer, TrainingError, TrainOptions
from trainctl.train.model_input import write_model_input
from trainctl.train.prepare import PreparedTraining, prepare_training
from trainctl.train.preprocessing import record_preprocessing, stored_preprocessing
from trainctl.train.progress import Reporter
from trainctl.train.resume import ResumeError, prepare_resume, resume_config
from trainctl.train.run_status import resume_command
from trainctl.train.run_summary import finish_summary, initial_summary, now
from trainctl.train.rundir import RunFolder
from trainctl.train.runlock import hold_run_lock
from trainctl.train.signals import trapped_signals

# What callers import from here; the errors and options are defined beside their users.
__all__ = ["ResumeError", "TrainOptions", "TrainResult", "TrainingError", "train"]

EXIT_CODES = {"completed": 0, "failed": 1, "SIGINT": 130, "SIGTERM": 143, "SIGPIPE": 141}


@dataclass
class TrainResult:
    run: RunFolder | None  # None on the ranks other than 0 of a data-parallel run
    status: str
    exit_code: int
    summary: dict[str, Any]
    resume_command: str | None = None


def train(config: Config | None, options: TrainOptions, reporter: Reporter) -> TrainResult:
    """Run (or resume) a training run; the run folder holds everything it produced.

    The run folder's lock is held from before anything in it changes until the run ends, so
    a second process that tries to write the same folder is refused (RunLockedError).

    In a data-parallel job only rank 0 comes this way; the others `_follow` it."""
    world = current_world()
    if not world.is_root:
        return _follow(world, options, reporter)
    if options.resume is not None:
        run = RunFolder.open(options.resume)
        with hold_run_lock(run.path):
            saved = run.read_config()
            config = resume_config(run, saved, config, options)
            prepared = _prepare(world, config, options, stored_preprocessing(run))
            check_splits(run, prepared.components.data)
            if not run.model_input_path.exists():  # a run from before the record existed
                write_model_input(run, prepared.components.data)
            return _run(config, prepared, run, options, reporter, saved)
    if config is None:
        raise ResumeError("give a CONFIG to train, or --resume RUN to continue a run")
    prepared = _prepare(world, config, options)
    run = _new_run(config, options)  # only now: a config that cannot be built leaves no folder
    with hold_run_lock(run.path):
        atomic_write_text(run.config_path, dump_config(config))
        record_splits(run, prepared.components.data)
        write_model_input(run, prepared.components.data)
        record_preprocessing(run, prepared.components.data)
        return _run(config, prepared, run, options, reporter)


def _prepare(
    world: World,
    config: Config,
    options: TrainOptions,
    preprocessing: dict[str, Any] | None = None,
) -> PreparedTraining:
    """prepare_training, after sending the config and a resumed run's stored preprocessing to
    the other ranks (rank 0 reads them from the run folder)."""
    if world.size > 1:
        world.comm.bcast((config, preprocessing), root=0)
    return prepare_training(config, options.force, preprocessing, world)


def _follow(world: World, options: TrainOptions, reporter: Reporter) -> TrainResult:
    """A rank other than 0: trains its replica in step with rank 0 and writes nothing."""
    config, preprocessing = world.comm.bcast(None, root=0)
    prepared = prepare_training(config, options.force, preprocessing, world)
    trainer = Trainer(config, prepared, None, reporter, options)
    trainer.share_state()
    outcome = _fit(trainer)
    status = "completed" if outcome == "completed" else "interrupted"
    summary = {"status": status, "steps": trainer.state.step, "rank": world.rank}
    return TrainResult(None, status, EXIT_CODES[outcome], summary)


def _fit(trainer: Trainer) -> str:
    """Train under trapped signals (agreed among the ranks of a data-parallel run)."""
    # A diverging run is caught by the loss check with its step number; NumPy's overflow
    # warnings along the way would only bury that message.
    with trapped_signals() as stop, np.errstate(all="ignore"), _engine_warnings(trainer):
        if trainer.reporter.output_closed:  # before the signals were trapped (`| true`)
            stop.signal_name = "SIGPIPE"
        if trainer.parallel is not None:
            stop = AgreedStop(stop, trainer.parallel.reducer)
        trainer.threads.start()
        try:
            return trainer.fit(stop)
        finally:
            trainer.threads.stop()


class _NoticeHandler(logging.Handler):
    """Hands the engine's warnings to the trainer, which logs them like its own notices."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(logging.WARNING)
        self.trainer = trainer

    def emit(self, record: logging.LogRecord) -> None:
        self.trainer.say(record.getMessage(), notice=True)


@contextlib.contextmanager
def _engine_warnings(trainer: Trainer):
    """While training, the engine's warnings (graph mode past graph.max_traces falling back to
    eager) go to train.log and the console as notices, instead of to stderr alone."""
    engine_log, handler = logging.getLogger("trainctl"), _NoticeHandler(trainer)
    engine_log.addHandler(handler)
    try:
        yield
    finally:
        engine_log.removeHandler(handler)


def _run(
    config: Config,
    prepared: PreparedTraining,
    run: RunFolder,
    options: TrainOptions,
    reporter: Reporter,
    resumed: Config | None = None,
) -> TrainResult:
    """Train `run` to its end; `resumed` is the config the run had before this resume."""
    components = prepared.components
    notices = list(prepared.notices)
    trainer = Trainer(config, prepared, run, reporter, options)
    started = time.time()
    summary = initial_summary(run, config, options, components, started)
    trainer.summary = summary
    if resumed is not None:
        notices += prepare_resume(trainer, run, resumed)
    if trainer.parallel is not None:
        trainer.share_state()
        summary["world_size"] = trainer.parallel.world.size
    run.write_summary(summary)
    trainer.write_model_graph()
    for notice in notices:
        trainer.say(notice, notice=True)
    trainer.say(
        f"{'training' if resumed is None else 'resuming'} {config.name} in {run.path} "
        f"({config.mode} mode, {components.device}, {trainer.total_steps} steps, "
        f"{trainer.steps_per_epoch} per epoch)"
    )
    try:
        outcome = _fit(trainer)
    except KeyboardInterrupt:
        outcome = "SIGINT"
        trainer.say("stopped at once by a second Ctrl-C; the last checkpoint is kept", True)
    except BaseException as exc:
        failure = _run_failure(trainer, exc)
        summary.update(status="failed", error=str(failure), finished_at=now())
        finish_summary(trainer, summary, started)
        _close_failed(trainer, summary, failure)
        if failure is exc:
            raise
        raise failure from exc
    status = "completed" if outcome == "completed" else "interrupted"
    summary.update(status=status, finished_at=now())
    command = None
    if status == "interrupted":
        summary["signal"] = outcome
        command = resume_command(run)
        if trainer.parallel is not None:
            command += f" --nproc {trainer.parallel.world.size}"
        summary["resume_command"] = command
        trainer.say(f"interrupted by {outcome} at step {trainer.state.step}; resume with:", True)
        trainer.say(f"  {command}", True)
    finish_summary(trainer, summary, started)
    run.write_summary(summary)
    trainer.close()
    return TrainResult(run, status, EXIT_CODES[outcome], summary, command)


def _run_failure(trainer: Trainer, exc: BaseException) -> BaseException:
    """The error a failed run reports: writes to the run folder, a collective that timed out
    and memory that ran out are the run's failure (exit code 1) at its step, not bad input."""
    if isinstance(exc, (RunFolderError, CollectiveTimeoutError)):
        return trainer.failure(str(exc))
    if isinstance(exc, MemoryError):
        return trainer.failure(f"out of memory: {exc}", trainer.state.step + 1)
    return exc


def _close_failed(trainer: Trainer, summary: dict[str, Any], failure: BaseException) -> None:
    """Record the failure as far as the disk allows: a full disk may refuse these writes too,
    and the error the user must see is the first one."""
    with contextlib.suppress(RunFolderError, OSError):
        trainer.run.write_summary(summary)
    with contextlib.suppress(OSError):
        trainer.log(f"failed: {failure}")
    with contextlib.suppress(RunFolderError, OSError):
        trainer.close()


def _new_run(config: Config, options: TrainOptions) -> RunFolder:
    if options.run_dir is not None:
        return RunFolder.create_at(options.run_dir)
    return RunFolder.create(options.runs_root, options.name or config.name)
