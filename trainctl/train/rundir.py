"""Run folders: one directory per training run, created once and never reused.

A run folder holds config.yaml (what makes a directory a run folder), metrics.jsonl,
summary.json, splits.json, train.log, checkpoints/ and tensorboard/. `RunFolder.create` names it
`<name>-<UTC YYYYmmdd-HHMMSS>` and claims it with `os.mkdir`, which fails when the name is
taken (by another run, a file, or a symlink, which is never followed), so the next suffix
(-2, -3, ...) is tried: two processes starting in the same second get different folders.
"""

from __future__ import annotations

import calendar
import itertools
import json
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainctl.config import Config, load_config
from trainctl.config.schema import MAX_RUN_NAME_LENGTH, is_run_name
from trainctl.errors import RunFolderError
from trainctl.train.atomic import (
    atomic_write_json,
    describe_os_error,
    finite_or_null,
    fsync_directory,
)

CHECKPOINT_TAGS = ("last", "best")
_STAMPED_NAME = re.compile(r".+-(?P<stamp>\d{8}-\d{6})(?:-(?P<suffix>\d+))?")
_STAMP_FORMAT = "%Y%m%d-%H%M%S"


def check_run_name(name: str) -> str:
    """`name` if it is one safe path component, else a RunFolderError saying what is allowed."""
    if not is_run_name(name):
        raise RunFolderError(
            f"run name {name!r} is not a safe folder name: expected 1 to {MAX_RUN_NAME_LENGTH} "
            "letters, digits, '.', '_' or '-' (no '/', not '.' or '..')"
        )
    return name


def _checked_path(path: Path | str, what: str) -> Path:
    """`path`, unless it holds a NUL character, which no file system allows (and which
    Python reports as a ValueError rather than an OSError)."""
    if "\x00" in str(path):
        raise RunFolderError(f"cannot use {str(path)!r} as the {what}: it holds a NUL character")
    return Path(path)


