"""Where the statistics come from: request logs, data files, statistics files, MLMD."""

from __future__ import annotations

import glob
import logging
import os
import struct
import tempfile
from typing import Any

from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

_STATS_FILE = "FeatureStats.pb"
_TRAIN_SPLIT = "Split-train"
_SCHEMA_FILE = "schema.pbtxt"
_METADATA_FILE = "metadata.sqlite"
_STATS_TYPE = "ExampleStatistics"
_SCHEMA_TYPE = "Schema"
# TFRecord framing: uint64 length, uint32 crc of the length, data, uint32 crc of the data.
_HEADER = struct.Struct("<QI")
_FOOTER_SIZE = 4


class InputError(ValueError):
    """An input that cannot be used (missing, empty, unreadable or of another schema)."""


def _stats_options(keys: tuple[str, ...]) -> Any:
    import tensorflow_data_validation as tfdv

    # Only the model's raw fields: the log's bookkeeping (predicted_fare, request_id, ...)
    # is not part of the comparison.
    return tfdv.StatsOptions(feature_allowlist=list(keys))


def _good_length(path: str) -> int:
    """The byte length of the whole records at the start of a TFRecord file.

    Walks the length headers only (no data is read), so it is cheap on large logs; the
    checksums are left to the TFRecord reader.
    """
    size = os.path.getsize(path)
    offset = 0
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            (length, _) = _HEADER.unpack(header)
            end = offset + _HEADER.size + length + _FOOTER_SIZE
            if end > size:
                break
            offset = end
    return offset


def request_log_inputs(log_dir: str, workdir: str) -> list[str]:
    """The files of a request log to read, with truncated tails cut off into copies.

    Files still being written (`.inprogress`) are included. A file whose last record is
    truncated (a hard-killed writer) is copied without that record, with a warning.

    Raises:
      InputError: the directory does not exist or holds no records.
    """
    from pipeline.serving.request_log import request_log_files

    if not os.path.isdir(log_dir):
        raise InputError(f"request log directory {log_dir} does not exist")
    paths = request_log_files(log_dir, include_in_progress=True)
    usable = []
    for path in paths:
        good = _good_length(path)
        size = os.path.getsize(path)
        if good < size:
            _LOG.warning(
                "%s: ignoring a truncated last record (%d bytes); the rest is used",
                path,
                size - good,
            )
            if good == 0:
                continue
            copy = os.path.join(workdir, f"{len(usable):05d}-{os.path.basename(path)}")
            with open(path, "rb") as src, open(copy, "wb") as dst:
                dst.write(src.read(good))
            path = copy
        elif size == 0:
            continue
        usable.append(path)
    if not usable:
        raise InputError(f"request log directory {log_dir} holds no logged requests")
    return usable


def _tfrecord_stats(paths: list[str], keys: tuple[str, ...], workdir: str) -> Any:
    import tensorflow_data_validation as tfdv

    # One glob over a directory of links: TFDV reads a single file pattern. The names keep
    # their endings, from which the reader tells gzipped files (ExampleGen's) from plain ones.
    link_dir = tempfile.mkdtemp(dir=workdir, prefix="inputs-")
    for i, path in enumerate(paths):
        link = os.path.join(link_dir, f"{i:05d}-{os.path.basename(path)}")
        os.symlink(os.path.abspath(path), link)
    return tfdv.generate_statistics_from_tfrecord(
        data_location=os.path.join(link_dir, "*"), stats_options=_stats_options(keys)
    )


def serving_statistics(log_dir: str, workdir: str) -> Any:
    """Statistics (Beam) of the model's raw fields in a request log."""
    return _tfrecord_stats(request_log_inputs(log_dir, workdir), f.RAW_FEATURE_KEYS, workdir)


