"""The training loop: steps, logging, evaluation, checkpoints, early stopping, resume, signals.

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
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shlex
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from trainctl import backend
from trainctl.autograd.graph import TracingError
from trainctl.autograd.numerics import NonFiniteError
from trainctl.config import (
    Config,
    EarlyStoppingConfig,
    config_differences,
    dump_config,
)
from trainctl.config.schema import RESUMABLE_KEYS, is_resumable
from trainctl.errors import CheckpointError, RunFolderError, TrainctlError
from trainctl.metrics import higher_is_better
from trainctl.train.atomic import atomic_write_text
from trainctl.train.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from trainctl.train.components import Components
from trainctl.train.environment import environment_info
from trainctl.train.evaluation import evaluate_split
from trainctl.train.events import EventWriter
from trainctl.train.heldout import check_splits, record_splits, refuse_split_changes
from trainctl.train.metrics_log import (
    MetricsLog,
    read_metrics,
    repair_metrics,
    truncate_after_step,
)
from trainctl.train.model_graph import graph_def, trace_inference
from trainctl.train.model_input import write_model_input
from trainctl.train.numerics import first_nonfinite, nonfinite_batch, parameter_label
from trainctl.train.prepare import PreparedTraining, prepare_training
from trainctl.train.preprocessing import record_preprocessing, stored_preprocessing
from trainctl.train.progress import Reporter, format_record
from trainctl.train.resources import planned_steps_of
from trainctl.train.run_status import final_scores, resume_command
from trainctl.train.rundir import RunFolder
from trainctl.train.runlock import hold_run_lock
from trainctl.train.step import Step
from trainctl.train.threads import ThreadControl

EXIT_CODES = {"completed": 0, "failed": 1, "SIGINT": 130, "SIGTERM": 143}


class TrainingError(TrainctlError):
    """A run that cannot go on: a non-finite value, a failed write, no memory left."""

    exit_code = 1


class ResumeError(TrainctlError):
    """A resume that would not continue the same run."""


@dataclass
class TrainOptions:
    runs_root: Path = Path("runs")
    run_dir: Path | None = None
    name: str | None = None
    resume: Path | None = None
    force: bool = False
    command: list[str] = field(default_factory=list)
    overrides: Sequence[str] = ()  # --set on a resumed run's own config


@dataclass
class TrainerState:
    """Where the run is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # the next batch of `epoch`
    best_value: float | None = None
    best_step: int | None = None
    stop_best: float | None = None  # early stopping: best monitored value so far
    stale_evals: int = 0  # evaluations since it last improved
    early_stopped: bool = False
    train_seconds: float = 0.0
    last_eval_step: int | None = None  # an evaluation cut short by a signal runs on resume
    window: list[float] = field(default_factory=list)  # losses since the last train record


@dataclass
class TrainResult:
    run: RunFolder
    status: str
    exit_code: int
    summary: dict[str, Any]
    resume_command: str | None = None


# ---------------------------------------------------------------- signals


class EvaluationInterrupted(Exception):
    """Raised between evaluation batches once a stop signal came: the evaluation is dropped."""


class _Interruptible:
    """The step as evaluation sees it: before each batch it checks for a stop signal, so a
    long validation split does not keep a Ctrl-C waiting."""

    def __init__(self, step: Step, stop: StopFlag) -> None:
        self.step, self.stop = step, stop

    def evaluate(self, inputs: np.ndarray) -> np.ndarray:
        if self.stop:
            raise EvaluationInterrupted
        return self.step.evaluate(inputs)


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes the current step, checkpoints and stops.

    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint stays intact).
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.signal_name = name


@contextlib.contextmanager
def trapped_signals() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# ---------------------------------------------------------------- the run


