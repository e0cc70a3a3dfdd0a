"""Held-out samples stay held out: what `eval` refuses to change, and what it checks.

A score on the val or test split means something only if the run never trained on those
samples. So `eval --set` may change how a run is scored (batch size, device, mode) but not
the SPLIT_KEYS, which decide which samples are in which split, and neither may a resumed run
(even with --force). `train` records the identity of the splits in the run's splits.json,
which `eval` and `train --resume` check against the data they load, so that a data file
changed under the same path is caught too. A checkpoint of another run (`eval
--checkpoint OTHER/checkpoints/best.safetensors`) is scored only when that run was split as
this one was. Runs made before splits.json existed, and checkpoint files outside any run
folder, have no record and are scored without these checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainctl.config import Config, ConfigError, config_differences, config_issue, config_to_dict
from trainctl.config.document import KeyPath, parse_key
from trainctl.data import DataSplits
from trainctl.data.identity import SPLIT_NAMES, split_identity
from trainctl.errors import DataError, RunFolderError
from trainctl.spec import describe
from trainctl.train.atomic import atomic_write_json
from trainctl.train.components import SPLIT_KEYS
from trainctl.train.rundir import RunFolder, read_json_object

FORMAT = 1


def refuse_split_changes(saved: Config, given: Config) -> None:
    """A ConfigError at each of the SPLIT_KEYS whose value `given` changes from the run's."""
    changed = [key for key in config_differences(saved, given) if _decides_splits(key)]
    if not changed:
        return
    before, after = config_to_dict(saved), config_to_dict(given)
    issues = []
    for key in changed:
        path = parse_key(key) or (key,)
        message = (
            f"expected the run's own value {describe(_value_at(before, path))} (it decides "
            "which samples the run trained on: another would put some of them in the "
            f"held-out splits), found {describe(_value_at(after, path))}"
        )
        issues.append(config_issue(given, path, message))
    raise ConfigError(issues)


def _value_at(tree: Any, path: KeyPath) -> Any:
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def _decides_splits(key: str) -> bool:
    return any(key == split_key or key.startswith((f"{split_key}.", f"{split_key}["))
               for split_key in SPLIT_KEYS)  # fmt: skip


def record_splits(run: RunFolder, data: DataSplits) -> None:
    """Write splits.json: the identity of the splits the run is about to train with."""
    record = {"format": FORMAT, "dataset": data.name, "source": data.source,
              "splits": split_identity(data)}  # fmt: skip
    atomic_write_json(run.splits_path, record)


def check_splits(run: RunFolder, data: DataSplits) -> None:
    """A DataError when `data` is not split as the run recorded; a run without splits.json
    (made before it existed) has nothing to check."""
    path = run.splits_path
    if not path.exists():
        return
    recorded = _recorded_splits(path)
    current = split_identity(data)
    changed = [name for name in SPLIT_NAMES if recorded.get(name) != current[name]]
    if not changed:
        return
    details = "; ".join(
        f"{name}: {_describe(recorded.get(name))} then, {_describe(current[name])} now"
        for name in changed
    )
    raise DataError(
        f"{path}: the data loaded now ({data.source}) are not split as when the run trained "
        f"({details}), and scores on them could count samples it trained on as held out: did "
        f"the data files change (or how trainctl reads them), or one of {', '.join(SPLIT_KEYS)}?"
    )


def check_checkpoint_splits(run: RunFolder, checkpoint: Path) -> None:
    """A DataError when `checkpoint` lies in another run's checkpoints/ folder and that run
    recorded other splits than `run` did: it may have trained on `run`'s held-out samples."""
    other = checkpoint.resolve().parent.parent
    recorded = run.splits_path.exists() and (other / "splits.json").exists()
    if other == run.path.resolve() or not recorded:
        return
    mine = _recorded_splits(run.splits_path)
    theirs = _recorded_splits(other / "splits.json")
    changed = [name for name in SPLIT_NAMES if mine.get(name) != theirs.get(name)]
    if changed:
        details = "; ".join(
            f"{name}: {_describe(theirs.get(name))} there, {_describe(mine.get(name))} here"
            for name in changed
        )
        raise DataError(
            f"{checkpoint}: trained by the run {other}, which split its data otherwise than "
            f"{run.path} ({details}), so this run's held-out samples may be ones it trained "
            "on: score it in its own run, or score a checkpoint of this run"
        )


def _recorded_splits(path: Path) -> dict[str, Any]:
    recorded = read_json_object(path, "the run recorded no splits").get("splits")
    if not isinstance(recorded, dict):
        raise RunFolderError(f"{path}: expected an object 'splits', as trainctl writes it")
    return recorded


def _describe(entry: Any) -> str:
    if entry is None:
        return "no split"
    if not isinstance(entry, dict):
        return "an unreadable record"
    return f"{entry.get('samples')} samples, sha256 {str(entry.get('sha256'))[:12]}"
