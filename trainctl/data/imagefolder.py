"""Images in a folder per class, `path/CLASS/*.png|jpg|jpeg`, read with Pillow.

Class indices follow the class folders' names, sorted. With `path/train/CLASS`, the optional
`path/val/CLASS` and `path/test/CLASS` are the validation and test splits; otherwise the
run's val_split and test_split carve them. Loading opens every file and checks it without
decoding a pixel (Pillow's verify: a PNG's chunks and their checksums; a JPEG's end marker),
so a file that is not an image, or is cut short, is found before the first step. The pixels
are decoded when a batch indexes them, in the loader's prefetch thread, so the step does not
wait on them while decoding keeps up (the run's data_wait_fraction says whether it did).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import numpy as np

from trainctl.data.dataset import ArrayDataset, DatasetEntry, LazyInputs, Loaded
from trainctl.data.files import require_folder
from trainctl.errors import DataError
from trainctl.spec import Arg

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = ("train", "val", "test")
_JPEG_END = b"\xff\xd9"
_JPEG_TAIL_BYTES = 1024  # a JPEG may carry a few bytes after its end marker
_OBTAIN = "your own images: one folder per class, named after the class"


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "data set image_folder reads images with Pillow, which is not installed: "
            "pip install 'trainctl[images]'"
        ) from None
    return Image


def _read_errors(image_module: Any) -> tuple[type[BaseException], ...]:
    """What Pillow raises on a file it cannot read: a missing decoder, a cut, a bad chunk."""
    return (OSError, SyntaxError, ValueError, EOFError, struct.error,
            image_module.DecompressionBombError)  # fmt: skip


def _checked_size(path: Path, image_module: Any) -> tuple[int, int]:
    """The (width, height) of image `path`, after checking its structure; DataError if bad."""
    try:
        with image_module.open(path) as image:
            size, kind = image.size, image.format
            image.verify()
        if kind == "JPEG":
            with path.open("rb") as file:
                file.seek(max(0, path.stat().st_size - _JPEG_TAIL_BYTES))
                if _JPEG_END not in file.read():
                    raise DataError(f"{path}: truncated JPEG image (no end-of-image marker)")
    except image_module.UnidentifiedImageError:  # its message repeats the path
        raise DataError(f"{path}: not an image (no format Pillow reads)") from None
    except _read_errors(image_module) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return size


def checked_image_size(path: Path) -> tuple[int, int]:
    """The (height, width) of image `path`, after checking it as `load` checks every file."""
    width, height = _checked_size(path, _pillow())
    return height, width


class ImageFiles(LazyInputs):
    """Image files as an NHWC float32 array in [0, 1] whose indexing decodes the files."""

    def __init__(
        self, files: tuple[Path, ...], root: Path, size: tuple[int, int], channels: int
    ) -> None:
        self.files, self.root, self.size, self.channels = files, root, size, channels
        self.shape = (len(files), *size, channels)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        picked = np.arange(len(self.files))[index]
        batch = np.empty((len(picked), *self.shape[1:]), self.dtype)
        for row, position in enumerate(picked):
            batch[row] = decode(self.files[position], self.size, self.channels)
        return batch

    def subset(self, indices: np.ndarray) -> ImageFiles:
        files = tuple(self.files[i] for i in indices)
        return ImageFiles(files, self.root, self.size, self.channels)

    def identity(self) -> bytes:
        """Each file's path under the root and its size, and the decoded shape: reading every
        file's bytes at each start would cost what decoding is deferred to save."""
        digest = hashlib.sha256(repr(self.shape[1:]).encode())
        for path in self.files:
            digest.update(
                f"{path.relative_to(self.root).as_posix()}\0{path.stat().st_size}\0".encode()
            )
        return digest.digest()


def decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """The image at `path` as (height, width, channels) float32 in [0, 1], resized to `size`."""
    image_module = _pillow()
    height, width = size
    try:
        with image_module.open(path) as image:
            converted = image.convert("L" if channels == 1 else "RGB")
            if converted.size != (width, height):
                converted = converted.resize((width, height), image_module.Resampling.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32)
    except _read_errors(image_module) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc})") from None
    return (pixels / np.float32(255)).reshape(height, width, channels)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )


def images_in(folder: Path) -> list[Path]:
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and entry.suffix.lower() in IMAGE_SUFFIXES
        and not entry.name.startswith(".")
    )


