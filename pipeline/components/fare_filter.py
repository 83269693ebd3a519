# This module must not use `from __future__ import annotations`: TFX reads the annotations.
"""FareFilter: drops trips whose fare is not a plausible label, and counts them.

A fare of zero, a negative fare or one above the configured maximum is a data error (or a
trip nobody paid for), not something a booking-time estimate should learn. The filter runs
on Beam, so it scales with the rest of the pipeline, and records on its output artifact how
many rows it read and excluded per split (visible in MLMD and in the run summary).

Each input file is one unit of work: it is read and its kept records written to a file of
the same name, in order, with the fares of a few thousand records read at once by
`tf.io.parse_example`. One Beam element per file instead of one per record: on millions of
rows the per-record cost of Beam and of parsing whole tf.Examples in Python was most of the
step's time. All I/O goes through `tf.io.gfile`, so artifacts may be on `gs://`; a corrupt
or truncated input record stops the step naming the file and byte offset (nothing is
dropped silently).

Rows whose fare cannot be read as a number are kept: the schema gate reports them.

Folded into ExampleGen (data.fold_fare_filter): the streaming ExampleGen already holds each
row's fare as a number, so it can drop the implausible ones as it writes them, with the same
rule (`fare_in_range`) and the same counts. When its examples say they were filtered with
exactly this component's range, this component reads no record: it copies the files (one
Beam element per file, `tf.io.gfile.copy`, so on `gs://` too), carries the counts over and
still applies the too-few checks. Any other input is filtered here as described above.

Too little left to learn from (every trip excluded, or fewer trips in a split than the
config's minimum) stops the run here, before the statistics and Transform: a model learned
from a handful of trips would otherwise be trained, blessed on a threshold its few test trips
cannot support, and served.
"""