class Trainer:
    def __init__(
        self,
        config: Config,
        prepared: PreparedTraining,
        run: RunFolder,
        reporter: Reporter,
        options: TrainOptions,
    ) -> None:
        components = prepared.components
        self.config, self.components, self.run = config, components, run
        self.reporter, self.options = reporter, options
        self.step_fn = prepared.step
        self.loader = prepared.loader
        self.steps_per_epoch = self.loader.batches_per_epoch
        self.total_steps = components.total_steps()
        self.state = TrainerState()
        self.best_label = config.train.best_metric  # resolved by the config loader
        self.has_val = components.data.val is not None
        self.summary: dict[str, Any] = {}
        self.step_times: list[float] = []
        self.stop = StopFlag()
        self.threads = ThreadControl(config.threads)
        self.checkpoint_step: int | None = None  # the step of checkpoints/last, once there
        self.log_file = open(run.log_path, "a", encoding="utf-8")  # noqa: SIM115
        self.metrics = MetricsLog(run.metrics_path)
        self.events = EventWriter(run.events_dir)

    # ------------------------------------------------------------ logging

    def log(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.log_file.write(f"{stamp} {text}\n")
        self.log_file.flush()

    def say(self, text: str, notice: bool = False) -> None:
        self.log(text)
        (self.reporter.notice if notice else self.reporter.message)(text)

    def write_model_graph(self) -> None:
        """The model's inference graph into the TensorBoard events (the Graphs tab). A model
        that cannot be traced (data-dependent Python) only gets a line in the log."""
        parts = self.components
        inputs = parts.data.train.inputs
        floating = np.issubdtype(inputs.dtype, np.floating)
        shape = (self.config.data.batch_size, *parts.data.input_shape)
        try:
            inference = trace_inference(
                parts.model, shape, parts.dtype if floating else inputs.dtype, parts.device
            )
        except TracingError as exc:
            self.log(f"the model graph is not in the TensorBoard events: {exc}")
            return
        self.events.graph(graph_def(inference))

    # ------------------------------------------------------------ checkpoints

    def trainer_state(self) -> dict[str, Any]:
        state = {
            "trainer": asdict(self.state),
            "generator": backend.default_generator.state_dict(),
            "mode": self.config.mode,
        }
        if self.components.loss_scaler is not None:
            state["loss_scale"] = self.components.loss_scaler.state_dict()
        return state

    def save(self, tag: str) -> None:
        """Write checkpoints/<tag>, unless a tensor in it is NaN or Inf: that is never saved."""
        model_state = self.components.model.state_dict()
        optimizer_state = self.components.optimizer.state_dict()
        optimizer_arrays = (
            ((int(index), name), array)
            for index, entry in optimizer_state["state"].items()
            for name, array in entry.items()
        )
        bad = first_nonfinite(itertools.chain(model_state.items(), optimizer_arrays))
        if bad is not None:
            key, found = bad
            raise self.failure(
                f"{self._state_label(key)} became non-finite ({found}): a gradient or a value "
                "overflowed in this step (try a lower optimizer.lr or train.grad_clip; "
                f"debug.check_numerics: true names the op); checkpoints/{tag} is not written"
            )
        try:
            save_checkpoint(
                self.run.checkpoint_path(tag), model_state, optimizer_state, self.trainer_state()
            )
        except (RunFolderError, CheckpointError) as exc:
            raise self.failure(str(exc)) from exc
        if tag == "last":
            self.checkpoint_step = self.state.step

    def _state_label(self, key: str | tuple[int, str]) -> str:
        """'3.weight (model.layers[3] (Linear))'; optimizer state by its parameter's name."""
        model = self.components.model
        if isinstance(key, str):
            return parameter_label(key, model)
        index, name = key
        by_identity = {id(p): n for n, p in model.named_parameters()}
        param_name = by_identity.get(id(self.components.optimizer.params[index]), str(index))
        return f"the optimizer's {name} of {parameter_label(param_name, model)}"

    def failure(self, message: str, step: int | None = None) -> TrainingError:
        """The error that ends the run at `step` (default: the current one), saying what is kept."""
        if self.checkpoint_step is None:
            kept = "no checkpoint is kept (none was written yet)"
        else:
            kept = f"checkpoints/last (step {self.checkpoint_step}) is kept"
        at = self.state.step if step is None else step
        return TrainingError(f"step {at}: {message}; the run stops here and {kept}")

    def restore(self, tag: str = "last") -> None:
        checkpoint = load_checkpoint(self.run.checkpoint_path(tag))
        own = self.components.model.state_dict()
        check_compatible(
            checkpoint,
            {name: array.shape for name, array in own.items()},
            {name: array.dtype for name, array in own.items()},
        )
        self.components.model.load_state_dict(checkpoint.model_state)
        self.components.optimizer.load_state_dict(checkpoint.optimizer_state)
        saved = checkpoint.trainer_state
        backend.default_generator.load_state_dict(saved["generator"])
        if self.components.loss_scaler is not None and "loss_scale" in saved:
            self.components.loss_scaler.load_state_dict(saved["loss_scale"])
        self.state = TrainerState(**saved["trainer"])
        if tag == "last":
            self.checkpoint_step = self.state.step

    def epoch_progress(self) -> float:
        """Epochs done as a fraction (1.5: halfway through the second), for log records."""
        return round(self.state.epoch + self.state.batch / self.steps_per_epoch, 3)

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, Any] | None:
        """Score the val split now; None without one, or when a stop signal cut it short."""
        if not self.has_val:
            return None
        try:
            result = evaluate_split(self.components, _Interruptible(self.step_fn, self.stop), "val")
        except EvaluationInterrupted:
            self.say(f"the evaluation at step {self.state.step} was cut short; it runs on resume")
            return None
        except NonFiniteError as exc:
            raise self.failure(f"evaluating the val split: {exc}") from exc
        self.state.last_eval_step = self.state.step
        record = {"kind": "eval", "split": "val", "step": self.state.step,
                  "epoch": self.epoch_progress(), **result.scalars()}  # fmt: skip
        self.metrics.append(record)
        self.events.scalars(self.state.step, {f"val/{k}": v for k, v in result.scalars().items()})
        self.log(f"eval {format_record(record)}")
        self.reporter.evaluated(record)
        self.summary.setdefault("final", {})["val"] = result.scalars()
        self._track_best(result.scalars())
        self._track_early_stopping(result.scalars())
        return record

    def _track_best(self, scalars: dict[str, float]) -> None:
        value = scalars.get(self.best_label)
        if value is None:
            return
        better = self.state.best_value is None or (
            value > self.state.best_value
            if higher_is_better(self.best_label)
            else value < self.state.best_value
        )
        if better:
            self.state.best_value, self.state.best_step = float(value), self.state.step
            self.save("best")

    def _track_early_stopping(self, scalars: dict[str, float]) -> None:
        rule = self.config.train.early_stopping
        if rule is None or rule.metric not in scalars:
            return
        value = scalars[rule.metric]
        maximise = rule.mode == "max"  # the config loader resolves "auto" to max or min
        best = self.state.stop_best
        improved = best is None or (
            value > best + rule.min_delta if maximise else value < best - rule.min_delta
        )
        if improved:
            self.state.stop_best, self.state.stale_evals = float(value), 0
            return
        self.state.stale_evals += 1
        if self.state.stale_evals >= rule.patience:
            self.state.early_stopped = True
            self.say(
                f"early stopping at step {self.state.step}: val {rule.metric} has not improved "
                f"by more than {rule.min_delta:g} for {rule.patience} evaluations"
            )

    # ------------------------------------------------------------ the loop

    def fit(self, stop: StopFlag) -> str:
        """Train until the planned steps, early stopping or a signal; returns the outcome."""
        self.stop = stop
        train_config = self.config.train
        window = self.state.window  # losses since the last record (restored on resume)
        window_samples = 0
        window_start = time.perf_counter()
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)  # max_steps may cut the run
        if self._evaluation_pending():
            self.evaluate()
        while self._more_to_do(stop):
            state = self.state
            this_epoch = min(self.steps_per_epoch, state.batch + self.total_steps - state.step)
            self.reporter.epoch_started(state.epoch, epochs, this_epoch, state.batch)
            finished_epoch = True
            with contextlib.closing(self.loader.epoch(state.epoch, state.batch)) as batches:
                for inputs, targets in batches:
                    lr = self.components.optimizer.lr
                    prepared = self.components.prepare_targets(targets)
                    started = time.perf_counter()
                    try:
                        loss = self.step_fn.train(inputs, prepared)
                    except NonFiniteError as exc:
                        raise self.failure(str(exc), state.step + 1) from exc
                    elapsed = time.perf_counter() - started
                    state.train_seconds += elapsed
                    self.step_times.append(elapsed)
                    state.step += 1
                    state.batch += 1
                    self.threads.check()  # another training started or ended: share anew
                    if not math.isfinite(loss):
                        raise self.failure(_bad_loss(loss, inputs, prepared))
                    window.append(loss)
                    window_samples += len(inputs)
                    speed = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    self.reporter.advanced(loss, lr, speed)
                    if state.step % train_config.log_every == 0 or state.step == self.total_steps:
                        self._log_train(window, lr, speed)
                        window.clear()
                        window_samples, window_start = 0, time.perf_counter()
                    if train_config.eval_every and state.step % train_config.eval_every == 0:
                        self.evaluate()
                    if (
                        train_config.checkpoint_every
                        and state.step % train_config.checkpoint_every == 0
                    ):
                        self.save("last")
                    if stop or state.early_stopped or state.step >= self.total_steps:
                        finished_epoch = state.batch >= self.steps_per_epoch
                        break
            self.reporter.epoch_finished()
            if finished_epoch:
                state.epoch += 1
                state.batch = 0
                if train_config.eval_every is None:
                    self.evaluate()
                if train_config.checkpoint_every is None:
                    self.save("last")
        if window and not stop:  # a stopped run keeps its window for the resume to log
            self._log_train(window, self.components.optimizer.lr, 0.0)
            window.clear()
        if not stop and self.state.last_eval_step != self.state.step:
            self.evaluate()  # the run's final metrics are always measured on its final weights
        self.save("last")
        if not self.run.checkpoint_path("best").exists():
            self.save("best")  # no validation split: the final weights are the best known
        if stop:
            return stop.signal_name or "SIGINT"
        return "completed"

    def _more_to_do(self, stop: StopFlag) -> bool:
        return not stop and not self.state.early_stopped and self.state.step < self.total_steps

    def _evaluation_pending(self) -> bool:
        """Whether a signal cut short the evaluation due at the restored step."""
        state, every = self.state, self.config.train.eval_every
        if not self.has_val or state.step == 0 or state.last_eval_step == state.step:
            return False
        return state.step % every == 0 if every else state.batch == 0

    def _log_train(self, window: list[float], lr: float, speed: float) -> None:
        record = {
            "kind": "train",
            "step": self.state.step,
            "epoch": self.epoch_progress(),
            "loss": float(np.mean(window)),
            "lr": lr,
            "samples_per_s": round(speed, 1) if speed else None,
            "wall_time": time.time(),
        }
        self.metrics.append(record)
        self.events.scalars(self.state.step, {"train/loss": record["loss"], "train/lr": lr})
        self.log(f"train {format_record(record)}")
        self.reporter.logged(record)
        self.summary.setdefault("final", {})["train_loss"] = record["loss"]

    def close(self) -> None:
        self.metrics.close()
        self.events.close()
        self.log_file.close()


