"""CsvExampleGen for the trip CSVs that streams: typed by the curated schema, no reshuffle.

TFX's CsvExampleGen, on Beam's DirectRunner (FnApiRunner), holds the whole input in the
runner process twice, so its memory grows with the number of rows:

1. it infers the column types with a `CombineGlobally` over every parsed line, used as a
   side input of the stage that builds the tf.Examples; the parsed lines feed two stages,
   and the runner buffers them whole until the inference is done;
2. its `WriteSplit` puts a `Reshuffle` (a GroupByKey) before writing each split, and the
   FnApiRunner keeps a GroupByKey's whole input in memory.

This executor differs in exactly those two places and nowhere else:

- The column names and types come from the curated schema shipped with the package
  (`pipeline/schema/schema.pbtxt`, the schema ImportSchemaGen imports), not from the data.
  A file whose header lacks a schema column, or has a column the schema does not know, fails
  before any row is read, with the file and the column named. A cell that does not parse as
  its column's type fails with the file, line and column.
- Each file is read, parsed and turned into serialized tf.Examples in one fused stage, and
  each split is written as it comes, WITHOUT a reshuffle: within a split, the records keep
  the order of the input files. The Trainer shuffles its training input, and nothing
  downstream depends on record order. Output files roll over every `SHARD_RECORDS` records,
  so a large split is several files that readers take in parallel.

With a fare range in its `custom_config` (see `custom_config`; data.fold_fare_filter), it
also drops the rows whose fare is implausible as it builds them, with FareFilter's rule
(`fare_filter.fare_in_range`, on the fare as the tf.Example holds it, a float32), keeping
a row whose fare cell is empty as FareFilter keeps a fare it cannot read. It counts the rows
read and excluded per split exactly as FareFilter counts them and records them, and the
range, on its examples; FareFilter then copies the files instead of reading them again. The
split of a kept row does not change: it is a hash of the row's own serialized example, so
dropping other rows before the split puts every kept row where it was. An excluded row's
split (for the counts) is found with the same partition function of the base executor.

Everything else is TFX's: the component (FileBasedExampleGen, its driver: spans, versions,
`input_fingerprint`), the hash-bucket split of `output_config` (the base executor's
partition, which hashes the serialized example, so a row lands in the same split as with
TFX's executor), the output layout (`Split-<name>/data_tfrecord-SSSSS-of-NNNNN.gz`, gzip
TFRecords) and the artifact properties (`split_names`, payload and file format). The
tf.Examples are those TFX's CsvExampleGen builds from the same files (Python's `csv`
module, UTF-8): one value per cell, an empty cell a feature of the column's type with no
value, blank lines skipped.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from apache_beam.io import filebasedsink, filesystems
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.example_gen import base_example_gen_executor, write_split
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from pipeline.anomalies import DataFaultError
from pipeline.components.fare_filter import beam_counter, fare_in_range
from pipeline.curated_schema import read_shipped_schema
from pipeline.example_gen_config import read_struct_custom_config, struct_custom_config
from pipeline.names import (
    FARE_RANGE_MAX_PROPERTY,
    FARE_RANGE_MIN_PROPERTY,
    ROWS_EXCLUDED_PROPERTY,
    ROWS_READ_PROPERTY,
)
from pipeline.serving.request_log import frame_record
from taxifare_modules import features as f

# A split's output rolls over to a new file after this many records (about 4 MB of gzip):
# gzip files are read whole, so a large split needs many for parallel reads (Dataflow's
# workers, the Trainer's interleave); a small split stays one file.
SHARD_RECORDS = 100_000

_INT = schema_pb2.FeatureType.INT
_FLOAT = schema_pb2.FeatureType.FLOAT
_BYTES = schema_pb2.FeatureType.BYTES

# The custom_config key of the fare range [min_fare, max_fare] to apply while reading.
FARE_RANGE_KEY = "fare_range"
_NAMESPACE = "taxifare.csv_example_gen"


def custom_config(min_fare: float, max_fare: float) -> example_gen_pb2.CustomConfig:
    """The custom_config that has this ExampleGen drop the fares FareFilter would drop."""
    return struct_custom_config({FARE_RANGE_KEY: [min_fare, max_fare]})


def read_fare_range(exec_properties: dict[str, Any]) -> tuple[float, float] | None:
    """The (min_fare, max_fare) the custom_config asks to apply; None when it asks none."""
    fare_range = read_struct_custom_config(exec_properties, "CsvExampleGen").get(FARE_RANGE_KEY)
    if fare_range is None:
        return None
    min_fare, max_fare = (float(v) for v in fare_range)
    return min_fare, max_fare


def _split_configs(
    exec_properties: dict[str, Any],
) -> tuple[example_gen_pb2.Input, example_gen_pb2.Output]:
    """ExampleGen's input and output configs, parsed from its execution properties."""
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
    )
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config
    )
    return input_config, output_config