import gzip
import os
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from tfx.components.util import examples_utils
from tfx.dsl.component.experimental.annotations import (
    BeamComponentParameter,
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from pipeline.anomalies import DataFaultError
from pipeline.names import (
    EVAL_SPLIT,
    FARE_FILTER_FOLDED_PROPERTY,
    FARE_RANGE_MAX_PROPERTY,
    FARE_RANGE_MIN_PROPERTY,
    ROWS_EXCLUDED_PROPERTY,
    ROWS_READ_PROPERTY,
    TEST_SPLIT,
    TRAIN_SPLIT,
)
from pipeline.serving.request_log import frame_record, scan_records
from taxifare_modules import features as f

_NAMESPACE = "taxifare.fare_filter"


class TooFewTripsError(DataFaultError):
    """Too few trips are left after the fare range to train or to test a model."""


def tested_split(splits: list[str]) -> str:
    """The split the Evaluator blesses on: test when there is one, else eval."""
    return TEST_SPLIT if TEST_SPLIT in splits else EVAL_SPLIT


def check_enough_trips(
    kept: dict[str, int],
    read: int,
    min_fare: float,
    max_fare: float,
    min_train_trips: int,
    min_test_trips: int,
) -> None:
    """Stops a run left with too little data after the fare range.

    Args:
      kept: trips kept per split.
      read: trips read in all splits.
      min_fare, max_fare: the fare range applied (for the message).
      min_train_trips, min_test_trips: the fewest trips the train split and the tested
        split (see `tested_split`) may hold.

    Raises:
      TooFewTripsError: every trip was excluded, or a split holds fewer than its minimum.
    """
    if read and not sum(kept.values()):
        raise TooFewTripsError(
            f"all {read:,} trips were excluded by data.min_fare/max_fare (a fare must be above"
            f" {min_fare:g} and at most {max_fare:g}); nothing is left to train on"
        )
    tested = tested_split(list(kept))
    short = [
        f"{split} has {kept.get(split, 0):,} (data.{key}: {needed:,})"
        for split, key, needed in (
            (TRAIN_SPLIT, "min_train_trips", min_train_trips),
            (tested, "min_test_trips", min_test_trips),
        )
        if kept.get(split, 0) < needed
    ]
    if short:
        raise TooFewTripsError(
            f"too few trips to train and test a model on: {'; '.join(short)} of {read:,} read,"
            f" after data.min_fare/max_fare; add data or lower the minimums"
        )


def fare_in_range(fare, min_fare: float, max_fare: float):
    """The rule of a plausible fare: above `min_fare` and at most `max_fare`.

    `fare` is a number or a numpy array of numbers (then the answer is an array), read as a
    tf.Example holds it: a float32 fare widened to a Python float. The one rule for this
    component and for the streaming ExampleGen that applies the range itself.
    """
    return (fare > min_fare) & (fare <= max_fare)


def is_plausible(serialized: bytes, min_fare: float, max_fare: float) -> bool:
    """True unless the example has a numeric fare <= min_fare or > max_fare."""
    example = tf.train.Example.FromString(serialized)
    feature = example.features.feature.get(f.LABEL_KEY)
    if feature is None:
        return True  # a missing label is the gate's to report
    kind = feature.WhichOneof("kind")
    if kind == "float_list" and feature.float_list.value:
        fare = float(feature.float_list.value[0])
    elif kind == "int64_list" and feature.int64_list.value:
        fare = float(feature.int64_list.value[0])
    else:
        return True
    return bool(fare_in_range(fare, min_fare, max_fare))


# Records whose fares are read by one `tf.io.parse_example` call.
_PARSE_BATCH = 4096
_GZIP_SUFFIX = ".gz"


def plausible_mask(records: list[bytes], min_fare: float, max_fare: float) -> np.ndarray:
    """`is_plausible` of each record, the fares read in one batched parse.

    A batch in which some fare is not a float list (an int64 fare, a string) is checked
    record by record instead.
    """
    try:
        fares = tf.io.parse_example(records, {f.LABEL_KEY: tf.io.VarLenFeature(tf.float32)})[
            f.LABEL_KEY
        ]
    except tf.errors.InvalidArgumentError:
        return np.array([is_plausible(r, min_fare, max_fare) for r in records], dtype=bool)
    keep = np.ones(len(records), dtype=bool)  # no fare (missing or empty): kept
    indices, values = fares.indices.numpy(), fares.values.numpy()
    first = indices[:, 1] == 0  # the first value of each record, as `is_plausible` reads
    rows, fare = indices[first, 0], values[first].astype(np.float64)
    keep[rows] = fare_in_range(fare, min_fare, max_fare)
    return keep


def _open_records(path: str):
    raw = tf.io.gfile.GFile(path, "rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(_GZIP_SUFFIX) else raw


class _FilterFile(beam.DoFn):
    """One input file of a split -> the file of the same name in `output_dir`, without the
    implausible fares."""

    def __init__(self, split: str, min_fare: float, max_fare: float, output_dir: str):
        self._min, self._max, self._output_dir = min_fare, max_fare, output_dir
        self._read = Metrics.counter(_NAMESPACE, f"{split}/{ROWS_READ_PROPERTY}")
        self._excluded = Metrics.counter(_NAMESPACE, f"{split}/{ROWS_EXCLUDED_PROPERTY}")

    def process(self, path: str) -> Iterator[str]:
        name = os.path.basename(path)
        target = os.path.join(
            self._output_dir, name if name.endswith(_GZIP_SUFFIX) else name + _GZIP_SUFFIX
        )
        read = excluded = 0
        with (
            _open_records(path) as source,
            tf.io.gfile.GFile(target, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out,
        ):
            batch: list[bytes] = []
            for record, offset, problem in scan_records(source):
                if record is None:
                    raise ValueError(f"{path}: {problem} at byte {offset} of its records")
                batch.append(record)
                if len(batch) == _PARSE_BATCH:
                    excluded += self._write(out, batch)
                    read += len(batch)
                    batch = []
            if batch:
                excluded += self._write(out, batch)
                read += len(batch)
        self._read.inc(read)
        self._excluded.inc(excluded)
        yield target

    def _write(self, out, batch: list[bytes]) -> int:
        """Writes the plausible records of `batch`; returns how many were left out."""
        keep = plausible_mask(batch, self._min, self._max)
        out.write(b"".join(frame_record(r) for r, k in zip(batch, keep, strict=True) if k))
        return int(len(batch) - keep.sum())


class _CopyFile(beam.DoFn):
    """One input file of a split -> a copy of the same name in `output_dir` (its trips were
    filtered by ExampleGen already)."""

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, path: str) -> Iterator[str]:
        target = os.path.join(self._output_dir, os.path.basename(path))
        tf.io.gfile.copy(path, target, overwrite=True)
        yield target


def beam_counter(result: beam.runners.runner.PipelineResult, namespace: str, name: str) -> int:
    """The value of a Beam counter of a finished pipeline (committed where the runner has it)."""
    counters = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))[
        "counters"
    ]
    return int(sum(c.committed if c.committed is not None else c.attempted for c in counters))