# ---------------------------------------------------------------- entry point


def train(config: Config | None, options: TrainOptions, reporter: Reporter) -> TrainResult:
    """Run (or resume) a training run; the run folder holds everything it produced.

    The run folder's lock is held from before anything in it changes until the run ends, so
    a second process that tries to write the same folder is refused (RunLockedError)."""
    if options.resume is not None:
        run = RunFolder.open(options.resume)
        with hold_run_lock(run.path):
            saved = run.read_config()
            config = _resume_config(run, saved, config, options)
            prepared = prepare_training(config, options.force, stored_preprocessing(run))
            check_splits(run, prepared.components.data)
            if not run.model_input_path.exists():  # a run from before the record existed
                write_model_input(run, prepared.components.data)
            return _run(config, prepared, run, options, reporter, saved)
    if config is None:
        raise ResumeError("give a CONFIG to train, or --resume RUN to continue a run")
    prepared = prepare_training(config, options.force)
    run = _new_run(config, options)  # only now: a config that cannot be built leaves no folder
    with hold_run_lock(run.path):
        atomic_write_text(run.config_path, dump_config(config))
        record_splits(run, prepared.components.data)
        write_model_input(run, prepared.components.data)
        record_preprocessing(run, prepared.components.data)
        return _run(config, prepared, run, options, reporter)


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
    summary = _initial_summary(run, config, options, components, started)
    trainer.summary = summary
    if resumed is not None:
        notices += _prepare_resume(trainer, run, resumed)
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
        # A diverging run is caught by the loss check with its step number; NumPy's overflow
        # warnings along the way would only bury that message.
        with trapped_signals() as stop, np.errstate(all="ignore"):
            trainer.threads.start()
            try:
                outcome = trainer.fit(stop)
            finally:
                trainer.threads.stop()
    except KeyboardInterrupt:
        outcome = "SIGINT"
        trainer.say("stopped at once by a second Ctrl-C; the last checkpoint is kept", True)
    except BaseException as exc:
        failure = _run_failure(trainer, exc)
        summary.update(status="failed", error=str(failure), finished_at=_now())
        _finish_summary(trainer, summary, started)
        _close_failed(trainer, summary, failure)
        if failure is exc:
            raise
        raise failure from exc
    status = "completed" if outcome == "completed" else "interrupted"
    summary.update(status=status, finished_at=_now())
    command = None
    if status == "interrupted":
        summary["signal"] = outcome
        command = summary["resume_command"] = resume_command(run)
        trainer.say(f"interrupted by {outcome} at step {trainer.state.step}; resume with:", True)
        trainer.say(f"  {command}", True)
    _finish_summary(trainer, summary, started)
    run.write_summary(summary)
    trainer.close()
    return TrainResult(run, status, EXIT_CODES[outcome], summary, command)


