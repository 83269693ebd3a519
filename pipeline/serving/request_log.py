"""The request log: every served instance with its prediction, as TFRecord of tf.Example.

Each record is one instance in the training layout (the raw trip fields under their training
names and dtypes; a missing optional field is left out, as in the training examples) plus:
`predicted_fare`, `model_version`, `request_id`, `request_timestamp_ms` (milliseconds since
the epoch), `instance_index` (the instance's place in its request) and `signature_name`.
`tf.data.TFRecordDataset` and TFDV (`generate_statistics_from_tfrecord`) read the files
directly.

Durability: a request's records are handed to the operating system (one `write`) just before
its answer is sent, and only while its client is still there to get it, so once a client has
its answer, even a hard kill of the server cannot lose it; only a power loss can. A write is
whole or not at all (a full disk cuts the file back to its last whole record), and a file
deleted under the writer is noticed and counted (`RequestLog.records_lost`). A file being
written ends in `.tfrecord.inprogress` and holds an exclusive lock; on rotation (by size or
age) or a graceful stop it is fsynced and renamed to `.tfrecord`, so a `*.tfrecord` glob only
ever sees complete files. A hard kill can leave a truncated last record in an `.inprogress`
file: `read_request_log` skips it with a warning, and the next server start
(`recover_request_logs`) cuts it off and renames the file.

File names carry the host, the process id and a sequence number, so several workers (or
servers) can share one log directory.

This module is the one owner of the log's format: the server writes with `frame_record` and
`RequestLog`; readers (the monitoring's skew check among them) list files with
`request_log_files`, read records with `iter_records` and find the whole records of a file
cut mid-record with `whole_records_length`. The readers go through `tf.io.gfile`, so a log
copied to `gs://` reads the same.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import glob
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.serving.field_memo import FieldValueMemo
from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

LOG_SUFFIX = ".tfrecord"
IN_PROGRESS_SUFFIX = ".inprogress"
DEFAULT_PREFIX = "requests"

# Features added to the trip's raw fields.
PREDICTION_KEY = f.PREDICTION_KEY
MODEL_VERSION_KEY = "model_version"
REQUEST_ID_KEY = "request_id"
REQUEST_TIMESTAMP_KEY = "request_timestamp_ms"
INSTANCE_INDEX_KEY = "instance_index"
SIGNATURE_NAME_KEY = "signature_name"
LOG_METADATA_KEYS = (
    PREDICTION_KEY,
    MODEL_VERSION_KEY,
    REQUEST_ID_KEY,
    REQUEST_TIMESTAMP_KEY,
    INSTANCE_INDEX_KEY,
    SIGNATURE_NAME_KEY,
)

# TFRecord framing: uint64 length, masked crc32c of the length, data, masked crc32c of data.
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(_masked_crc(length)) + data + _FOOTER.pack(_masked_crc(data))


def _open_for_reading(path: str) -> Any:
    """A binary reader of `path`, local or `gs://` (through `tf.io.gfile`)."""
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def scan_records(fh: Any) -> Iterator[tuple[bytes | None, int, str]]:
    """Yields (record, end offset, "") per whole record of an open TFRecord file, then
    (None, good end, problem) if the file ends in a truncated or corrupt record."""
    offset = 0
    while True:
        header = fh.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            yield None, offset, "truncated record header"
            return
        length, length_crc = _HEADER.unpack(header)
        if _masked_crc(header[:8]) != length_crc:
            yield None, offset, "corrupt record header"
            return
        data = fh.read(length)
        footer = fh.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            yield None, offset, "truncated record"
            return
        if _masked_crc(data) != _FOOTER.unpack(footer)[0]:
            yield None, offset, "corrupt record"
            return
        offset += _HEADER.size + length + _FOOTER.size
        yield data, offset, ""


def check_records(path: str) -> tuple[int, int, str]:
    """Reads a TFRecord file (local or `gs://`) checking every record's framing and checksums.

    Returns:
      (whole records, their byte length, problem): problem is "" for a sound file, else what
      ends its sound part ("truncated record", "corrupt record header", ...), found at that
      byte length.
    """
    records = good = 0
    with _open_for_reading(path) as fh:
        for record, offset, problem in scan_records(fh):
            if record is None:
                return records, offset, problem
            records, good = records + 1, offset
    return records, good, ""


def iter_records(path: str) -> Iterator[bytes]:
    """The records of one TFRecord file (local or `gs://`); a truncated or corrupt tail is
    skipped with a warning."""
    with _open_for_reading(path) as fh:
        for record, offset, problem in scan_records(fh):
            if record is None:
                _LOG.warning(
                    "%s: skipping a %s at byte %d (the writer was stopped mid-record)",
                    path,
                    problem,
                    offset,
                )
                return
            yield record


# How much of a file `whole_records_length` reads at once.
_SCAN_CHUNK_BYTES = 4 * 1024 * 1024


def whole_records_length(path: str) -> int:
    """The byte length of the whole records at the start of a TFRecord file (local or
    `gs://`): the file's size unless its writer was stopped mid-record.

    Walks the length headers (and their checksums) in large reads, so it is cheap on large
    logs; the data checksums are left to the TFRecord reader.
    """
    with _open_for_reading(path) as fh:
        size = fh.size()
        buffer, buffer_start, offset = b"", 0, 0
        while offset + _HEADER.size <= size:
            if offset + _HEADER.size > buffer_start + len(buffer):
                fh.seek(offset)
                buffer, buffer_start = fh.read(_SCAN_CHUNK_BYTES), offset
            start = offset - buffer_start
            header = buffer[start : start + _HEADER.size]
            length, length_crc = _HEADER.unpack(header)
            if _masked_crc(header[:8]) != length_crc:
                break
            end = offset + _HEADER.size + length + _FOOTER.size
            if end > size:
                break
            offset = end
    return offset


def request_log_files(log_dir: str, include_in_progress: bool = True) -> list[str]:
    """The log files under `log_dir` (local or `gs://`), complete ones (and those being
    written), by name."""
    import tensorflow as tf

    paths = tf.io.gfile.glob(f"{log_dir.rstrip('/')}/*{LOG_SUFFIX}")
    if include_in_progress:
        paths += tf.io.gfile.glob(f"{log_dir.rstrip('/')}/*{LOG_SUFFIX}{IN_PROGRESS_SUFFIX}")
    return sorted(paths)


def read_request_log(log_dir: str, include_in_progress: bool = True) -> Iterator[Any]:
    """Yields every logged instance under `log_dir` as a `tf.train.Example`.

    Args:
      log_dir: the server's `--log-dir`.
      include_in_progress: also read the files still being written.
    """
    from tensorflow.core.example import example_pb2

    for path in request_log_files(log_dir, include_in_progress):
        for record in iter_records(path):
            yield example_pb2.Example.FromString(record)


def recover_request_logs(log_dir: str) -> list[str]:
    """Closes the `.inprogress` files of writers that are gone (hard-killed).

    A truncated last record is cut off (with a warning) and the file is renamed to its final
    name. Files a live writer holds are left alone, so this is safe to run at any time.

    Returns:
      The paths of the recovered files.
    """
    recovered = []
    for path in glob.glob(os.path.join(log_dir, f"*{LOG_SUFFIX}{IN_PROGRESS_SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # recovered or closed meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            if not os.path.exists(path):
                continue  # another process recovered it between our open and lock
            good_end, total = 0, os.fstat(fd).st_size
            with os.fdopen(os.dup(fd), "rb") as fh:
                for record, offset, _ in scan_records(fh):
                    if record is not None:
                        good_end = offset
            if good_end < total:
                _LOG.warning(
                    "%s: cutting off %d bytes of a truncated last record", path, total - good_end
                )
                os.ftruncate(fd, good_end)
            os.fsync(fd)
            final = path[: -len(IN_PROGRESS_SUFFIX)]
            os.rename(path, final)
            recovered.append(final)
        finally:
            os.close(fd)
    return recovered


# The request log's tf.Examples are encoded here, byte by byte, rather than built as protos:
# a served instance must cost microseconds to log. The wire format of tf.Example:
#   Example{features: 1}  Features{feature: 1 (map entries {key: 1, value: 2})}
#   Feature{bytes_list: 1 | float_list: 2 | int64_list: 3}, each list {value: 1 (packed)}.
_F32 = struct.Struct("<f")
_FIELD_1 = b"\x0a"  # field 1, length-delimited
_FIELD_2 = b"\x12"
_FIELD_3 = b"\x1a"
# Encoded map entries of values that repeat (small ints, strings, coordinates) are kept in
# a memo of this many bytes at most.
_ENTRY_CACHE_BYTES = 16 * 1024 * 1024


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as its two's complement, as protobuf writes it
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, data: bytes) -> bytes:
    return tag + _varint(len(data)) + data


def _feature_entry(key: str, value: float | int | str | bytes) -> bytes:
    """One `feature` map entry: float -> float_list, int -> int64_list, str/bytes ->
    bytes_list, one value each."""
    if isinstance(value, float):
        feature = _delimited(_FIELD_2, _FIELD_1 + b"\x04" + _F32.pack(value))
    elif isinstance(value, int):
        feature = _delimited(_FIELD_3, _delimited(_FIELD_1, _varint(value)))
    else:
        data = value.encode("utf-8") if isinstance(value, str) else value
        feature = _delimited(_FIELD_1, _delimited(_FIELD_1, data))
    entry = _delimited(_FIELD_1, key.encode("utf-8")) + _delimited(_FIELD_2, feature)
    return _delimited(_FIELD_1, entry)


_cached_entry = FieldValueMemo(_feature_entry, _ENTRY_CACHE_BYTES)


# The Python type of each raw field's training dtype.
_RAW_TYPES: dict[str, type] = {
    **{key: float for key in f.FLOAT_FEATURE_KEYS},
    **{key: int for key in f.INT_FEATURE_KEYS},
    **{key: str for key in f.STRING_FEATURE_KEYS},
}


def _trip_entries(trip: dict[str, Any]) -> bytes:
    """A trip's raw fields as feature entries, in their training dtypes."""
    return b"".join([_cached_entry(key, _RAW_TYPES[key](value)) for key, value in trip.items()])