class _SplitOf:
    """The output split a serialized example lands in, by the base executor's partition."""

    def __init__(self, exec_properties: dict[str, Any], split_pattern: str):
        input_config, output_config = _split_configs(exec_properties)
        self._split_config = output_config.split_config
        self._names = [split.name for split in self._split_config.splits]
        self._buckets = []
        total = 0
        for split in self._split_config.splits:
            total += split.hash_buckets
            self._buckets.append(total)
        # Without output splits the input splits are the output's, one pattern each.
        self._input_split = next(
            (s.name for s in input_config.splits if s.pattern == split_pattern), None
        )

    def __call__(self, serialized: bytes) -> str:
        if not self._names:
            return self._input_split
        index = base_example_gen_executor._PartitionFn(  # noqa: SLF001 (the same hash)
            serialized, len(self._buckets), self._buckets, self._split_config
        )
        return self._names[index]


class CsvHeaderError(DataFaultError):
    """A CSV file's columns are not the curated schema's; names the file and the column."""


class CsvCellError(DataFaultError):
    """A CSV cell does not parse as its column's type; names the file, line and column."""


def curated_column_types() -> dict[str, int]:
    """Column name -> schema_pb2.FeatureType (INT, FLOAT, BYTES), from the curated schema."""
    schema = read_shipped_schema()
    types = {}
    for feature in schema.feature:
        if feature.type not in (_INT, _FLOAT, _BYTES):
            raise ValueError(f"curated schema: feature {feature.name!r} has no CSV type")
        types[feature.name] = feature.type
    return types


def check_header(path: str, header: list[str], types: dict[str, int]) -> None:
    """Raises CsvHeaderError unless `header` names each schema column exactly once."""
    seen: set[str] = set()
    for name in header:
        if name not in types:
            raise CsvHeaderError(
                f"{path}: column {name!r} is not in the curated schema"
                f" (expected the columns {sorted(types)})"
            )
        if name in seen:
            raise CsvHeaderError(f"{path}: column {name!r} appears twice in the header")
        seen.add(name)
    for name in types:
        if name not in seen:
            raise CsvHeaderError(f"{path}: the header has no column {name!r} (curated schema)")


def _read_header(path: str) -> list[str]:
    with filesystems.FileSystems.open(path) as fh:
        first = fh.readline().decode("utf-8")
    return next(csv.reader([first]), [])


class _TFRecordSink(filebasedsink.FileBasedSink):
    """Gzip TFRecord files that roll over every `max_records_per_shard` records.

    Beam's WriteToTFRecord cannot cap the records of a file, and its fixed shard count
    groups the whole split by key first (the memory this module avoids)."""

    def __init__(self, file_path_prefix: str, max_records: int, counter: str | None = None):
        # Counts the records written into the Beam counter named `counter` (if any), one
        # increment per file rather than a counting step per record.
        self._counter = counter
        self._written: dict[int, int] = {}
        super().__init__(
            file_path_prefix,
            coder=beam.coders.BytesCoder(),
            file_name_suffix=".gz",
            num_shards=0,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.GZIP,
            max_records_per_shard=max_records,
        )

    def write_encoded_record(self, file_handle, value: bytes) -> None:
        file_handle.write(frame_record(value))
        if self._counter:
            key = id(file_handle)
            self._written[key] = self._written.get(key, 0) + 1

    def close(self, file_handle) -> None:
        written = self._written.pop(id(file_handle), 0)
        super().close(file_handle)
        if self._counter and written:
            Metrics.counter(_NAMESPACE, self._counter).inc(written)


