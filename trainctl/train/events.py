"""TensorBoard event files (scalars, the model graph), written and read without TensorFlow or
tensorboardX.

An event file is a TFRecord stream: each record is `uint64 length, masked CRC-32C of the
length, the bytes, masked CRC-32C of the bytes` (little-endian), and each record's bytes are
one `Event` protocol buffer. trainctl needs only a few fields of it, encoded here by hand
(the graph itself is train/model_graph.py's):

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
              bytes graph_def = 4; Summary summary = 5; SessionLog session_log = 7; }
    Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
    SessionLog { Status status = 1; }       (START = 1)

Why not tensorboardX: importing it imports PyTorch whenever PyTorch is installed (seconds,
and trainctl never imports torch), its SummaryWriter writes from a background thread and
fsyncs on a timer, and it names files by the second and opens them with truncation, so two
writers started in the same second in one directory clobber each other's file. Here every
`scalars()` call is one `os.write` of whole records (a killed process loses nothing written),
`flush()` fsyncs, and a file name is never reused.

A resume writes a SessionLog START at the first step it will log (`restart_at`): TensorBoard
then drops the earlier session's events at that step and later, as `read_scalars` does.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from trainctl.errors import RunFolderError
from trainctl.train import protobuf
from trainctl.train.atomic import describe_os_error, fsync_directory, write_all

FILE_VERSION = "brain.Event:2"  # version 2: TensorBoard honours SessionLog START
_SESSION_START = 1
_file_numbers = itertools.count(1)


# ---------------------------------------------------------------- CRC-32C and TFRecord framing


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """`data` framed as one TFRecord."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def read_tfrecords(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, checking both CRCs of each.

    A record cut short by the end of the file (a crash mid-write) ends the stream quietly;
    a CRC mismatch in a complete record is a RunFolderError naming the file and offset.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFolderError(f"cannot read {path}: {describe_os_error(exc)}") from exc
    offset = 0
    while len(data) - offset >= 12:
        header = data[offset : offset + 8]
        (header_crc,) = struct.unpack_from("<I", data, offset + 8)
        if header_crc != masked_crc32c(header):
            raise RunFolderError(f"{path} is damaged: bad record length checksum at byte {offset}")
        (length,) = struct.unpack("<Q", header)
        end = offset + 12 + length + 4
        if end > len(data):
            return
        record = data[offset + 12 : end - 4]
        (record_crc,) = struct.unpack_from("<I", data, end - 4)
        if record_crc != masked_crc32c(record):
            raise RunFolderError(f"{path} is damaged: bad record checksum at byte {offset}")
        yield record
        offset = end


# ---------------------------------------------------------------- event protocol buffers


def encode_event(
    wall_time: float,
    step: int,
    *,
    file_version: str | None = None,
    scalars: Mapping[str, float] | None = None,
    session_start: bool = False,
    graph_def: bytes | None = None,
) -> bytes:
    """One Event protocol buffer holding the given fields (`graph_def`: a serialized
    GraphDef, what TensorBoard's Graphs tab draws)."""
    out = (
        protobuf.tag(1, 1)
        + struct.pack("<d", wall_time)
        + protobuf.tag(2, 0)
        + protobuf.varint(step)
    )
    if file_version is not None:
        out += protobuf.length_delimited(3, file_version.encode())
    if scalars:
        values = (
            protobuf.length_delimited(1, tag.encode())
            + protobuf.tag(2, 5)
            + struct.pack("<f", value)
            for tag, value in scalars.items()
        )
        out += protobuf.length_delimited(
            5, b"".join(protobuf.length_delimited(1, v) for v in values)
        )
    if graph_def is not None:
        out += protobuf.length_delimited(4, graph_def)
    if session_start:
        out += protobuf.length_delimited(7, protobuf.tag(1, 0) + protobuf.varint(_SESSION_START))
    return out


