"""Where the statistics come from: request logs, data files and statistics files.

Every path may be local or on any filesystem TensorFlow knows (`gs://` on Google Cloud):
files are listed, read and written only through `tf.io.gfile`. Scratch files go to a local
working directory, except for a pass that may run elsewhere (on Dataflow, whose workers
cannot read this machine's disk): the copies it reads (a log file cut at an incomplete last
record, files gathered from several folders) are written to a `staging` folder on the
pipeline root.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.monitoring.stats_options import MODEL_VERSION_KEY, monitoring_stats_options
from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

_STATS_FILE = "FeatureStats.pb"
_TRAIN_SPLIT = "Split-train"
# Records of one batch of the derived-feature pass.
_DERIVED_BATCH = 2048

__all__ = ["MODEL_VERSION_KEY"]


class InputError(ValueError):
    """An input that cannot be used (missing, empty, unreadable or of another schema)."""


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def is_local(path: str) -> bool:
    """True for a path of the local disk (no `scheme://`)."""
    return "://" not in path or path.startswith("file://")


def join(base: str, *parts: str) -> str:
    """`os.path.join` for local paths and URIs alike (`gs://b/x` + `y` -> `gs://b/x/y`)."""
    if is_local(base):
        return os.path.join(base, *parts)
    return "/".join([base.rstrip("/"), *parts])


def beam_can_read(path: str) -> bool:
    """True when Beam (hence TFDV) reads `path` in place: local disk, gs://, s3://, ...

    Other TensorFlow filesystems (e.g. `ram://`) are read through tf.io.gfile into local
    copies first.
    """
    if is_local(path):
        return True
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(path)
    except ValueError:
        return False
    return True


def model_versions(stats: Any) -> dict[int, int]:
    """Model version -> number of logged instances, from request-log statistics.

    Only statistics computed with `with_versions=True` hold the counts; {} otherwise.
    """
    for feature in stats.datasets[0].features:
        name = feature.path.step[0] if feature.path.step else feature.name
        if name != MODEL_VERSION_KEY:
            continue
        values = feature.string_stats.rank_histogram.buckets or feature.string_stats.top_values
        counts: dict[int, int] = {}
        for v in values:
            label = getattr(v, "label", "") or getattr(v, "value", "")
            count = getattr(v, "sample_count", 0) or getattr(v, "frequency", 0)
            if label.lstrip("-").isdigit():
                counts[int(label)] = int(count)
        return counts
    return {}


def scan_tfrecord(path: str) -> tuple[int, int]:
    """Checks a TFRecord file's framing and checksums; returns (whole records, their bytes).

    A file cut in its last record (a hard-killed writer) is usable up to that record; a
    warning says what is left out.

    Raises:
      InputError: the file is not a TFRecord file, or is corrupt before its end.
    """
    from pipeline.serving.request_log import check_records

    records, good, problem = check_records(path)
    if problem.startswith("corrupt"):
        if records == 0:
            raise InputError(f"{path} is not a TFRecord file")
        raise InputError(f"{path}: corrupt record at byte {good} ({problem})")
    if problem:
        _LOG.warning(
            "%s: ignoring an incomplete last record at byte %d (a writer stopped mid-record);"
            " the %d whole records before it are used",
            path,
            good,
            records,
        )
    return records, good


def request_log_files(log_dir: str) -> list[str]:
    """A request log's files, complete ones and those being written, by name.

    Raises:
      InputError: `log_dir` is not a directory.
    """
    from pipeline.serving import request_log

    gfile = _gfile()
    if not gfile.isdir(log_dir):
        if gfile.exists(log_dir):
            raise InputError(f"request log {log_dir} is a file, not a directory")
        raise InputError(f"request log directory {log_dir} does not exist")
    return request_log.request_log_files(log_dir, include_in_progress=True)


def request_log_inputs(log_dir: str, workdir: str) -> list[str]:
    """The files of a request log to read, checked, with incomplete tails cut off into copies.

    Files still being written (`.inprogress`) are included. A file whose last record is
    incomplete (a hard-killed writer) is copied to `workdir` (a folder on any filesystem)
    without it, with a warning.

    Raises:
      InputError: the directory does not exist, holds no records, or a file is not a
        TFRecord file or is corrupt.
    """
    usable = usable_records(request_log_files(log_dir), workdir)
    if not usable:
        raise InputError(f"request log directory {log_dir} holds no logged requests")
    return usable


def usable_records(paths: list[str], workdir: str) -> list[str]:
    """The TFRecord files among `paths` that hold records, each checked (scan_tfrecord).

    A file with an incomplete last record is replaced by a copy in `workdir` (a folder on any
    filesystem) without it, named `_input_name` of its place in the result.

    Raises:
      InputError: a file is not a TFRecord file or is corrupt.
    """
    gfile = _gfile()
    usable = []
    for path in paths:
        records, good = scan_tfrecord(path)
        if records == 0:
            continue
        if good < gfile.stat(path).length:
            gfile.makedirs(workdir)
            copy = join(workdir, _input_name(len(usable), path))
            with gfile.GFile(path, "rb") as src, gfile.GFile(copy, "wb") as dst:
                dst.write(src.read(good))
            path = copy
        usable.append(path)
    return usable


def _input_name(index: int, path: str) -> str:
    """The name of the `index`th input's copy: in order, and ending as the file does (the
    reader tells gzipped files from plain ones by the ending)."""
    return f"{index:05d}-{path.rsplit('/', 1)[-1]}"


def _staged_pattern(paths: list[str], staging: str) -> str:
    """One file pattern over `paths` that a pass running elsewhere (Dataflow) can read.

    The files are read in place when they share one folder on a filesystem the workers
    reach (not this machine's disk); otherwise each file not yet in `staging` is copied
    there through tf.io.gfile, and the pattern is the folder's.
    """
    staging = staging.rstrip("/")
    folders = {p.rsplit("/", 1)[0] for p in paths}
    reachable = all(beam_can_read(p) and not is_local(p) for p in paths)
    if len(paths) == 1 and reachable:
        return paths[0]
    if len(folders) == 1 and reachable and folders != {staging}:
        return f"{folders.pop()}/*.tfrecord*"
    gfile = _gfile()
    gfile.makedirs(staging)
    for i, path in enumerate(paths):
        target = join(staging, _input_name(i, path))
        if path != target:
            gfile.copy(path, target, overwrite=True)
    return join(staging, "*")


def _off_machine(staging: str | None) -> bool:
    """Whether `staging` is a folder off this machine that Beam (hence Dataflow) reads."""
    return staging is not None and not is_local(staging) and beam_can_read(staging)


def _tfrecord_stats(
    paths: list[str],
    keys: tuple[str, ...],
    workdir: str,
    with_versions: bool = False,
    pipeline_options: Any = None,
    output_path: str | None = None,
    staging: str | None = None,
) -> Any:
    """TFDV statistics of TFRecord files of tf.Examples, in one pass.

    `staging`: a folder on the pipeline root; when it is off this machine (and Beam reads
    its filesystem), the pass reads only paths there or beside the inputs, never this
    machine's disk. A local root means the pass runs here: local copies do.
    """
    import tensorflow_data_validation as tfdv

    if _off_machine(staging):
        return tfdv.generate_statistics_from_tfrecord(
            data_location=_staged_pattern(paths, staging),
            output_path=output_path,
            stats_options=monitoring_stats_options(keys, with_versions),
            pipeline_options=pipeline_options,
        )
    if not all(beam_can_read(p) for p in paths):
        paths = [p if beam_can_read(p) else _local_copy(p, workdir, i) for i, p in enumerate(paths)]
    local = [p for p in paths if is_local(p)]
    if len(local) == len(paths) and len(paths) > 1:
        # One glob over a folder of links: TFDV reads a single file pattern. The names keep
        # their endings, from which the reader tells gzipped files from plain ones.
        import tempfile

        link_dir = tempfile.mkdtemp(dir=workdir, prefix="inputs-")
        for i, path in enumerate(paths):
            link = os.path.join(link_dir, _input_name(i, path))
            os.symlink(os.path.abspath(path), link)
        pattern = os.path.join(link_dir, "*")
    elif len(paths) == 1:
        pattern = paths[0]
    else:
        # Remote files: read in place when they share a folder, else copied to the workdir.
        folders = {p.rsplit("/", 1)[0] for p in paths}
        if len(folders) == 1 and not local:
            pattern = f"{folders.pop()}/*.tfrecord*"
        else:
            return _tfrecord_stats(
                [_local_copy(p, workdir, i) for i, p in enumerate(paths)],
                keys,
                workdir,
                with_versions,
                pipeline_options,
                output_path,
            )
    return tfdv.generate_statistics_from_tfrecord(
        data_location=pattern,
        output_path=output_path,
        stats_options=monitoring_stats_options(keys, with_versions),
        pipeline_options=pipeline_options,
    )


def _local_copy(path: str, workdir: str, index: int) -> str:
    if is_local(path):
        return path
    copy = os.path.join(workdir, _input_name(index, path))
    _gfile().copy(path, copy, overwrite=True)
    return copy


def serving_statistics(
    log_dir: str,
    workdir: str,
    with_versions: bool = False,
    pipeline_options: Any = None,
    output_path: str | None = None,
    staging: str | None = None,
) -> Any:
    """Statistics (one Beam pass) of the model's raw fields in a request log.

    Args:
      log_dir: the request log directory (local or any TensorFlow filesystem).
      workdir: a local scratch directory.
      with_versions: also count the instances per model version (see model_versions).
      pipeline_options: Beam options of the pass; None: TFDV's default (DirectRunner).
      output_path: where TFDV writes the statistics; needed on Dataflow, whose workers
        cannot write to this machine's temporary folder.
      staging: a fresh folder on the pipeline root for the copies the pass reads (files cut
        at an incomplete last record, local files); needed on Dataflow, whose workers
        cannot read this machine's disk. None, or a local folder: copies go to `workdir`.
    """
    copies = staging if _off_machine(staging) else workdir
    return _tfrecord_stats(
        request_log_inputs(log_dir, copies),
        f.SKEW_KEYS,
        workdir,
        with_versions=with_versions,
        pipeline_options=pipeline_options,
        output_path=output_path,
        staging=staging,
    )


def _version_records(log_dir: str, workdir: str, version: int | None) -> Any:
    """Yields the serialized logged examples (of one model version, when given)."""
    import tensorflow as tf

    from pipeline.serving.request_log import iter_records

    spec = {MODEL_VERSION_KEY: tf.io.VarLenFeature(tf.int64)}
    for path in request_log_inputs(log_dir, workdir):  # checked, incomplete tails cut off
        batch: list[bytes] = []
        for record in iter_records(path):
            batch.append(record)
            if len(batch) == _DERIVED_BATCH:
                yield from _of_version(batch, spec, version)
                batch = []
        if batch:
            yield from _of_version(batch, spec, version)


def _of_version(batch: list[bytes], spec: dict[str, Any], version: int | None) -> Any:
    import tensorflow as tf

    if version is None:
        yield batch
        return
    parsed = tf.io.parse_example(batch, spec)
    versions = tf.sparse.to_dense(parsed[MODEL_VERSION_KEY], default_value=-1)[:, 0].numpy()
    kept = [record for record, v in zip(batch, versions, strict=True) if v == version]
    if kept:
        yield kept


def version_statistics(log_dir: str, workdir: str, version: int) -> Any:
    """Statistics of the instances one model version answered (a second pass over the log)."""
    import tensorflow as tf

    path = os.path.join(workdir, f"version-{version}.tfrecord")
    kept = 0
    with tf.io.TFRecordWriter(path) as out:
        for batch in _version_records(log_dir, workdir, version):
            for record in batch:
                out.write(record)
            kept += len(batch)
    if not kept:
        raise InputError(f"request log {log_dir} has no instances answered by version {version}")
    return _tfrecord_stats([path], f.SKEW_KEYS, workdir)


def derived_serving_statistics(
    log_dir: str, model_dir: str, workdir: str, version: int | None = None
) -> Any:
    """Statistics of what the model computed for the logged requests.

    The trip distance comes from the served model's own Transform graph (its
    `transform_features` signature, run on the logged raw fields); the predicted fare is the
    one the log recorded.

    Args:
      log_dir: the request log.
      model_dir: the SavedModel that answered (a pushed version folder or the Trainer's).
      workdir: a local scratch directory.
      version: only the instances this model version answered (None: all).
    """
    import tensorflow as tf

    from taxifare_modules.monitoring_reference import derived_example

    model = tf.saved_model.load(model_dir)
    transform = model.signatures[f.TRANSFORM_FEATURES_SIGNATURE]
    spec = {f.PREDICTION_KEY: tf.io.VarLenFeature(tf.float32)}
    path = os.path.join(workdir, "derived-serving.tfrecord")
    written = 0
    with tf.io.TFRecordWriter(path) as out:
        for batch in _version_records(log_dir, workdir, version):
            examples = tf.constant(batch)
            distance = tf.reshape(transform(examples=examples)[f.DISTANCE_XF], [-1]).numpy()
            fares = tf.sparse.to_dense(
                tf.io.parse_example(examples, spec)[f.PREDICTION_KEY], default_value=float("nan")
            )[:, 0].numpy()
            for d, fare in zip(distance, fares, strict=True):
                out.write(derived_example(float(d), float(fare)))
                written += 1
    if not written:
        raise InputError(f"request log {log_dir} has no instances to derive features from")
    return _tfrecord_stats([path], f.DERIVED_KEYS, workdir)


def derived_reference_statistics(model_dir: str, workdir: str) -> Any | None:
    """Statistics of what the model computed on its eval split when it was trained.

    None when the model carries no reference (trained before models recorded one).
    """
    from taxifare_modules.monitoring_reference import reference_file

    path = reference_file(model_dir)
    if not _gfile().exists(path):
        return None
    return _tfrecord_stats([path], f.DERIVED_KEYS, workdir)


def load_statistics_file(path: str) -> Any:
    """A DatasetFeatureStatisticsList from a binary (`FeatureStats.pb`) or text file.

    Raises:
      InputError: the file cannot be read or is not a TFDV statistics file.
    """
    from google.protobuf import message, text_format
    from tensorflow_metadata.proto.v0 import statistics_pb2

    gfile = _gfile()
    if gfile.isdir(path):
        raise InputError(f"statistics {path} is a directory, not a statistics file")
    try:
        with gfile.GFile(path, "rb") as fh:
            data = fh.read()
    except Exception as e:  # noqa: BLE001 - tf.errors.* and OSError alike name the cause
        raise InputError(f"cannot read statistics {path}: {_reason(e)}") from e
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    try:
        stats.ParseFromString(data)
        parsed = bool(stats.datasets)
    except message.DecodeError:
        parsed = False
    if not parsed:
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        try:
            text_format.Parse(data.decode("utf-8"), stats)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise InputError(
                f"{path} is not a TFDV statistics file (neither binary nor text: {e})"
            ) from e
    if not stats.datasets or not stats.datasets[0].features:
        raise InputError(f"{path} holds no feature statistics")
    return stats


def _reason(error: Exception) -> str:
    return getattr(error, "message", None) or getattr(error, "strerror", None) or str(error)


def stats_file_in(path: str) -> str | None:
    """The statistics file of a StatisticsGen artifact (its train split) or folder, if any."""
    gfile = _gfile()
    for candidate in (join(path, _STATS_FILE), join(path, _TRAIN_SPLIT, _STATS_FILE)):
        if gfile.exists(candidate) and not gfile.isdir(candidate):
            return candidate
    return None


def _check_csv(path: str) -> None:
    """Raises InputError for a CSV file that is empty or has a header and no rows."""
    with _gfile().GFile(path, "rb") as fh:
        head = fh.read(1 << 16)
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (byte {e.start})") from e
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{path} is empty")
    if len(lines) == 1 and len(head) < (1 << 16):
        raise InputError(f"{path} has a header line and no rows")


def data_or_stats(location: str, keys: tuple[str, ...], workdir: str) -> tuple[Any, str]:
    """Statistics of `location`: a statistics file, a StatisticsGen artifact, or data.

    Data is a CSV file, a directory of CSV files, or TFRecord files of tf.Examples (a file,
    a directory or a glob). Returns the statistics and a description of where they came from.

    Raises:
      InputError: nothing usable at `location`.
    """
    gfile = _gfile()
    if gfile.isdir(location):
        stats_file = stats_file_in(location)
        if stats_file:
            return load_statistics_file(stats_file), f"statistics {stats_file}"
        csvs = sorted(gfile.glob(join(location, "*.csv")))
        if csvs:
            for csv in csvs:
                _check_csv(csv)
            return _csv_stats(join(location, "*.csv"), keys, workdir), f"CSV data {location}"
        files = sorted(
            join(location, name)
            for name in gfile.listdir(location)
            if not gfile.isdir(join(location, name))
        )
        if not files:
            raise InputError(f"{location} is empty")
        return _checked_tfrecord_stats(files, keys, workdir), f"TFRecord data {location}"
    if location.endswith((".pb", ".pbtxt")):
        return load_statistics_file(location), f"statistics {location}"
    if location.endswith(".csv"):
        if not gfile.exists(location):
            raise InputError(f"{location} does not exist")
        _check_csv(location)
        return _csv_stats(location, keys, workdir), f"CSV data {location}"
    files = sorted(gfile.glob(location))
    if not files:
        raise InputError(f"{location} does not exist")
    return _checked_tfrecord_stats(files, keys, workdir), f"TFRecord data {location}"


def _checked_tfrecord_stats(files: list[str], keys: tuple[str, ...], workdir: str) -> Any:
    """Statistics of TFRecord files, each checked first (a bad file fails before the pass)."""
    usable = usable_records(files, workdir)
    if not usable:
        raise InputError(f"{files[0].rsplit('/', 1)[0]} holds no records")
    return _tfrecord_stats(usable, keys, workdir)


def _csv_stats(pattern: str, keys: tuple[str, ...], workdir: str) -> Any:
    import tensorflow_data_validation as tfdv

    if not beam_can_read(pattern):
        import tempfile

        folder = tempfile.mkdtemp(dir=workdir, prefix="csv-")
        for i, path in enumerate(sorted(_gfile().glob(pattern))):
            _gfile().copy(path, os.path.join(folder, f"{i:05d}.csv"), overwrite=True)
        pattern = os.path.join(folder, "*.csv")
    return tfdv.generate_statistics_from_csv(
        data_location=pattern, stats_options=monitoring_stats_options(keys)
    )


def request_log_fingerprint(log_dir: str) -> str:
    """A short digest of a request log's files and sizes ("" when there is none).

    The pipeline passes it to SkewCheck so that TFX's cache re-runs the check when the log
    has grown, and reuses the last verdict when it has not.
    """
    import hashlib

    if not is_local(log_dir):
        return ""  # read at compile time, possibly offline: the cache key stays fixed
    gfile = _gfile()
    try:
        paths = request_log_files(log_dir)
    except InputError:
        return ""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.rsplit('/', 1)[-1]}:{gfile.stat(path).length}\n".encode())
    return digest.hexdigest()[:16]
