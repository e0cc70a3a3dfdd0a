"""The training loop (`Trainer`): steps, logging, evaluation, checkpoints, early stopping.

`trainer.train` builds a Trainer for a new or resumed run and calls `fit`; the Trainer holds
the run's state (`TrainerState`, saved in every checkpoint) and writes its logs, metrics and
checkpoints (rank 0 of a data-parallel run only).
"""

from __future__ import annotations

import contextlib
import itertools
import math
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
from trainctl.config import Config
from trainctl.distributed.collectives import CollectiveTimeoutError
from trainctl.errors import CheckpointError, RunFolderError, TrainctlError
from trainctl.metrics import higher_is_better
from trainctl.train.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from trainctl.train.evaluation import evaluate_split
from trainctl.train.events import EventWriter
from trainctl.train.metrics_log import MetricsLog
from trainctl.train.model_graph import graph_def, trace_inference
from trainctl.train.numerics import first_nonfinite, nonfinite_batch, parameter_label
from trainctl.train.prepare import PreparedTraining
from trainctl.train.progress import Reporter, format_record
from trainctl.train.rundir import RunFolder
from trainctl.train.signals import EvaluationInterrupted, Interruptible, StopFlag
from trainctl.train.threads import ThreadControl


class TrainingError(TrainctlError):
    """A run that cannot go on: a non-finite value, a failed write, no memory left."""

    exit_code = 1


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


class _Discard:
    """The log, metrics and events of a rank other than 0: rank 0 writes the run's."""

    def write(self, *_: Any) -> None:
        pass

    flush = close = append = scalars = graph = restart_at = write


class Trainer:
    def __init__(
        self,
        config: Config,
        prepared: PreparedTraining,
        run: RunFolder | None,
        reporter: Reporter,
        options: TrainOptions,
    ) -> None:
        """`run` None: a rank other than 0 of a data-parallel run, which writes nothing."""
        components = prepared.components
        self.config, self.components, self.run = config, components, run
        self.reporter, self.options = reporter, options
        self.step_fn = prepared.step
        self.parallel = prepared.parallel
        self.loader = prepared.loader
        self.steps_per_epoch = self.loader.batches_per_epoch
        self.total_steps = components.total_steps()
        self.state = TrainerState()
        self.best_label = config.train.best_metric  # resolved by the config loader
        self.has_val = components.data.val is not None
        self.summary: dict[str, Any] = {}
        self.step_times: list[float] = []
        self.stop = StopFlag()
        local_ranks = 1 if self.parallel is None else self.parallel.world.local_size
        self.threads = ThreadControl(config.threads, peers=local_ranks)
        self.checkpoint_step: int | None = None  # the step of checkpoints/last, once there
        if run is None:
            self.log_file = self.metrics = self.events = _Discard()
        else:
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
        if self.run is None:
            return
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
        self.adopt(checkpoint.model_state, checkpoint.optimizer_state, checkpoint.trainer_state)
        if tag == "last":
            self.checkpoint_step = self.state.step

    def adopt(
        self, model_state: dict[str, Any], optimizer_state: dict[str, Any], saved: dict[str, Any]
    ) -> None:
        """Take over the weights, optimizer state and trainer state of a checkpoint."""
        self.components.model.load_state_dict(model_state)
        self.components.optimizer.load_state_dict(optimizer_state)
        backend.default_generator.load_state_dict(saved["generator"])
        if self.components.loss_scaler is not None and "loss_scale" in saved:
            self.components.loss_scaler.load_state_dict(saved["loss_scale"])
        self.state = TrainerState(**saved["trainer"])

    def share_state(self) -> None:
        """Data parallelism: every rank starts from rank 0's state (its restored checkpoint
        on a resume), so the replicas are identical from the first step."""
        components, parallel = self.components, self.parallel
        state = None
        if parallel.world.is_root:
            model, optimizer = components.model.state_dict(), components.optimizer.state_dict()
            state = (model, optimizer, self.trainer_state())
        state = parallel.broadcast(state)
        if not parallel.world.is_root:
            self.adopt(*state)
            generator = backend.default_generator
            generator.seed = parallel.own_seed(generator.seed)

    def epoch_progress(self) -> float:
        """Epochs done as a fraction (1.5: halfway through the second), for log records."""
        return round(self.state.epoch + self.state.batch / self.steps_per_epoch, 3)

    # ------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, Any] | None:
        """Score the val split now; None without one, or when a stop signal cut it short."""
        if not self.has_val:
            return None
        try:
            step = Interruptible(self.step_fn, self.stop)
            result = evaluate_split(self.components, step, "val", parallel=self.parallel)
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
                    samples = len(inputs)  # the global batch: every rank's shard of it
                    if self.parallel is not None:
                        inputs, targets = self.parallel.shard(inputs, targets)
                    prepared = self.components.prepare_targets(targets)
                    started = time.perf_counter()
                    try:
                        loss = self.step_fn.train(inputs, prepared)
                    except (NonFiniteError, CollectiveTimeoutError) as exc:
                        raise self.failure(str(exc), state.step + 1) from exc
                    elapsed = time.perf_counter() - started
                    state.train_seconds += elapsed
                    self.step_times.append(elapsed)
                    state.step += 1
                    state.batch += 1
                    self.threads.check()  # another training started or ended: share anew
                    if not math.isfinite(loss):
                        raise self.failure(_bad_loss(loss, inputs, prepared))
                    if self.parallel is not None:
                        self.parallel.average_buffers(self.components.model)
                        self.parallel.check_replicas(state.step, self._replica_state())
                    window.append(loss)
                    window_samples += samples
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
        if self.run is not None and not self.run.checkpoint_path("best").exists():
            self.save("best")  # no validation split: the final weights are the best known
        if stop:
            return stop.signal_name or "SIGINT"
        return "completed"

    def _replica_state(self) -> Iterator[tuple[str, Any]]:
        """What must be the same on every rank: the weights and the optimizer state."""
        for name, array in self.components.model.state_dict().items():
            yield name, array
        for index, entry in self.components.optimizer.state_dict()["state"].items():
            for name, array in entry.items():
                yield f"optimizer.{index}.{name}", array

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


def _bad_loss(loss: float, inputs: np.ndarray, targets: np.ndarray) -> str:
    """Why a loss is not finite, as far as one can tell without debug.check_numerics."""
    found = nonfinite_batch(inputs, targets)
    if found is not None:
        return f"the loss is {loss}: the batch holds non-finite values ({found}); check the data"
    return (
        f"the loss is {loss} (try a lower optimizer.lr or train.grad_clip; "
        "debug.check_numerics: true names the first op that made a NaN or Inf)"
    )
