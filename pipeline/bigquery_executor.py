"""BigQueryExampleGen's executor with the span resolved and the read given its temp dataset.

TFX's own executor (tfx.extensions.google_cloud_big_query.example_gen.executor) with two
changes:
- On Vertex AI Pipelines no driver runs before a query-based ExampleGen (only file-based
  ones get one), so the query would reach BigQuery with `@span_begin_timestamp` unfilled
  and the examples would carry no span. When no driver ran, this executor does what TFX's
  QueryBasedDriver does, with TFX's own input processor: span from the static range config,
  placeholders filled, span recorded on the output artifact.
- Beam's ReadFromBigQuery gets the configured temp dataset (as the DatasetReference its
  export path needs; TFX 1.16's custom_config route passes the CustomConfig proto's JSON as
  keyword arguments, which Beam rejects) and the config's labels on the BigQuery jobs.
"""

from __future__ import annotations

import datetime
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.extensions.google_cloud_big_query import utils as bigquery_utils
from tfx.extensions.google_cloud_big_query.example_gen import executor as tfx_executor
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils, telemetry_utils

from pipeline.bigquery import READ_SETTINGS_KEY, month_span, resolve_month
from pipeline.config import PREVIOUS_MONTH
from pipeline.example_gen_config import read_struct_custom_config, struct_custom_config


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def custom_config(settings: dict[str, Any]) -> example_gen_pb2.CustomConfig:
    """BigQueryExampleGen's custom_config carrying `settings` (see read_settings)."""
    return struct_custom_config({READ_SETTINGS_KEY: settings})


def read_settings(exec_properties: dict[str, Any]) -> dict[str, Any]:
    """The settings custom_config carries; {} when there is none."""
    return read_struct_custom_config(exec_properties, "BigQueryExampleGen").get(
        READ_SETTINGS_KEY, {}
    )


def read_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of Beam's ReadFromBigQuery beyond the query."""
    labels = {**telemetry_utils.make_labels_dict(), **settings.get("labels", {})}
    kwargs: dict[str, Any] = {"use_standard_sql": True, "bigquery_job_labels": labels}
    dataset = settings.get("temp_dataset")
    if dataset:
        project, dataset_id = dataset.split(".", 1)
        kwargs["temp_dataset"] = bigquery_api.DatasetReference(
            projectId=project, datasetId=dataset_id
        )
    return kwargs


def resolve_span(exec_properties: dict[str, Any], examples: list[Any]) -> dict[str, Any]:
    """`exec_properties` as TFX's QueryBasedDriver leaves them, when no driver ran.

    A driver sets the span property and fills the placeholders; without one (Vertex) the
    span comes from the static range config, as the driver would take it, or for
    data.bigquery.month `previous` (no range compiled) from the month before the run's.
    """
    if exec_properties.get(example_gen_utils.SPAN_PROPERTY_NAME) is not None:
        return exec_properties
    resolved = dict(exec_properties)
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        resolved[standard_component_specs.INPUT_CONFIG_KEY], input_config
    )
    range_config = None
    if resolved.get(standard_component_specs.RANGE_CONFIG_KEY):
        range_config = range_config_pb2.RangeConfig()
        proto_utils.json_to_proto(resolved[standard_component_specs.RANGE_CONFIG_KEY], range_config)
    else:
        month = read_settings(resolved).get("month")
        if month == PREVIOUS_MONTH:
            # data.bigquery.month `previous`: the month before this run's, a span of its own.
            span = month_span(resolve_month(month, _utc_now()))
            range_config = range_config_pb2.RangeConfig(
                static_range=range_config_pb2.StaticRange(
                    start_span_number=span, end_span_number=span
                )
            )
    processor = input_processor.QueryBasedInputProcessor(input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    resolved[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    resolved[example_gen_utils.SPAN_PROPERTY_NAME] = span
    resolved[example_gen_utils.VERSION_PROPERTY_NAME] = version
    resolved[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = None
    for artifact in examples:
        example_gen_driver.update_output_artifact(resolved, artifact.mlmd_artifact)
    return resolved


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _BigQueryToExample(  # noqa: N802 (Beam's transform naming, as TFX's)
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    """TFX's BigQuery read (tfx_executor._BigQueryToExample) with read_kwargs."""
    project = bigquery_utils.parse_gcp_project(exec_properties["_beam_pipeline_args"])
    converter = tfx_executor._BigQueryConverter(split_pattern, project)  # noqa: SLF001
    return (
        pipeline
        | "QueryTable"
        >> beam.io.ReadFromBigQuery(
            query=split_pattern, **read_kwargs(read_settings(exec_properties))
        )
        | "ToTFExample" >> beam.Map(converter.RowToExample)
    )


class Executor(tfx_executor.Executor):
    """TFX's BigQueryExampleGen executor, span-aware without a driver, with read_kwargs."""

    def Do(  # noqa: N802 (TFX's name)
        self,
        input_dict: dict[str, list[Any]],
        output_dict: dict[str, list[Any]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        super().Do(input_dict, output_dict, resolve_span(exec_properties, examples))

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802
        return _BigQueryToExample