class RunFolder:
    """The files of one run; get one with `create`, `create_at` or `open`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def create(
        cls,
        runs_root: Path | str,
        name: str,
        *,
        now: datetime | None = None,
        layout: bool = True,
    ) -> RunFolder:
        """A new run folder `<runs_root>/<name>-<UTC time>[-N]`; `runs_root` is made if missing.

        `now` (timezone-aware) fixes the time in the name; the current time by default.
        `layout=False` leaves out the checkpoint and event folders (a `compare` report).
        """
        check_run_name(name)
        root = _checked_path(runs_root, "runs folder")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(
                f"cannot create the runs folder {root}: {describe_os_error(exc)}"
            ) from exc
        stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime(_STAMP_FORMAT)
        for attempt in itertools.count(1):
            path = root / (f"{name}-{stamp}" if attempt == 1 else f"{name}-{stamp}-{attempt}")
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunFolderError(f"cannot create {path}: {describe_os_error(exc)}") from exc
            break
        run = cls(path)
        if layout:
            run._make_layout()
        return run

    @classmethod
    def create_at(cls, path: Path | str) -> RunFolder:
        """A run folder at exactly `path` (--run-dir), which must not exist or be empty."""
        path = _checked_path(path, "run folder")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            if not path.is_dir():
                raise RunFolderError(
                    f"cannot use {path} as a run folder: it exists and is not a directory"
                ) from None
            if any(path.iterdir()):
                raise RunFolderError(
                    f"cannot use {path} as a new run folder: it is not empty "
                    "(pick a new folder, or resume that run with --resume)"
                ) from None
        except OSError as exc:
            raise RunFolderError(f"cannot create {path}: {describe_os_error(exc)}") from exc
        run = cls(path)
        run._make_layout()
        return run

    @classmethod
    def open(cls, path: Path | str) -> RunFolder:
        """An existing run folder (for resume and eval): a directory holding config.yaml."""
        run = cls(path)
        try:
            if not run.path.is_dir():
                found = "does not exist" if not run.path.exists() else "is not a directory"
                raise RunFolderError(f"{run.path} is not a run folder: it {found}")
            if not run.config_path.is_file():
                raise RunFolderError(
                    f"{run.path} is not a run folder: it has no {run.config_path.name}"
                )
        except OSError as exc:  # a name too long, a permission denied on the way
            raise RunFolderError(
                f"{run.path} is not a run folder: {describe_os_error(exc)}"
            ) from None
        return run

    def _make_layout(self) -> None:
        # Plain mkdir (not exist_ok): of two processes given the same empty --run-dir, the
        # second fails here instead of sharing the folder.
        try:
            os.mkdir(self.checkpoints_dir)
            os.mkdir(self.events_dir)
            fsync_directory(self.path)
            fsync_directory(self.path.parent)
        except FileExistsError:
            raise RunFolderError(f"{self.path} is already being used by another run") from None
        except OSError as exc:
            raise RunFolderError(f"cannot set up {self.path}: {describe_os_error(exc)}") from exc

    # ------------------------------------------------------------ the files

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def splits_path(self) -> Path:
        """Which samples the run trained on and held out (see `trainctl.train.heldout`)."""
        return self.path / "splits.json"

    @property
    def model_input_path(self) -> Path:
        """What the model takes and gives (see `trainctl.train.model_input`)."""
        return self.path / "model_input.json"

    @property
    def preprocessing_path(self) -> Path:
        """What the run's encoder learnt from the training split (see `train.preprocessing`)."""
        return self.path / "preprocessing.json"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def events_dir(self) -> Path:
        return self.path / "tensorboard"

    def checkpoint_path(self, tag: str) -> Path:
        """checkpoints/<tag>.safetensors for a tag in CHECKPOINT_TAGS ("last", "best")."""
        if tag not in CHECKPOINT_TAGS:
            raise RunFolderError(
                f"unknown checkpoint {tag!r}: expected one of {', '.join(CHECKPOINT_TAGS)}"
            )
        return self.checkpoints_dir / f"{tag}.safetensors"

    # ------------------------------------------------------------ config.yaml, summary.json

    def read_config(self, overrides: Sequence[str] = ()) -> Config:
        """The run's config with `overrides`. Its data.path is absolute; a relative one, which
        runs made before relative paths were read from the config's folder hold, is read from
        the current folder, as it was when they trained."""
        return load_config(self.config_path, overrides, relative_to=Path.cwd())

    def read_summary(self) -> dict[str, Any]:
        summary = read_json_object(self.summary_path, "the run wrote no summary")
        _check_summary(self.summary_path, summary)
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace summary.json atomically; NaN and infinite numbers are written as null."""
        atomic_write_json(self.summary_path, finite_or_null(summary))

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)


# The fields of summary.json that trainctl computes with (renders, resumes from), and what
# each must be when present and not null; a summary edited by hand is checked, not trusted.
_SUMMARY_FIELDS: dict[tuple[str, ...], str] = {
    ("status",): "text",
    ("steps",): "integer",
    ("resumes",): "integer",
    ("duration_s",): "number",
    ("best",): "object",
    ("best", "metric"): "text",
    ("best", "value"): "number",
    ("best", "step"): "integer",
    ("final",): "object",
    ("final", "train_loss"): "number",
    ("final", "val"): "object",
    ("step_time_ms",): "object",
    ("step_time_ms", "median"): "number",
    ("step_time_ms", "p90"): "number",
}
_KIND_CHECKS = {
    "text": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def _check_summary(path: Path, summary: dict[str, Any]) -> None:
    """A RunFolderError naming the first field of `summary` that is not what trainctl wrote."""
    for keys, kind in _SUMMARY_FIELDS.items():
        parent: Any = summary
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        _check_field(path, ".".join(keys), value, kind)
    for key, value in ((summary.get("final") or {}).get("val") or {}).items():
        _check_field(path, f"final.val.{key}", value, "number")


def _check_field(path: Path, key: str, value: Any, kind: str) -> None:
    if value is not None and not _KIND_CHECKS[kind](value):
        found = json.dumps(value)
        found = found if len(found) <= 40 else found[:37] + "..."
        raise RunFolderError(f"{path}: {key} must be a JSON {kind}, found {found}")


def read_json_object(path: Path, missing: str) -> dict[str, Any]:
    """The JSON object in `path`; a RunFolderError when it cannot be read or is not one
    (`missing` says why a file that does not exist is absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFolderError(f"{path} does not exist ({missing})") from None
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {describe_os_error(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFolderError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError:
        raise RunFolderError(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def find_run(run: Path | str, runs_root: Path | str) -> RunFolder:
    """The run folder `run` names: a path to one, else a run's folder name under `runs_root`.

    Every command that takes a run (`eval`, `train --resume`, `runs show`) finds it here.
    """
    try:
        return RunFolder.open(run)
    except RunFolderError as as_path:
        named = Path(runs_root) / str(run)
        if not is_run_name(str(run)) or named == Path(run):
            raise
        try:
            return RunFolder.open(named)
        except RunFolderError as as_name:
            raise RunFolderError(f"{as_path}; {as_name}") from None


def list_runs(runs_root: Path | str) -> list[RunFolder]:
    """The run folders under `runs_root` (those holding config.yaml), oldest first.

    Age is the UTC time in a created folder's name (then its -N suffix); a folder made with
    `create_at` has no time in its name, so its config.yaml's modification time stands in.
    """
    root = Path(runs_root)
    if not root.exists():
        return []
    if not root.is_dir():
        raise RunFolderError(f"the runs folder {root} is not a directory")
    try:
        candidates = [RunFolder(entry) for entry in root.iterdir() if entry.is_dir()]
    except OSError as exc:
        raise RunFolderError(f"cannot list {root}: {describe_os_error(exc)}") from exc
    runs = [run for run in candidates if run.config_path.is_file()]
    return sorted(runs, key=_creation_key)


def _creation_key(run: RunFolder) -> tuple[float, int, str]:
    match = _STAMPED_NAME.fullmatch(run.path.name)
    if match is not None:
        try:
            parsed = time.strptime(match["stamp"], _STAMP_FORMAT)
        except ValueError:
            parsed = None
        if parsed is not None:
            return float(calendar.timegm(parsed)), int(match["suffix"] or 1), run.path.name
    return run.config_path.stat().st_mtime, 0, run.path.name