class _CsvFileToExamples(beam.DoFn):
    """One CSV file -> its rows as serialized tf.Examples, in file order; with a fare range,
    only the rows whose fare is plausible (the others counted per split)."""

    def __init__(
        self,
        types: dict[str, int],
        fare_range: tuple[float, float] | None = None,
        split_of: _SplitOf | None = None,
    ):
        self._types = types
        self._fare_range = fare_range
        self._split_of = split_of
        self._excluded: dict[str, Any] = {}

    def _count_excluded(self, serialized: bytes) -> None:
        split = self._split_of(serialized)
        if split not in self._excluded:
            self._excluded[split] = Metrics.counter(_NAMESPACE, f"{split}/{ROWS_EXCLUDED_PROPERTY}")
        self._excluded[split].inc()

    def process(self, path: str) -> Iterator[bytes]:
        # Beam's file systems (any URI), compression by suffix, as TFX's executor reads.
        with filesystems.FileSystems.open(path) as fh:
            # csv.reader asks for the next line itself inside a quoted multi-line cell.
            reader = csv.reader(line.decode("utf-8") for line in fh)
            header = next(reader, None)
            if header is None:
                return
            check_header(path, header, self._types)
            columns = [(name, self._types[name]) for name in header]
            width = len(columns)
            # FareFilter reads a float or an int fare; a text one is kept (as by FareFilter).
            fare_kind = self._types[f.LABEL_KEY]
            fare_at = (
                header.index(f.LABEL_KEY)
                if self._fare_range and fare_kind in (_FLOAT, _INT)
                else None
            )
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != width:
                    raise CsvCellError(
                        f"{path}: line {reader.line_num}: {len(row)} cells, the header has {width}"
                    )
                try:
                    serialized = _row_to_example(columns, row)
                except ValueError as e:
                    raise CsvCellError(f"{path}: line {reader.line_num}, {e}") from None
                # The fare as the tf.Example holds it (a float32, or an int64) and FareFilter
                # reads it; an empty cell (no fare) is kept.
                if fare_at is not None and row[fare_at]:
                    cell = row[fare_at]
                    fare = float(np.float32(float(cell)) if fare_kind == _FLOAT else int(cell))
                    if not fare_in_range(fare, *self._fare_range):
                        self._count_excluded(serialized)
                        continue
                yield serialized