def _shared_entries(
    model_version: int, request_id: str, timestamp_ms: int, signature_name: str
) -> bytes:
    """The feature entries every instance of a request has in common."""
    return b"".join(
        (
            _cached_entry(MODEL_VERSION_KEY, int(model_version)),
            _feature_entry(REQUEST_ID_KEY, request_id),
            _feature_entry(REQUEST_TIMESTAMP_KEY, int(timestamp_ms)),
            _cached_entry(SIGNATURE_NAME_KEY, signature_name),
        )
    )


def _instance_example(trip: dict[str, Any], prediction: float, index: int, shared: bytes) -> bytes:
    features = b"".join(
        (
            _trip_entries(trip),
            _feature_entry(PREDICTION_KEY, float(prediction)),
            _cached_entry(INSTANCE_INDEX_KEY, int(index)),
            shared,
        )
    )
    return _delimited(_FIELD_1, features)


def log_examples(
    trips: list[dict[str, Any]],
    predictions: Iterable[float],
    model_version: int,
    request_id: str,
    timestamp_ms: int,
    signature_name: str,
) -> list[bytes]:
    """The served instances of one request as serialized tf.Examples of the request log.

    Args:
      trips: the validated trips, in request order (missing optional fields absent).
      predictions: one predicted fare per trip.
      model_version: the version that answered.
      request_id: the request's id.
      timestamp_ms: when the request came, in milliseconds since the epoch.
      signature_name: the signature that answered.
    """
    shared = _shared_entries(model_version, request_id, timestamp_ms, signature_name)
    return [
        _instance_example(trip, prediction, index, shared)
        for index, (trip, prediction) in enumerate(zip(trips, predictions, strict=True))
    ]


