"""Resuming a run: the config it goes on with and the state restored from checkpoints/last.

A resume may change only the keys in RESUMABLE_KEYS (any with --force) and never the splits;
the logs are cut back to the checkpoint's step, so the resumed run logs what the uninterrupted
one would have.
"""

from __future__ import annotations

from trainctl.config import Config, EarlyStoppingConfig, config_differences, dump_config
from trainctl.config.schema import RESUMABLE_KEYS, is_resumable
from trainctl.errors import TrainctlError
from trainctl.train.atomic import atomic_write_text
from trainctl.train.heldout import refuse_split_changes
from trainctl.train.loop import Trainer, TrainerState, TrainOptions
from trainctl.train.metrics_log import read_metrics, repair_metrics, truncate_after_step
from trainctl.train.resources import planned_steps_of
from trainctl.train.run_status import final_scores
from trainctl.train.rundir import RunFolder


class ResumeError(TrainctlError):
    """A resume that would not continue the same run."""


def resume_config(
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


def prepare_resume(trainer: Trainer, run: RunFolder, saved: Config) -> list[str]:
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
        notices += adopt_changed_config(trainer, saved, changed)
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


def adopt_changed_config(trainer: Trainer, saved: Config, changed: list[str]) -> list[str]:
    """Carry the restored state over to the changed config; the notices saying what changed."""
    notices = [f"resuming with new values for {', '.join(changed)} (saved in config.yaml)"]
    old_rule, new_rule = saved.train.early_stopping, trainer.config.train.early_stopping
    if old_rule != new_rule:
        carry_early_stopping(trainer.state, old_rule, new_rule)
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


def carry_early_stopping(
    state: TrainerState, old: EarlyStoppingConfig | None, new: EarlyStoppingConfig | None
) -> None:
    """Early stopping under a rule changed on resume: the count of evaluations without
    improvement carries over while the same metric is watched the same way and starts again
    otherwise; whether the run has stopped follows the new rule."""
    if new is None or old is None or (old.metric, old.mode) != (new.metric, new.mode):
        state.stop_best, state.stale_evals = None, 0
    state.early_stopped = new is not None and state.stale_evals >= new.patience
