"""`taxifare schedule`: a Vertex AI pipeline schedule (cron) for the compiled spec.

A schedule starts the same compiled spec again and again, so the spec itself must read new
data each time: ExampleGen's span has to advance by itself. `schedule_problem` checks that in
the compiled spec before anything is built:

- CSV input with `{SPAN}` in its pattern and no fixed range: Vertex runs TFX's file-based
  ExampleGen driver before the executor, and the driver takes the newest span folder it
  finds under the input (FileBasedInputProcessor), so each run reads the latest month.
- BigQuery with `data.bigquery.month: previous`: no range is compiled, each run's ExampleGen
  reads the month before it (never from the step cache).
- A fixed span (a `data.bigquery.month` YYYY-MM, compiled to a static range of one span) or
  a pattern without `{SPAN}` would read the same data on every run: refused.

The request is built with the real `aiplatform_v1` types and is the one sent; `--dry-run`
prints it and sends nothing.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.config import Config
from pipeline.names import EXAMPLE_GEN_ID
from pipeline.vertex import submit
from pipeline.vertex.compiler import require_vertex


def _constant(task: dict[str, Any], name: str) -> str | None:
    """A string exec property of a compiled task (None: not set)."""
    value = task.get("inputs", {}).get("parameters", {}).get(name, {})
    return value.get("runtimeValue", {}).get("constantValue", {}).get("stringValue")


def schedule_problem(cfg: Config, job: dict[str, Any]) -> str | None:
    """Why the compiled `job` cannot be scheduled, or None when each run reads a new span.

    Args:
      cfg: the config the spec was compiled from (its keys are named in the message).
      job: the compiled pipeline job (JSON, as compile_pipeline writes it).
    """
    vertex = require_vertex(cfg)
    if vertex.schedule.cron is None:
        return (
            "vertex.schedule.cron is not set: give the schedule's times as five cron fields,"
            " e.g. --set 'vertex.schedule.cron=0 6 1 * *' (06:00 UTC on the 1st of each month)"
        )
    spec = job.get("pipelineSpec", job)
    task = spec.get("root", {}).get("dag", {}).get("tasks", {}).get(EXAMPLE_GEN_ID)
    if task is None:
        return (
            f"the compiled spec has no {EXAMPLE_GEN_ID} task: nothing says which data a run reads"
        )
    range_text = _constant(task, "range_config")
    static = (json.loads(range_text) if range_text else {}).get("static_range")
    if static is not None:
        span = static.get("start_span_number")
        if cfg.data.input == "bigquery":
            return (
                f"data.input is bigquery and data.bigquery.month ({cfg.data.bigquery.month},"
                f" span {span}) is compiled into the spec: every scheduled run would read that"
                " same month again, and DriftCheck would compare it with itself. Set"
                " data.bigquery.month to previous (each run reads the month before it), e.g."
                " --set data.bigquery.month=previous"
            )
        return (
            f"{EXAMPLE_GEN_ID} reads the fixed span {span} (a static range): every scheduled"
            " run would read the same span"
        )
    if cfg.data.input == "bigquery":
        # No range: the month is resolved as each run's ExampleGen runs (month `previous`),
        # which must then not be served from Vertex's step cache.
        if task.get("cachingOptions", {}).get("enableCache", False):
            return (
                f"{EXAMPLE_GEN_ID} reads the month before each run but the spec lets Vertex"
                " serve it from the step cache (the same query every run): compile it with"
                " taxifare compile"
            )
        return None
    input_text = _constant(task, "input_config") or "{}"
    patterns = [split.get("pattern", "") for split in json.loads(input_text).get("splits", [])]
    if not any("{SPAN}" in pattern for pattern in patterns):
        return (
            f"data.pattern ({cfg.data.pattern!r}) has no {{SPAN}}: every scheduled run would"
            " read the same files as span 0, and DriftCheck would compare nothing. Put each"
            " month's CSVs in its own span folder (span-1/, span-2/, ...) and set"
            " data.pattern to e.g. 'span-{SPAN}/*.csv': each run then reads the newest span"
        )
    return None


def build_request(cfg: Config, job: Any) -> Any:
    """The aiplatform_v1.CreateScheduleRequest for the config's schedule of `job`.

    Args:
      cfg: a config with vertex.schedule.cron set.
      job: the aiplatform.PipelineJob built by submit.build_pipeline_job (not submitted).

    Returns:
      The request: each run the schedule starts is `job`'s PipelineJob as `taxifare submit`
      would create it (its spec, labels, CMEK key, service account and network).
    """
    from google.cloud import aiplatform_v1

    vertex = require_vertex(cfg)
    schedule = vertex.schedule
    parent = f"projects/{vertex.project}/locations/{vertex.region}"
    resource = aiplatform_v1.Schedule(
        display_name=cfg.name,
        cron=schedule.cron,
        max_concurrent_run_count=schedule.max_concurrent_runs,
        create_pipeline_job_request=aiplatform_v1.CreatePipelineJobRequest(
            parent=parent,
            pipeline_job=submit.pipeline_job_resource(job, vertex.service_account, vertex.network),
        ),
    )
    if schedule.max_runs is not None:
        resource.max_run_count = schedule.max_runs
    if schedule.start_time is not None:
        resource.start_time = schedule.start_time
    if schedule.end_time is not None:
        resource.end_time = schedule.end_time
    return aiplatform_v1.CreateScheduleRequest(parent=parent, schedule=resource)


def request_json(request: Any) -> dict[str, Any]:
    """The request as the JSON the REST API takes."""
    from google.cloud import aiplatform_v1

    return json.loads(aiplatform_v1.CreateScheduleRequest.to_json(request))


def request_url(cfg: Config) -> str:
    """The regional REST endpoint the create request goes to."""
    vertex = require_vertex(cfg)
    return (
        f"https://{vertex.region}-aiplatform.googleapis.com/v1/projects/{vertex.project}"
        f"/locations/{vertex.region}/schedules"
    )


def create(cfg: Config, request: Any, credentials: Any) -> Any:
    """Sends the request to Vertex AI's regional endpoint; the created aiplatform_v1.Schedule."""
    from google.cloud import aiplatform_v1

    vertex = require_vertex(cfg)
    client = aiplatform_v1.ScheduleServiceClient(
        credentials=credentials,
        client_options={"api_endpoint": f"{vertex.region}-aiplatform.googleapis.com"},
    )
    return client.create_schedule(request=request)


def console_url(cfg: Config, schedule_name: str) -> str:
    """The Cloud Console page of a created schedule (projects/.../schedules/<id>)."""
    vertex = require_vertex(cfg)
    schedule_id = schedule_name.rsplit("/", 1)[-1]
    return (
        f"https://console.cloud.google.com/vertex-ai/locations/{vertex.region}/pipelines"
        f"/schedules/{schedule_id}?project={vertex.project}"
    )