def decode_event(data: bytes) -> tuple[int, list[tuple[str, float]], bool]:
    """(step, [(tag, simple_value)], is a SessionLog START) of an Event protocol buffer.

    Values of other kinds (histograms, images, tensor-encoded scalars) are skipped.
    """
    step, scalars, session_start = 0, [], False
    for number, wire_type, value in protobuf.fields(data):
        if number == 2 and wire_type == 0:
            step = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5 and wire_type == 2:
            for v_number, v_wire, v_value in protobuf.fields(value):
                if v_number == 1 and v_wire == 2:
                    scalar = _decode_value(v_value)
                    if scalar is not None:
                        scalars.append(scalar)
        elif number == 7 and wire_type == 2:
            session_start = any(
                n == 1 and w == 0 and v == _SESSION_START for n, w, v in protobuf.fields(value)
            )
    return step, scalars, session_start


def _decode_value(data: bytes) -> tuple[str, float] | None:
    tag, simple_value = None, None
    for number, wire_type, value in protobuf.fields(data):
        if number == 1 and wire_type == 2:
            tag = value.decode("utf-8")
        elif number == 2 and wire_type == 5:
            (simple_value,) = struct.unpack("<f", value)
    return None if tag is None or simple_value is None else (tag, simple_value)


# ---------------------------------------------------------------- writer and reader


class EventWriter:
    """Writes scalars to a new event file in `directory` (made on the first write).

    Events reach the file (the OS's cache) when `scalars()` returns; `flush()` and
    `close()` fsync it. A context manager: `with EventWriter(run.events_dir) as events: ...`
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None
        self._fd: int | None = None

    def scalars(
        self, step: int, values: Mapping[str, float], wall_time: float | None = None
    ) -> None:
        """Log `values` ({tag: number}) at `step`; TensorBoard stores them as float32."""
        _check_step(step)
        if not values:
            return
        for tag in values:
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"a scalar's tag must be a non-empty string, got {tag!r}")
        numbers = {tag: float(value) for tag, value in values.items()}
        self._write(encode_event(_now(wall_time), step, scalars=numbers))

    def graph(self, graph_def: bytes, wall_time: float | None = None) -> None:
        """Log a model graph (a serialized GraphDef) for TensorBoard's Graphs tab."""
        self._write(encode_event(_now(wall_time), 0, graph_def=graph_def))

    def restart_at(self, step: int, wall_time: float | None = None) -> None:
        """Mark a resume: events of earlier sessions at `step` or later are stale."""
        _check_step(step)
        self._write(encode_event(_now(wall_time), step, session_start=True))

    def _write(self, event: bytes) -> None:
        try:
            if self._fd is None:
                self._open()
            write_all(self._fd, tfrecord(event))
        except OSError as exc:
            target = self.path or self.directory
            raise RunFolderError(f"cannot write {target}: {describe_os_error(exc)}") from exc

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{next(_file_numbers):03d}"
        )
        self.path = self.directory / name
        # O_EXCL: a file name is never reused, so no earlier events are ever overwritten.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        write_all(self._fd, tfrecord(encode_event(time.time(), 0, file_version=FILE_VERSION)))
        fsync_directory(self.directory)

    def flush(self) -> None:
        """fsync the events written so far."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise RunFolderError(f"cannot write {self.path}: {describe_os_error(exc)}") from exc

    def close(self) -> None:
        """fsync and close; a later write starts a new file."""
        if self._fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"an event's step must be an integer >= 0, got {step!r}")


def _now(wall_time: float | None) -> float:
    if wall_time is None:
        return time.time()
    if not math.isfinite(wall_time):
        raise ValueError(f"wall_time must be a finite number of seconds, got {wall_time!r}")
    return float(wall_time)


def read_scalars(directory: Path | str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from the event files in `directory`, read as TensorBoard does.

    Files are read in name order (their names start with the creation time); a SessionLog
    START at step s drops the values read so far with step >= s (a resumed run's stale tail).
    """
    directory = Path(directory)
    try:
        files = sorted(p for p in directory.iterdir() if "tfevents" in p.name and p.is_file())
    except OSError as exc:
        raise RunFolderError(f"cannot read {directory}: {describe_os_error(exc)}") from exc
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        for number, record in enumerate(read_tfrecords(path)):
            try:
                step, values, session_start = decode_event(record)
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunFolderError(f"{path}: event {number} is malformed: {exc}") from exc
            if session_start:
                for tag, points in scalars.items():
                    scalars[tag] = [(s, v) for s, v in points if s < step]
            for tag, value in values:
                scalars.setdefault(tag, []).append((step, value))
    return {tag: points for tag, points in scalars.items() if points}