def _run_failure(trainer: Trainer, exc: BaseException) -> BaseException:
    """The error a failed run reports: writes to the run folder and memory that ran out are
    the run's failure (exit code 1) at its step, not bad input."""
    if isinstance(exc, RunFolderError):
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


def _bad_loss(loss: float, inputs: np.ndarray, targets: np.ndarray) -> str:
    """Why a loss is not finite, as far as one can tell without debug.check_numerics."""
    found = nonfinite_batch(inputs, targets)
    if found is not None:
        return f"the loss is {loss}: the batch holds non-finite values ({found}); check the data"
    return (
        f"the loss is {loss} (try a lower optimizer.lr or train.grad_clip; "
        "debug.check_numerics: true names the first op that made a NaN or Inf)"
    )


def _new_run(config: Config, options: TrainOptions) -> RunFolder:
    if options.run_dir is not None:
        return RunFolder.create_at(options.run_dir)
    return RunFolder.create(options.runs_root, options.name or config.name)


def _resume_config(
    run: RunFolder, saved: Config, given: Config | None, options: TrainOptions
) -> Config:
    """The config the resumed run goes on with: the run's own, changed by a CONFIG or by
    `--set` only in RESUMABLE_KEYS (any key with --force)."""
    if given is None:
        if not options.overrides:
            return saved
        given = run.read_config(options.overrides)
        source = "--set"
    else:
        source = given.source
    refused = [key for key in config_differences(saved, given) if not is_resumable(key)]
    if refused and not options.force:
        raise ResumeError(
            f"{source} changes {', '.join(refused)} of the run {run.path}, which would make it "
            f"a different run; a resume may change only {', '.join(RESUMABLE_KEYS)}. Resume "
            "without the others to continue as it was, or pass --force to resume with the "
            "new values"
        )
    refuse_split_changes(saved, given)  # even with --force: the run trained on its splits
    return given