def folded_counts(
    examples: standard_artifacts.Examples, splits: list[str], min_fare: float, max_fare: float
) -> dict[str, tuple[int, int]] | None:
    """Per split (rows read, rows excluded) as ExampleGen recorded them when it applied
    exactly this fare range itself; None when it did not (then this component filters)."""
    if not (
        examples.has_custom_property(FARE_RANGE_MIN_PROPERTY)
        and examples.has_custom_property(FARE_RANGE_MAX_PROPERTY)
        and float(examples.get_float_custom_property(FARE_RANGE_MIN_PROPERTY)) == min_fare
        and float(examples.get_float_custom_property(FARE_RANGE_MAX_PROPERTY)) == max_fare
    ):
        return None
    counts = {}
    for split in splits:
        names = (f"{split}_{ROWS_READ_PROPERTY}", f"{split}_{ROWS_EXCLUDED_PROPERTY}")
        if not all(examples.has_custom_property(name) for name in names):
            return None
        read, excluded = (int(examples.get_int_custom_property(name)) for name in names)
        counts[split] = (read, excluded)
    return counts


@component(use_beam=True)
def FareFilter(  # noqa: N802 (a TFX component is named like a class)
    examples: InputArtifact[standard_artifacts.Examples],
    filtered_examples: OutputArtifact[standard_artifacts.Examples],
    min_fare: Parameter[float],
    max_fare: Parameter[float],
    min_train_trips: Parameter[int] = 0,
    min_test_trips: Parameter[int] = 0,
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Copies `examples` without the trips whose fare is implausible (a plain copy when
    ExampleGen applied this range already: see `folded_counts`).

    Raises:
      TooFewTripsError: see `check_enough_trips` (the counts are recorded first).
    """
    splits = artifact_utils.decode_split_names(examples.split_names)
    filtered_examples.split_names = examples.split_names
    # The same span and version as the input (ExampleGen may record them as properties or
    # custom properties), so the statistics and everything downstream name their span.
    for name in ("span", "version"):
        if examples.has_custom_property(name):
            filtered_examples.set_int_custom_property(name, examples.get_int_custom_property(name))
        if examples.has_property(name):
            setattr(filtered_examples, name, getattr(examples, name))
    examples_utils.set_payload_format(
        filtered_examples, examples_utils.get_payload_format(examples)
    )
    folded = folded_counts(examples, splits, min_fare, max_fare)
    filtered_examples.set_int_custom_property(FARE_FILTER_FOLDED_PROPERTY, int(folded is not None))
    pipeline = beam_pipeline
    for split in splits:
        files = sorted(
            path
            for path in tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
            if not tf.io.gfile.isdir(path)
        )
        output_dir = os.path.join(filtered_examples.uri, f"Split-{split}")
        tf.io.gfile.makedirs(output_dir)
        _ = (
            pipeline
            | f"Files[{split}]" >> beam.Create(files)
            # One file per worker at a time, as many at once as there are files.
            | f"Spread[{split}]" >> beam.Reshuffle()
            | f"Filter[{split}]"
            >> beam.ParDo(
                _CopyFile(output_dir)
                if folded is not None
                else _FilterFile(split, min_fare, max_fare, output_dir)
            )
        )
    result = pipeline.run()
    result.wait_until_finish()
    total_read = total_excluded = 0
    kept: dict[str, int] = {}
    for split in splits:
        if folded is not None:
            read, excluded = folded[split]
        else:
            read = beam_counter(result, _NAMESPACE, f"{split}/{ROWS_READ_PROPERTY}")
            excluded = beam_counter(result, _NAMESPACE, f"{split}/{ROWS_EXCLUDED_PROPERTY}")
        filtered_examples.set_int_custom_property(f"{split}_{ROWS_READ_PROPERTY}", read)
        filtered_examples.set_int_custom_property(f"{split}_{ROWS_EXCLUDED_PROPERTY}", excluded)
        total_read += read
        total_excluded += excluded
        kept[split] = read - excluded
    filtered_examples.set_int_custom_property(ROWS_READ_PROPERTY, total_read)
    filtered_examples.set_int_custom_property(ROWS_EXCLUDED_PROPERTY, total_excluded)
    check_enough_trips(kept, total_read, min_fare, max_fare, min_train_trips, min_test_trips)