def log_example(
    trip: dict[str, Any],
    prediction: float,
    model_version: int,
    request_id: str,
    timestamp_ms: int,
    instance_index: int,
    signature_name: str,
) -> bytes:
    """One served instance as a serialized tf.Example of the request log."""
    shared = _shared_entries(model_version, request_id, timestamp_ms, signature_name)
    return _instance_example(trip, prediction, instance_index, shared)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


class RequestLog:
    """Appends log records to rotating TFRecord files; safe to call from several threads.

    A write is whole or not at all: when the OS takes only part of it (a full disk, a file
    size limit) the file is cut back to its last whole record and the error is raised, so a
    later write never lands behind half a record. A file that left its path (its directory
    removed) is noticed at the next write: its records are counted in `records_lost`, the
    directory is made again and a new file started.

    Args:
      log_dir: the directory (created if missing).
      rotate_bytes: start a new file before one would grow past this size.
      rotate_seconds: ... or once the current one is older than this.
      sample_rate: the fraction of requests `sample()` says to log.
      prefix: the start of the file names.
    """

    def __init__(
        self,
        log_dir: str,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_seconds: float = 3600.0,
        sample_rate: float = 1.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.sample_rate = sample_rate
        self.prefix = prefix
        self.records_written = 0
        # Records written to a file that was deleted before it was finished.
        self.records_lost = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path = ""
        self._opened_at = 0.0
        self._size = 0
        self._file_records = 0
        self._sequence = 0
        self._random = random.Random()
        # Files being finished (fsync, rename) off the writer's thread after a rotation.
        self._finishing: list[threading.Thread] = []

    def sample(self) -> bool:
        """Whether to log the next request, by the sampling rate."""
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def write(self, records: Iterable[bytes]) -> None:
        """Appends serialized tf.Examples; they are with the OS when this returns.

        Raises:
          OSError: nothing of `records` was kept (the file holds whole records only).
        """
        records = list(records)
        if not records:
            return
        data = b"".join(frame_record(r) for r in records)
        with self._lock:
            self._check_path()
            if self._fd is not None and (
                self._size + len(data) > self.rotate_bytes or self._too_old()
            ):
                self._retire_file()
            if self._fd is None:
                self._open_file()
            fd, good = self._fd, self._size
            try:
                view = memoryview(data)
                while view:  # one write unless the OS takes less
                    view = view[os.write(fd, view) :]
            except OSError:
                self._cut_back(fd, good)
                raise
            self._size += len(data)
            self._file_records += len(records)
            self.records_written += len(records)

    def rotate_if_due(self) -> None:
        """Closes the current file if it is older than `rotate_seconds` (called on a timer)."""
        with self._lock:
            self._check_path()
            if self._fd is not None and self._too_old():
                self._finish_file(*self._detach())

    def close(self) -> None:
        """Flushes, closes and renames the current file (graceful stop); never raises: a
        file it cannot finish is left `.inprogress`, for the next start to recover."""
        with self._lock:
            self._check_path()
            if self._fd is not None:
                self._finish_file(*self._detach())
        self.wait_rotated()

    def wait_rotated(self) -> None:
        """Waits until the files closed by rotation are fsynced and renamed."""
        with self._lock:
            finishing, self._finishing = self._finishing, []
        for thread in finishing:
            thread.join()

    def _too_old(self) -> bool:
        return time.monotonic() - self._opened_at > self.rotate_seconds

    def _open_file(self) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self._sequence += 1
        name = f"{self.prefix}-{stamp}-{_host_tag()}-{os.getpid()}-{self._sequence:05d}"
        path = os.path.join(self.log_dir, name + LOG_SUFFIX + IN_PROGRESS_SUFFIX)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:  # the directory was removed: make it again, once
            os.makedirs(self.log_dir, exist_ok=True)
            _LOG.warning("the request log directory %s was gone; made it again", self.log_dir)
            fd = os.open(path, flags, 0o644)
        # Held until the file is closed: recovery leaves locked files alone.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._path, self._size, self._file_records = fd, path, 0, 0
        self._opened_at = time.monotonic()

    def _check_path(self) -> None:
        """Lets go of the open file if it is no longer at its path (deleted or moved)."""
        if self._fd is None:
            return
        opened = os.fstat(self._fd)
        try:
            current = os.stat(self._path)
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return
        except OSError:
            pass  # not there (or its directory is not one any more): not at its path
        fd, path, records = self._fd, self._path, self._file_records
        self._fd = None
        os.close(fd)
        if opened.st_nlink == 0:
            self.records_lost += records
            _LOG.error(
                "request log file %s was deleted before it was finished: its %d records are"
                " lost; logging goes on in a new file",
                os.path.basename(path),
                records,
            )
        else:
            _LOG.warning(
                "request log file %s was moved away while being written; a new one is started",
                os.path.basename(path),
            )

    def _cut_back(self, fd: int, good: int) -> None:
        """After a failed write: cuts the file back to its whole records, or, if even that
        fails, leaves it (`.inprogress`, for recovery to cut) and starts a new one."""
        try:
            os.ftruncate(fd, good)
        except OSError as e:
            _LOG.error(
                "could not cut %s back to its last whole record (%s); it is left for recovery",
                os.path.basename(self._path),
                e.strerror or e,
            )
            self._fd = None
            os.close(fd)

    def _detach(self) -> tuple[int, str]:
        fd, path = self._fd, self._path
        self._fd = None
        return fd, path

    def _retire_file(self) -> None:
        """Finishes the current file in a thread of its own: an fsync can take long, and the
        writer (the event loop) must not wait for it."""
        thread = threading.Thread(
            target=self._finish_file, args=self._detach(), name="request-log-finish", daemon=True
        )
        self._finishing = [t for t in self._finishing if t.is_alive()] + [thread]
        thread.start()

    @staticmethod
    def _finish_file(fd: int, path: str) -> None:
        """fsyncs, renames to the final name (while still locked, so recovery cannot pick it
        up half-way) and closes; a failure is one log line, the file stays `.inprogress`."""
        try:
            os.fsync(fd)
            if os.fstat(fd).st_nlink == 0:
                _LOG.error(
                    "request log file %s was deleted before it was finished",
                    os.path.basename(path),
                )
                return
            os.rename(path, path[: -len(IN_PROGRESS_SUFFIX)])
        except OSError as e:
            _LOG.error(
                "could not finish request log file %s: %s; it stays %s and the next start"
                " recovers it",
                path,
                e.strerror or e,
                IN_PROGRESS_SUFFIX,
            )
        finally:
            os.close(fd)