def load_statistics_file(path: str) -> Any:
    """A DatasetFeatureStatisticsList from a binary (`FeatureStats.pb`) or text file."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import statistics_pb2

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise InputError(f"cannot read statistics {path}: {e.strerror}") from e
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        stats.ParseFromString(data)
        if not stats.datasets:
            raise ValueError("no datasets")
    except Exception:  # noqa: BLE001 - not binary: try text before giving up
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        try:
            text_format.Parse(data.decode("utf-8"), stats)
        except Exception as e:  # noqa: BLE001 - any parse failure is a usage error
            raise InputError(f"{path} is not a TFDV statistics file: {e}") from e
    if not stats.datasets or not stats.datasets[0].features:
        raise InputError(f"{path} holds no feature statistics")
    return stats


def _stats_file_in(path: str) -> str | None:
    for candidate in (
        os.path.join(path, _STATS_FILE),
        os.path.join(path, _TRAIN_SPLIT, _STATS_FILE),
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


def data_or_stats(location: str, keys: tuple[str, ...], workdir: str) -> tuple[Any, str]:
    """Statistics of `location`: a statistics file, a StatisticsGen artifact, or data.

    Data is a CSV file, a directory of CSV files, or TFRecord files of tf.Examples (a file,
    a directory or a glob). Returns the statistics and a description of where they came from.

    Raises:
      InputError: nothing usable at `location`.
    """
    if os.path.isdir(location):
        stats_file = _stats_file_in(location)
        if stats_file:
            return load_statistics_file(stats_file), f"statistics {stats_file}"
        csvs = sorted(glob.glob(os.path.join(location, "*.csv")))
        if csvs:
            return _csv_stats(os.path.join(location, "*.csv"), keys), f"CSV data {location}"
        files = sorted(p for p in glob.glob(os.path.join(location, "*")) if os.path.isfile(p))
        if not files:
            raise InputError(f"{location} is empty")
        return _tfrecord_stats(files, keys, workdir), f"TFRecord data {location}"
    if location.endswith((".pb", ".pbtxt")):
        return load_statistics_file(location), f"statistics {location}"
    if location.endswith(".csv"):
        if not os.path.isfile(location):
            raise InputError(f"{location} does not exist")
        return _csv_stats(location, keys), f"CSV data {location}"
    files = sorted(glob.glob(location))
    if not files:
        raise InputError(f"{location} does not exist")
    return _tfrecord_stats(files, keys, workdir), f"TFRecord data {location}"


def _csv_stats(pattern: str, keys: tuple[str, ...]) -> Any:
    import tensorflow_data_validation as tfdv

    return tfdv.generate_statistics_from_csv(
        data_location=pattern, stats_options=_stats_options(keys)
    )


def from_pipeline_root(root: str) -> tuple[str, str | None]:
    """The newest train-split statistics and schema artifacts a run recorded in MLMD.

    Returns:
      (statistics file, schema file or None when no schema artifact is recorded).

    Raises:
      InputError: no metadata store, or no statistics in it.
    """
    from pipeline.mlmd_run import open_store

    sqlite = os.path.join(root, _METADATA_FILE)
    if not os.path.isfile(sqlite):
        raise InputError(f"no pipeline metadata at {sqlite} (is --pipeline-root a run's root?)")
    store = open_store(sqlite)
    stats_file = None
    for artifact in _newest_first(store.get_artifacts_by_type(_STATS_TYPE)):
        stats_file = _stats_file_in(artifact.uri)
        if stats_file:
            break
    if stats_file is None:
        raise InputError(f"{sqlite} records no StatisticsGen statistics with a train split")
    schema_file = None
    for artifact in _newest_first(store.get_artifacts_by_type(_SCHEMA_TYPE)):
        candidate = os.path.join(artifact.uri, _SCHEMA_FILE)
        if os.path.isfile(candidate):
            schema_file = candidate
            break
    return stats_file, schema_file


def _newest_first(artifacts: list[Any]) -> list[Any]:
    return sorted(artifacts, key=lambda a: (a.create_time_since_epoch, a.id), reverse=True)
