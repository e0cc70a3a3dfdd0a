"""`trainctl export RUN --format onnx`: the checks around `export_onnx`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainctl.errors import TrainctlError

FORMATS = ("onnx",)


class ExportSetupError(TrainctlError):
    """An export that cannot start: an unknown format, the export extra missing."""


def export_run(
    run: str | Path,
    fmt: str = "onnx",
    output: Path | None = None,
    *,
    checkpoint: str = "best",
    runs_root: str | Path = "runs",
    overrides: Sequence[str] = (),
):
    """Export `run` (restored from `checkpoint`) to `output` (default: RUN/model.onnx)."""
    if fmt not in FORMATS:
        raise ExportSetupError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if output is not None and Path(output).is_dir():  # said before the slow load
        raise ExportSetupError(
            f"-o {output} is a folder: give the file to write, e.g. {Path(output) / 'model.onnx'}"
        )
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportSetupError(
            "trainctl export --format onnx needs the onnx package, which is not installed: "
            "pip install 'trainctl[export]'"
        ) from None
    from trainctl.export.onnx_export import export_onnx
    from trainctl.predict import load

    predictor = load(run, checkpoint, runs_root=runs_root, overrides=overrides)
    return export_onnx(predictor, output or predictor.run.path / "model.onnx")