class _Scan:
    """The readable images found so far, their sizes, and the unreadable ones skipped."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.image_module = _pillow()
        self.skip_bad = options["skip_bad"]
        self.size: tuple[int, int] | None = (
            None if options["size"] is None else tuple(options["size"])
        )
        self.first: tuple[Path, tuple[int, int]] | None = None
        self.skipped: list[str] = []

    def readable(self, paths: list[Path]) -> list[Path]:
        kept = []
        for path in paths:
            try:
                width, height = _checked_size(path, self.image_module)
            except DataError as exc:
                if not self.skip_bad:
                    raise DataError(f"{exc} (or set data.options.skip_bad: true)") from None
                self.skipped.append(str(exc))
                continue
            self._check_size(path, (height, width))
            kept.append(path)
        return kept

    def _check_size(self, path: Path, size: tuple[int, int]) -> None:
        """Without a `size` option, every image must be as large as the first one."""
        if self.size is not None:
            return
        if self.first is None:
            self.first = (path, size)
        elif size != self.first[1]:
            (first, (h, w)) = self.first
            raise DataError(
                f"{path}: {size[1]}x{size[0]} pixels, but {first} is {w}x{h}: set "
                "data.options.size: [height, width] to resize every image to one size"
            )


def _split(folder: Path, classes: list[str], scan: _Scan) -> tuple[list[Path], np.ndarray]:
    """The readable images of `folder`'s class folders and their class indices."""
    files: list[Path] = []
    labels: list[int] = []
    for class_folder in _class_folders(folder):
        if class_folder.name not in classes:
            raise DataError(
                f"{class_folder}: class {class_folder.name!r} is not one of the training "
                f"classes ({', '.join(classes)})"
            )
        found = scan.readable(images_in(class_folder))
        files += found
        labels += [classes.index(class_folder.name)] * len(found)
    if not files:
        raise DataError(
            f"{folder}: no readable {', '.join(IMAGE_SUFFIXES)} images in its class folders"
        )
    return files, np.array(labels, np.int64)


def load(options: dict[str, Any], path: Path | None, seed: int) -> Loaded:
    root = require_folder(path, "a folder per class of .png/.jpg images", _OBTAIN)
    if (root / "train").is_dir():
        folders = {name: root / name for name in SPLIT_FOLDERS if (root / name).is_dir()}
    else:
        folders = {"train": root}
    classes = [folder.name for folder in _class_folders(folders["train"])]
    if not classes:
        raise DataError(
            f"{folders['train']}: no class folders; expected {folders['train']}/CLASS_NAME/"
            "*.png (or .jpg), one folder per class"
        )
    scan = _Scan(options)
    found = {name: _split(folder, classes, scan) for name, folder in folders.items()}
    size = scan.size or scan.first[1]  # type: ignore[index]  # _split found an image

    def dataset(name: str) -> ArrayDataset | None:
        if name not in found:
            return None
        files, labels = found[name]
        inputs = ImageFiles(tuple(files), root, size, options["channels"])
        return ArrayDataset(inputs, labels, "classification", len(classes))

    own = f"; {', '.join(folders)} folders" if len(folders) > 1 else ""
    source = f"{root} ({len(classes)} classes{own})"
    return Loaded(
        dataset("train"),
        dataset("test"),
        source,
        val=dataset("val"),
        class_names=tuple(classes),
        skipped_files=tuple(scan.skipped) if scan.skip_bad else None,
    )


ENTRY = DatasetEntry(
    name="image_folder",
    help=(
        "your own images, read with Pillow (pip install 'trainctl[images]'); path: a folder "
        "with a subfolder of .png/.jpg images per class (class indices: the names, sorted), "
        "or with train/, and optionally val/ and test/, each holding those class folders"
    ),
    args={
        "size": Arg(
            "ints",
            None,
            nullable=True,
            low=1,
            length=2,
            help="[height, width] every image is resized to; null: all must be one size",
        ),
        "channels": Arg("int", 3, choices=(1, 3), help="1: grayscale, 3: RGB"),
        "skip_bad": Arg(
            "bool",
            False,
            help="leave out files that are not readable images, and count them, rather than stop",
        ),
    },
    load=load,
    needs_path=True,
    obtain=_OBTAIN,
)
