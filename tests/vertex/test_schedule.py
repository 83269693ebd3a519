"""`taxifare schedule`: a Vertex pipeline schedule whose runs read the newest span.

The command runs as a subprocess; its `--dry-run` request is parsed by the real
`aiplatform_v1.CreateScheduleRequest` (unknown fields refused). The scheduled spec's
ExampleGen input is resolved by TFX's FileBasedInputProcessor, the code of the driver Vertex
runs before a file-based ExampleGen, over span folders that grow between two runs. Nothing is
sent to Google Cloud.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import dag
from pipeline.config import load_config
from pipeline.vertex import schedule
from tests.vertex.test_spans_on_vertex import spans_read_as_folders_arrive

REPO = Path(__file__).resolve().parents[2]
VERTEX = "configs/vertex.yaml"
KEY = "projects/kms-project/locations/us-central1/keyRings/taxifare/cryptoKeys/pipeline"
NETWORK = "projects/123456789012/global/networks/taxifare-vpc"
CRON = "TZ=America/Chicago 0 6 1 * *"
SCHEDULE = [
    f"vertex.schedule.cron={CRON}",
    "vertex.schedule.max_runs=12",
    "vertex.schedule.start_time=2027-01-01T06:00:00Z",
    "vertex.schedule.end_time=2028-01-01T06:00:00Z",
    f"vertex.encryption_key={KEY}",
    f"vertex.network={NETWORK}",
]


def _taxifare(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _sets(overrides: list[str]) -> list[str]:
    return [word for o in overrides for word in ("--set", o)]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    spec = tmp_path_factory.mktemp("schedule") / "spec.json"
    done = _taxifare(
        "schedule", "--config", VERTEX, *_sets(SCHEDULE), "--output", str(spec), "--dry-run"
    )
    return done, spec


def _request(dry_run):
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    done, _ = dry_run
    assert done.returncode == 0, done.stderr[-3000:]
    message = aiplatform_v1.CreateScheduleRequest.pb()()
    json_format.ParseDict(json.loads(done.stdout), message)  # an unknown field fails here
    return message


def test_dry_run_prints_a_create_schedule_request_vertex_parses(dry_run):
    request = _request(dry_run)
    parent = "projects/my-gcp-project/locations/us-central1"
    assert request.parent == parent
    made = request.schedule
    assert made.cron == CRON
    assert made.max_concurrent_run_count == 1
    assert made.max_run_count == 12
    assert made.start_time.ToJsonString() == "2027-01-01T06:00:00Z"
    assert made.end_time.ToJsonString() == "2028-01-01T06:00:00Z"
    # Each run is the PipelineJob `taxifare submit` would create.
    run = made.create_pipeline_job_request
    assert run.parent == parent
    assert run.pipeline_job.service_account == (
        "taxifare-pipelines@my-gcp-project.iam.gserviceaccount.com"
    )
    assert run.pipeline_job.encryption_spec.kms_key_name == KEY
    assert run.pipeline_job.network == NETWORK
    assert dict(run.pipeline_job.labels)["app"] == "taxifare"
    assert run.pipeline_job.runtime_config.gcs_output_directory == (
        "gs://my-gcp-project-taxifare/pipeline"
    )
    assert "nothing sent" in dry_run[0].stderr
    assert f"POST https://us-central1-aiplatform.googleapis.com/v1/{parent}/schedules" in (
        dry_run[0].stderr
    )


def test_the_scheduled_spec_is_the_compiled_one(dry_run):
    from google.protobuf import json_format

    request = _request(dry_run)
    scheduled = json_format.MessageToDict(
        request.schedule.create_pipeline_job_request.pipeline_job.pipeline_spec
    )
    compiled = json.loads(dry_run[1].read_text())["pipelineSpec"]
    # With orchestrator.enable_cache on, the tasks keep their compiled caching (as for
    # `taxifare submit`): the scheduled spec is the compiled one as written, where TFX
    # leaves the resolvers uncached (a cached resolver would hand on a stale model).
    assert scheduled == compiled
    tasks = scheduled["root"]["dag"]["tasks"]
    uncached = sorted(name for name, t in tasks.items() if "cachingOptions" not in t)
    assert uncached and all("resolver" in name.lower() for name in uncached), uncached
    cached = [t["cachingOptions"] for name, t in tasks.items() if name not in uncached]
    assert cached and all(c == {"enableCache": True} for c in cached)


def test_each_scheduled_run_reads_the_newest_span(dry_run, tmp_path):
    from google.protobuf import json_format
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    request = _request(dry_run)
    spec = json_format.MessageToDict(
        request.schedule.create_pipeline_job_request.pipeline_job.pipeline_spec
    )
    parameters = spec["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]["inputs"]["parameters"]
    # No fixed range: the driver is free to take the newest span it finds.
    assert "range_config" not in parameters
    config = example_gen_pb2.Input()
    proto_utils.json_to_proto(
        parameters["input_config"]["runtimeValue"]["constantValue"]["stringValue"], config
    )

    # The same spec, started twice by the schedule: a month's folder arrives in between.
    assert spans_read_as_folders_arrive(tmp_path / "data", config.splits) == [1, 2]


def test_a_fixed_bigquery_month_is_refused(tmp_path):
    spec = tmp_path / "bq.json"
    done = _taxifare(
        "schedule",
        "--config",
        "configs/vertex-bigquery.yaml",
        "--set",
        f"vertex.schedule.cron={CRON}",
        "--output",
        str(spec),
        "--dry-run",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stdout == ""  # no request
    assert "data.bigquery.month (2015-01, span 16436)" in done.stderr
    assert "every scheduled run would read that same month" in done.stderr
    assert "--set data.bigquery.month=previous" in done.stderr


def test_a_bigquery_schedule_reads_the_month_before_each_run(tmp_path):
    # month: previous compiles no range; each run's ExampleGen resolves its month and is
    # never served from the step cache (tests/vertex/test_bigquery_sql.py runs that).
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    done = _taxifare(
        "schedule", "--config", "configs/vertex-bigquery.yaml",
        *_sets([f"vertex.schedule.cron={CRON}", "data.bigquery.month=previous"]),
        "--output", str(tmp_path / "bq.json"), "--dry-run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    message = aiplatform_v1.CreateScheduleRequest.pb()()
    json_format.ParseDict(json.loads(done.stdout), message)
    spec = json_format.MessageToDict(
        message.schedule.create_pipeline_job_request.pipeline_job.pipeline_spec
    )
    task = spec["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    assert "range_config" not in task["inputs"]["parameters"]
    assert task["cachingOptions"] == {"enableCache": False}


def test_csv_input_without_span_folders_is_refused(dry_run):
    job = json.loads(dry_run[1].read_text())
    task = job["pipelineSpec"]["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    value = task["inputs"]["parameters"]["input_config"]["runtimeValue"]["constantValue"]
    value["stringValue"] = value["stringValue"].replace("span-{SPAN}/*.csv", "*.csv")
    cfg = load_config(REPO / VERTEX, [*SCHEDULE, "data.pattern=null"])
    problem = schedule.schedule_problem(cfg, job)
    assert problem is not None and "data.pattern (None) has no {SPAN}" in problem
    # The spec as compiled passes the same check.
    assert schedule.schedule_problem(cfg, json.loads(dry_run[1].read_text())) is None


def test_a_fixed_span_range_is_refused(dry_run):
    job = json.loads(dry_run[1].read_text())
    task = job["pipelineSpec"]["root"]["dag"]["tasks"][dag.EXAMPLE_GEN_ID]
    task["inputs"]["parameters"]["range_config"] = {
        "runtimeValue": {
            "constantValue": {
                "stringValue": json.dumps(
                    {"static_range": {"start_span_number": 3, "end_span_number": 3}}
                )
            }
        }
    }
    problem = schedule.schedule_problem(load_config(REPO / VERTEX, SCHEDULE), job)
    assert problem is not None and "fixed span 3" in problem


def test_a_config_without_a_cron_line_is_refused_before_compiling(tmp_path):
    spec = tmp_path / "never.json"
    done = _taxifare("schedule", "--config", VERTEX, "--output", str(spec), "--dry-run")
    assert done.returncode == 2
    assert "vertex.schedule.cron is not set" in done.stderr
    assert not spec.exists()


def test_a_real_schedule_refuses_an_image_tag(dry_run):
    done = _taxifare(
        "schedule", "--config", VERTEX, *_sets(SCHEDULE), "--template", str(dry_run[1])
    )
    assert done.returncode == 2
    assert "mutable tag" in done.stderr and "--allow-tag" in done.stderr


def test_a_real_schedule_without_credentials_sends_nothing_and_says_how(dry_run, tmp_path):
    env = {
        key: value for key, value in os.environ.items() if key != "GOOGLE_APPLICATION_CREDENTIALS"
    }
    env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="True")
    done = _taxifare(
        "schedule",
        "--config",
        VERTEX,
        *_sets(SCHEDULE),
        "--template",
        str(dry_run[1]),
        "--allow-tag",
        env=env,
    )
    assert done.returncode == 2
    assert "no Google Cloud credentials found" in done.stderr
    assert "taxifare schedule --dry-run" in done.stderr