def _prepare_resume(trainer: Trainer, run: RunFolder, saved: Config) -> list[str]:
    """Restore checkpoints/last, record a changed config and cut the logs back to the
    checkpoint's step; the notices to show. A run killed before its first checkpoint has
    nothing to restore: it starts again from step 0, and says so.

    Everything that can refuse the resume (the summary, the checkpoint) is read before
    anything in the folder changes."""
    previous = run.read_summary() if run.summary_path.exists() else {}
    notices = []
    if run.checkpoint_path("last").exists():
        trainer.restore("last")
    else:
        notices.append(
            f"{run.path} has no checkpoint yet (it stopped before its first one): "
            "training it again from step 0"
        )
    changed = config_differences(saved, trainer.config)
    if changed:
        atomic_write_text(run.config_path, dump_config(trainer.config))
        notices += _adopt_changed_config(trainer, saved, changed)
    if trainer.state.early_stopped:
        notices.append(
            f"the run stopped early at step {trainer.state.step} (train.early_stopping): "
            "resume with --set train.early_stopping=... to train it on"
        )
    repaired = repair_metrics(run.metrics_path)
    if repaired:
        trainer.log(f"resume: removed a torn last line ({repaired} bytes) from metrics.jsonl")
    truncate_after_step(run.metrics_path, trainer.state.step)
    trainer.events.restart_at(trainer.state.step + 1)
    for stale in run.checkpoints_dir.glob(".*.tmp"):  # left by a SIGKILL mid-write
        stale.unlink()
    trainer.summary["resumed_from_step"] = trainer.state.step
    trainer.summary["started_at"] = previous.get("started_at", trainer.summary["started_at"])
    trainer.summary["resumes"] = int(previous.get("resumes", 0)) + 1
    final = final_scores(read_metrics(run.metrics_path) if run.metrics_path.exists() else [])
    if final:
        trainer.summary["final"] = final
    return notices