def _row_to_example(columns: list[tuple[str, int]], row: list[str]) -> bytes:
    """A CSV row as a serialized tf.Example: one value per cell; an empty cell, a feature of
    its column's type with no value (as TFX's CsvExampleGen builds it)."""
    example = tf.train.Example()
    features = example.features.feature
    for (name, kind), cell in zip(columns, row, strict=True):
        try:
            if kind == _FLOAT:
                values = features[name].float_list
                values.SetInParent()
                if cell:
                    values.value.append(float(cell))
            elif kind == _INT:
                values = features[name].int64_list
                values.SetInParent()
                if cell:
                    values.value.append(int(cell))
            else:
                values = features[name].bytes_list
                values.SetInParent()
                if cell:
                    values.value.append(cell.encode())
        except ValueError as e:
            raise ValueError(
                f"column {name!r}: {cell!r} is not {schema_pb2.FeatureType.Name(kind)} as the"
                f" curated schema says ({e})"
            ) from None
    # Deterministic: the split is a hash of these bytes, as in TFX's executor.
    return example.SerializeToString(deterministic=True)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _CsvToSerializedExample(  # noqa: N802 (a Beam PTransform)
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.PCollection:
    """The split pattern's CSV files as serialized tf.Examples, typed by the curated schema."""
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    files = sorted(p for p in fileio.glob(pattern) if not fileio.isdir(p))
    if not files:
        raise RuntimeError(f"Split pattern {pattern} does not match any files.")
    types = curated_column_types()
    # Every header checked before Beam starts: a wrong column fails here, named.
    for path in files:
        check_header(path, _read_header(path), types)
    fare_range = read_fare_range(exec_properties)
    logging.info(
        "CsvExampleGen: %d file(s) of %s, typed by the curated schema%s",
        len(files),
        pattern,
        f", fares kept in ({fare_range[0]:g}, {fare_range[1]:g}]" if fare_range else "",
    )
    split_of = _SplitOf(exec_properties, split_pattern) if fare_range else None
    return (
        pipeline
        | "CreateFilenames" >> beam.Create(files)
        | "CsvToExamples" >> beam.ParDo(_CsvFileToExamples(types, fare_range, split_of))
    )


@beam.ptransform_fn
@beam.typehints.with_input_types(bytes)
def _WriteSplitInOrder(  # noqa: N802 (a Beam PTransform)
    records: beam.PCollection, output_split_path: str, counter: str | None = None
) -> beam.pvalue.PDone:
    """One split as gzip TFRecords, named as TFX's WriteSplit names them; no reshuffle.
    With `counter`, the records written are counted in that Beam counter."""
    return records | "Write" >> beam.io.iobase.Write(
        _TFRecordSink(
            os.path.join(output_split_path, write_split.DEFAULT_TF_RECORD_FILE_NAME),
            SHARD_RECORDS,
            counter,
        )
    )


class Executor(BaseExampleGenExecutor):
    """TFX's CsvExampleGen executor, typed by the curated schema and without the reshuffle."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX API)
        """Returns the PTransform from a split pattern's CSV files to serialized examples."""
        return _CsvToSerializedExample

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list],
        output_dict: dict[str, list],
        exec_properties: dict[str, Any],
    ) -> None:
        """The base executor's Do, with each split written in order instead of reshuffled."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config, output_config = _split_configs(exec_properties)
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact = artifact_utils.get_single_instance(examples)
        artifact.split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config)
        )
        output_payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        if output_payload_format not in (None, example_gen_pb2.FORMAT_TF_EXAMPLE):
            raise ValueError("CsvExampleGen writes tf.Examples only (output_data_format)")
        output_file_format = exec_properties.get(
            standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
            example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
        )
        write_split.to_file_format_str(output_file_format)  # only gzip TFRecords

        fare_range = read_fare_range(exec_properties)
        with self._make_beam_pipeline() as pipeline:
            splits = self.GenerateExamplesByBeam(pipeline, exec_properties)
            for split_name, records in splits.items():
                split_uri = artifact_utils.get_split_uri(examples, split_name)
                # With a fare range, the kept rows are counted as they are written.
                counter = _kept_counter(split_name) if fare_range else None
                _ = records | f"WriteSplit[{split_name}]" >> _WriteSplitInOrder(split_uri, counter)
        if fare_range:
            for each in examples:
                _record_fare_range(each, pipeline.result, list(splits), fare_range)

        for each in examples:
            if output_payload_format:
                examples_utils.set_payload_format(each, output_payload_format)
            if output_file_format:
                examples_utils.set_file_format(
                    each, write_split.to_file_format_str(output_file_format)
                )
        logging.info("CsvExampleGen: examples written")


def _kept_counter(split: str) -> str:
    """The Beam counter of a split's records kept by the fare range (and written)."""
    return f"{split}/kept"


def _record_fare_range(
    examples,
    result: beam.runners.runner.PipelineResult,
    splits: list[str],
    fare_range: tuple[float, float],
) -> None:
    """Records the range applied and the rows read and excluded, per split and in all, as
    FareFilter records them on its output."""
    examples.set_float_custom_property(FARE_RANGE_MIN_PROPERTY, fare_range[0])
    examples.set_float_custom_property(FARE_RANGE_MAX_PROPERTY, fare_range[1])
    total_read = total_excluded = 0
    for split in splits:
        excluded = beam_counter(result, _NAMESPACE, f"{split}/{ROWS_EXCLUDED_PROPERTY}")
        read = beam_counter(result, _NAMESPACE, _kept_counter(split)) + excluded
        examples.set_int_custom_property(f"{split}_{ROWS_READ_PROPERTY}", read)
        examples.set_int_custom_property(f"{split}_{ROWS_EXCLUDED_PROPERTY}", excluded)
        total_read += read
        total_excluded += excluded
    examples.set_int_custom_property(ROWS_READ_PROPERTY, total_read)
    examples.set_int_custom_property(ROWS_EXCLUDED_PROPERTY, total_excluded)
    logging.info(
        "CsvExampleGen: %d rows read, %d excluded by the fare range", total_read, total_excluded
    )


class CsvExampleGen(FileBasedExampleGen):
    """TFX's CsvExampleGen component (same spec and driver) with this module's executor."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
