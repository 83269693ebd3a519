"""Where the statistics come from: request logs, data files and statistics files."""

from __future__ import annotations

import glob
import logging
import os
import struct
import tempfile
from typing import Any

from taxifare_modules import features as f

# The request log's record of which model answered (pipeline/serving/request_log.py).
MODEL_VERSION_KEY = "model_version"

_LOG = logging.getLogger(__name__)

_STATS_FILE = "FeatureStats.pb"
_TRAIN_SPLIT = "Split-train"
# TFRecord framing: uint64 length, uint32 crc of the length, data, uint32 crc of the data.
_HEADER = struct.Struct("<QI")
_FOOTER_SIZE = 4


class InputError(ValueError):
    """An input that cannot be used (missing, empty, unreadable or of another schema)."""


def _stats_options(keys: tuple[str, ...], with_versions: bool = False) -> Any:
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    # Only the model's raw fields: the log's bookkeeping (predicted_fare, request_id, ...)
    # is not part of the comparison.
    if not with_versions:
        return tfdv.StatsOptions(feature_allowlist=list(keys))
    # ... except the model version, counted per value in the same pass (a categorical
    # integer gets value frequencies), so finding which models served costs no extra read.
    schema = schema_pb2.Schema()
    feature = schema.feature.add(name=MODEL_VERSION_KEY, type=schema_pb2.INT)
    feature.int_domain.is_categorical = True
    return tfdv.StatsOptions(feature_allowlist=[*keys, MODEL_VERSION_KEY], schema=schema)


def model_versions(stats: Any) -> dict[int, int]:
    """Model version -> number of logged instances, from request-log statistics.

    Only statistics computed with `with_versions=True` hold the counts; {} otherwise.
    """
    for feature in stats.datasets[0].features:
        name = feature.path.step[0] if feature.path.step else feature.name
        if name != MODEL_VERSION_KEY:
            continue
        values = feature.string_stats.top_values or [
            b for b in feature.string_stats.rank_histogram.buckets
        ]
        counts: dict[int, int] = {}
        for v in values:
            label = getattr(v, "value", None) or getattr(v, "label", "")
            count = getattr(v, "frequency", None) or getattr(v, "sample_count", 0)
            if label.lstrip("-").isdigit():
                counts[int(label)] = int(count)
        return counts
    return {}


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
    from pipeline.serving.request_log import LOG_SUFFIX, request_log_files

    if log_dir.startswith("gs://"):
        # A bucket has no files being written: complete files only, read by TFDV directly.
        import tensorflow as tf

        pattern = f"{log_dir.rstrip('/')}/*{LOG_SUFFIX}"
        if not tf.io.gfile.glob(pattern):
            raise InputError(f"request log directory {log_dir} holds no logged requests")
        return [pattern]
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


def _tfrecord_stats(
    paths: list[str],
    keys: tuple[str, ...],
    workdir: str,
    with_versions: bool = False,
    pipeline_options: Any = None,
) -> Any:
    import tensorflow_data_validation as tfdv

    if len(paths) == 1 and paths[0].startswith("gs://"):
        pattern = paths[0]  # request_log_inputs' glob of a bucket's complete files
    else:
        # One glob over a directory of links: TFDV reads a single file pattern. The names
        # keep their endings, from which the reader tells gzipped files from plain ones.
        link_dir = tempfile.mkdtemp(dir=workdir, prefix="inputs-")
        for i, path in enumerate(paths):
            link = os.path.join(link_dir, f"{i:05d}-{os.path.basename(path)}")
            os.symlink(os.path.abspath(path), link)
        pattern = os.path.join(link_dir, "*")
    return tfdv.generate_statistics_from_tfrecord(
        data_location=pattern,
        stats_options=_stats_options(keys, with_versions),
        pipeline_options=pipeline_options,
    )


def serving_statistics(
    log_dir: str, workdir: str, with_versions: bool = False, pipeline_options: Any = None
) -> Any:
    """Statistics (one Beam pass) of the model's raw fields in a request log.

    Args:
      log_dir: the request log directory (local, or gs:// for complete files only).
      workdir: a scratch directory.
      with_versions: also count the instances per model version (see model_versions).
      pipeline_options: Beam options of the pass; None: TFDV's default (DirectRunner).
    """
    return _tfrecord_stats(
        request_log_inputs(log_dir, workdir),
        f.RAW_FEATURE_KEYS,
        workdir,
        with_versions=with_versions,
        pipeline_options=pipeline_options,
    )


def version_statistics(log_dir: str, workdir: str, version: int) -> Any:
    """Statistics of the instances one model version answered (a second pass over the log)."""
    from tensorflow.core.example import example_pb2

    from pipeline.serving.request_log import frame_record, iter_records

    path = os.path.join(workdir, f"version-{version}.tfrecord")
    kept = 0
    with open(path, "wb") as out:
        for source in request_log_inputs(log_dir, workdir):
            for record in iter_records(source):
                example = example_pb2.Example.FromString(record)
                values = example.features.feature[MODEL_VERSION_KEY].int64_list.value
                if values and values[0] == version:
                    out.write(frame_record(record))
                    kept += 1
    if not kept:
        raise InputError(f"request log {log_dir} has no instances answered by version {version}")
    return _tfrecord_stats([path], f.RAW_FEATURE_KEYS, workdir)


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


def stats_file_in(path: str) -> str | None:
    """The statistics file of a StatisticsGen artifact (its train split) or folder, if any."""
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
        stats_file = stats_file_in(location)
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


def request_log_fingerprint(log_dir: str) -> str:
    """A short digest of a local request log's files and sizes ("" for gs:// or none).

    The pipeline passes it to SkewCheck so that TFX's cache re-runs the check when the log
    has grown, and reuses the last verdict when it has not.
    """
    import hashlib

    from pipeline.serving.request_log import request_log_files

    if log_dir.startswith("gs://") or not os.path.isdir(log_dir):
        return ""
    digest = hashlib.sha256()
    for path in request_log_files(log_dir, include_in_progress=True):
        digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()[:16]