def _adopt_changed_config(trainer: Trainer, saved: Config, changed: list[str]) -> list[str]:
    """Carry the restored state over to the changed config; the notices saying what changed."""
    notices = [f"resuming with new values for {', '.join(changed)} (saved in config.yaml)"]
    old_rule, new_rule = saved.train.early_stopping, trainer.config.train.early_stopping
    if old_rule != new_rule:
        _carry_early_stopping(trainer.state, old_rule, new_rule)
    schedule = saved.schedule
    if schedule.name == "cosine" and schedule.args.get("total_steps") is None:
        planned = planned_steps_of(saved, len(trainer.components.data.train))[0]
        if planned != trainer.total_steps:
            notices.append(
                f"schedule cosine spans the run (total_steps: null): from step "
                f"{trainer.state.step} on, the learning rate follows the plan for "
                f"{trainer.total_steps} steps instead of {planned}"
            )
    return notices


def _carry_early_stopping(
    state: TrainerState, old: EarlyStoppingConfig | None, new: EarlyStoppingConfig | None
) -> None:
    """Early stopping under a rule changed on resume: the count of evaluations without
    improvement carries over while the same metric is watched the same way and starts again
    otherwise; whether the run has stopped follows the new rule."""
    if new is None or old is None or (old.metric, old.mode) != (new.metric, new.mode):
        state.stop_best, state.stale_evals = None, 0
    state.early_stopped = new is not None and state.stale_evals >= new.patience


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _initial_summary(
    run: RunFolder, config: Config, options: TrainOptions, components: Components, started: float
) -> dict[str, Any]:
    data = components.data
    summary = {
        "status": "running",
        "name": config.name,
        "run_dir": str(run.path),
        "mode": config.mode,
        "device": str(components.device),
        "dtype": config.dtype,
        "seed": config.seed,
        "dataset": data.name,
        "data_source": data.source,
        "parameters": sum(p.size for p in components.model.parameters()),
        "command": shlex.join(options.command) if options.command else None,
        "started_at": _now(),
        "versions": environment_info(),
    }
    if data.class_names is not None:
        summary["class_names"] = list(data.class_names)
    if data.skipped_files is not None:
        summary["skipped_bad_files"] = len(data.skipped_files)
    if data.notes:  # what encoding a table did: rows dropped, values unseen in training
        summary["data_notes"] = list(data.notes)
    return summary


def _finish_summary(trainer: Trainer, summary: dict[str, Any], started: float) -> None:
    state = trainer.state
    times = np.array(trainer.step_times) * 1e3
    summary.update(
        steps=state.step,
        epochs_completed=state.epoch,
        planned_steps=trainer.total_steps,
        early_stopped=state.early_stopped,
        duration_s=round(time.time() - started, 3),
        train_seconds=round(state.train_seconds, 3),
    )
    if state.best_value is not None:
        summary["best"] = {"metric": f"val/{trainer.best_label}", "value": state.best_value,
                           "step": state.best_step}  # fmt: skip
    if len(times):
        summary["step_time_ms"] = {
            "median": round(float(np.median(times)), 4),
            "p90": round(float(np.percentile(times, 90)), 4),
        }
        waited = trainer.loader.wait_seconds
        summary["data_wait_fraction"] = round(waited / max(waited + times.sum() / 1e3, 1e-9), 4)
    summary["threads"] = trainer.threads.report()
    graph = trainer.step_fn.stats()
    if graph:
        summary["graph"] = graph
