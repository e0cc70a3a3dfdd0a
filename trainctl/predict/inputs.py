"""New samples for `predict`, read from a file by its kind: an .npz archive, a CSV table, a
PNG/JPEG image or a folder of them. Each comes back as what the run's data set would have
yielded for it (features, or NHWC images in [0, 1]), with a name per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainctl.data import npz
from trainctl.data.imagefolder import IMAGE_SUFFIXES, ImageFiles, checked_image_size, images_in
from trainctl.predict.model import Batchable, InputError, Predictor
from trainctl.predict.tables import table_inputs

KINDS = "an .npz archive, a .csv file, a PNG/JPEG image or a folder of them"


def read_inputs(
    predictor: Predictor, path: Path, *, key: str | None = None, resize: bool = False
) -> tuple[Batchable, list[Any]]:
    """The samples in `path` and their names: row numbers (from 0) for arrays and tables,
    file names for images. `key` picks an .npz array; `resize` resizes images of another
    size to the run's (bilinear), as a run of image_folder with `size` does anyway."""
    name = path.name.lower()
    config = predictor.restored.config
    if path.is_dir() or name.endswith(IMAGE_SUFFIXES):
        files = images_in(path) if path.is_dir() else [path]
        if not files:
            raise InputError(f"{path}: no {', '.join(IMAGE_SUFFIXES)} images in this folder")
        run_resizes = config.data.dataset == "image_folder" and config.data.options.get("size")
        images = image_files(predictor, files, resize or bool(run_resizes))
        return images, [f.name if path.is_dir() else str(path) for f in files]
    if name.endswith(".npz"):
        options = config.data.options if config.data.dataset == "npz" else {}
        array = npz.read_inputs(path, key or options.get("x"), options.get("layout", "nhwc"))
        return array, list(range(len(array)))
    if name.endswith((".csv", ".csv.gz")):
        if predictor.input.layout != "features":
            raise InputError(
                f"{path}: a table, but run {predictor.run.path} takes {predictor.input}"
            )
        table = table_inputs(path, predictor)
        return table, list(range(len(table)))
    raise InputError(f"{path}: expected {KINDS} (by its suffix)")


def image_files(predictor: Predictor, files: list[Path], resize: bool) -> ImageFiles:
    """`files` decoded batch by batch at the run's image size; each is checked first (its
    structure, and its size unless `resize`)."""
    expected = predictor.input
    if expected.layout != "NHWC" or expected.shape[2] not in (1, 3):
        raise InputError(f"{files[0]}: an image, but run {predictor.run.path} takes {expected}")
    height, width, channels = expected.shape
    for file in files:
        size = checked_image_size(file)
        if size != (height, width) and not resize:
            raise InputError(
                f"{file}: {size[1]}x{size[0]} pixels, but run {predictor.run.path} takes "
                f"{width}x{height} images: pass --resize to resize them (bilinear)"
            )
    return ImageFiles(tuple(files), files[0].parent, (height, width), channels)
