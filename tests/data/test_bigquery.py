"""`data.input: bigquery`: the compiled Vertex spec, the local Beam options, the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli, dag
from pipeline.config import ConfigError, load_config
from pipeline.data_source import DataSourceError, resolve_input

REPO = Path(__file__).resolve().parents[2]
VERTEX_BQ = REPO / "configs" / "vertex-bigquery.yaml"
LOCAL_BQ = REPO / "configs" / "bigquery.yaml"


def _task(job: dict, task: str) -> tuple[dict, list[str]]:
    spec = job["pipelineSpec"]
    node = spec["root"]["dag"]["tasks"][task]
    params = node["inputs"].get("parameters", {})
    values = {k: next(iter(v["runtimeValue"]["constantValue"].values())) for k, v in params.items()}
    executor = spec["components"][node["componentRef"]["name"]]["executorLabel"]
    return values, spec["deploymentSpec"]["executors"][executor]["container"]["args"]


def test_vertex_spec_holds_the_query_and_the_beam_arguments(tmp_path):
    from pipeline.vertex.compiler import compile_pipeline

    cfg = load_config(
        VERTEX_BQ,
        ["data.bigquery.month=2015-03", "data.bigquery.sample_fraction=0.25"],
    )  # fmt: skip
    job = compile_pipeline(cfg, tmp_path / "bq.json")
    params, args = _task(json.loads((tmp_path / "bq.json").read_text()), dag.EXAMPLE_GEN_ID)
    split = json.loads(params["input_config"])["splits"][0]
    query = split["pattern"]
    assert "FROM `bigquery-public-data.chicago_taxi_trips.taxi_trips`" in query
    # March 2015 is the span of its first day (16495 days after 1970-01-01), which TFX
    # writes into the query's span placeholder.
    assert "trip_start_timestamp >= TIMESTAMP_SECONDS(@span_begin_timestamp)" in query
    assert json.loads(params["range_config"])["static_range"]["start_span_number"] == 16495
    assert "< 250000" in query  # a quarter of the trips, by a hash of the trip id
    for column in ("fare", "trip_start_hour", "pickup_latitude", "payment_type", "company"):
        assert column in query
    # TFX's BigQuery executor, span-aware without a driver (pipeline/bigquery_executor.py).
    assert "pipeline.bigquery_executor.Executor" in args, args
    assert "--project=my-gcp-project" in args
    assert "--temp_location=gs://my-gcp-project-taxifare/dataflow-tmp" in args
    assert "--region=us-central1" in args
    # The rest of the pipeline is the same as with CSV input.
    assert {dag.TRANSFORM_ID, dag.TRAINER_ID, dag.PUSHER_ID} <= set(
        job["pipelineSpec"]["root"]["dag"]["tasks"]
    )


def test_direct_runner_on_vertex_gets_the_bigquery_options_too(tmp_path):
    from pipeline.vertex.compiler import compile_pipeline

    cfg = load_config(
        VERTEX_BQ,
        ["vertex.dataflow.runner=DirectRunner", "data.bigquery.project=other-project",
         "data.bigquery.temp_location=gs://other-bucket/tmp", "data.bigquery.region=europe-west4"],
    )  # fmt: skip
    compile_pipeline(cfg, tmp_path / "bq.json")
    _, args = _task(json.loads((tmp_path / "bq.json").read_text()), dag.EXAMPLE_GEN_ID)
    assert "--runner=DirectRunner" in args
    assert "--project=other-project" in args
    assert "--temp_location=gs://other-bucket/tmp" in args
    assert "--region=europe-west4" in args


def test_local_pipeline_gets_the_query_and_beam_arguments():
    cfg = load_config(LOCAL_BQ)
    pipeline = dag.create_pipeline(cfg, "bigquery")
    example_gen = next(c for c in pipeline.components if c.id == dag.EXAMPLE_GEN_ID)
    assert type(example_gen).__name__ == "BigQueryExampleGen"
    assert "@span_begin_timestamp" in example_gen.exec_properties["input_config"]
    assert "16436" in str(example_gen.exec_properties["range_config"])
    args = pipeline.beam_pipeline_args
    assert "--project=my-gcp-project" in args
    assert "--temp_location=gs://my-gcp-project-taxifare/bigquery-tmp" in args
    assert "--direct_running_mode=multi_processing" in args


def test_without_credentials_the_run_says_what_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    # No gcloud user config here: point it at an empty folder either way.
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(DataSourceError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        resolve_input(load_config(LOCAL_BQ))
    code = cli.main(["run", "--config", str(LOCAL_BQ), "--set", f"root={tmp_path / 'root'}"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert (
        "GOOGLE_APPLICATION_CREDENTIALS" in err and "gcloud auth application-default login" in err
    )
    assert not (tmp_path / "root" / "metadata.sqlite").exists()


def test_missing_project_or_temp_location_is_named(tmp_path):
    cfg = load_config(LOCAL_BQ, ["data.bigquery.project=null", "data.bigquery.temp_location=null"])
    with pytest.raises(
        DataSourceError, match="data.bigquery.project and data.bigquery.temp_location"
    ):
        resolve_input(cfg)
    with pytest.raises(ConfigError, match="data.bigquery.temp_location"):
        load_config(LOCAL_BQ, ["data.bigquery.temp_location=/tmp/local"])
    with pytest.raises(ConfigError, match="data.bigquery.month"):
        load_config(LOCAL_BQ, ["data.bigquery.month=2014-13"])
