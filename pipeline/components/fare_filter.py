# This module must not use `from __future__ import annotations`: TFX reads the annotations.
"""FareFilter: drops trips whose fare is not a plausible label, and counts them.

A fare of zero, a negative fare or one above the configured maximum is a data error (or a
trip nobody paid for), not something a booking-time estimate should learn. The filter runs
on Beam, so it scales with the rest of the pipeline, and records on its output artifact how
many rows it read and excluded per split (visible in MLMD and in the run summary).

Rows whose fare cannot be read as a number are kept: the schema gate reports them.
"""

import os

import apache_beam as beam
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

from taxifare_modules import features as f

_NAMESPACE = "taxifare.fare_filter"
ROWS_READ_PROPERTY = "rows_read"
ROWS_EXCLUDED_PROPERTY = "rows_excluded"


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
    return min_fare < fare <= max_fare


class _Filter(beam.DoFn):
    def __init__(self, split: str, min_fare: float, max_fare: float):
        self._min, self._max = min_fare, max_fare
        self._read = Metrics.counter(_NAMESPACE, f"{split}/{ROWS_READ_PROPERTY}")
        self._excluded = Metrics.counter(_NAMESPACE, f"{split}/{ROWS_EXCLUDED_PROPERTY}")

    def process(self, serialized: bytes):
        self._read.inc()
        if is_plausible(serialized, self._min, self._max):
            yield serialized
        else:
            self._excluded.inc()


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE).with_name(name))[
        "counters"
    ]
    return int(sum(c.committed if c.committed is not None else c.attempted for c in counters))


@component(use_beam=True)
def FareFilter(  # noqa: N802 (a TFX component is named like a class)
    examples: InputArtifact[standard_artifacts.Examples],
    filtered_examples: OutputArtifact[standard_artifacts.Examples],
    min_fare: Parameter[float],
    max_fare: Parameter[float],
    beam_pipeline: BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Copies `examples` without the trips whose fare is implausible."""
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
    pipeline = beam_pipeline
    for split in splits:
        source = os.path.join(examples.uri, f"Split-{split}", "*")
        target = os.path.join(filtered_examples.uri, f"Split-{split}", "data_tfrecord")
        _ = (
            pipeline
            | f"Read[{split}]" >> beam.io.ReadFromTFRecord(source)
            | f"Filter[{split}]" >> beam.ParDo(_Filter(split, min_fare, max_fare))
            | f"Write[{split}]" >> beam.io.WriteToTFRecord(target, file_name_suffix=".gz")
        )
    result = pipeline.run()
    result.wait_until_finish()
    total_read = total_excluded = 0
    for split in splits:
        read = _counter(result, f"{split}/{ROWS_READ_PROPERTY}")
        excluded = _counter(result, f"{split}/{ROWS_EXCLUDED_PROPERTY}")
        filtered_examples.set_int_custom_property(f"{split}_{ROWS_READ_PROPERTY}", read)
        filtered_examples.set_int_custom_property(f"{split}_{ROWS_EXCLUDED_PROPERTY}", excluded)
        total_read += read
        total_excluded += excluded
    filtered_examples.set_int_custom_property(ROWS_READ_PROPERTY, total_read)
    filtered_examples.set_int_custom_property(ROWS_EXCLUDED_PROPERTY, total_excluded)
