"""Builds the Vertex AI PipelineJob from a compiled spec, and submits it or shows the request."""

from __future__ import annotations

import json
import os
from typing import Any

from pipeline.config import Config
from pipeline.vertex.compiler import require_vertex
from taxifare_modules import compat

# What a user does so that google.auth.default() finds credentials.
CREDENTIALS_HELP = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, or set"
    " GOOGLE_APPLICATION_CREDENTIALS to a service account key file (or run where a service"
    " account is attached); `taxifare submit --dry-run` shows the request without them"
)


class MissingCredentialsError(RuntimeError):
    """google.auth found no Application Default Credentials; the message says how to add them."""


def find_credentials() -> Any:
    """The Application Default Credentials, or MissingCredentialsError saying what is missing."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except DefaultCredentialsError as e:
        raise MissingCredentialsError(CREDENTIALS_HELP) from e
    return credentials


def build_pipeline_job(cfg: Config, template_path: str | os.PathLike[str], credentials: Any):
    """The aiplatform.PipelineJob for a compiled spec, with the config's project and region.

    Args:
      cfg: a config with a `vertex` section.
      template_path: the JSON written by compile_pipeline.
      credentials: google.auth credentials; AnonymousCredentials builds the job offline
        (aiplatform asks for credentials when it creates its API client, even before any
        request is sent).

    Returns:
      The job, not yet submitted.
    """
    from google.cloud import aiplatform

    vertex = require_vertex(cfg)
    return aiplatform.PipelineJob(
        display_name=cfg.name,
        template_path=str(template_path),
        pipeline_root=vertex.pipeline_root,
        project=vertex.project,
        location=vertex.region,
        enable_caching=cfg.orchestrator.enable_cache,
        # The pipeline has no runtime parameters: every value is compiled from the config.
        parameter_values={},
        # The compiled spec's own labels (TFX's) plus the config's, for the bill.
        labels={**_spec_labels(template_path), **vertex.labels} or None,
        credentials=credentials,
    )


def _spec_labels(template_path: str | os.PathLike[str]) -> dict[str, str]:
    with open(template_path) as fh:  # a local file: compile_pipeline wrote it here
        return dict(json.load(fh).get("labels", {}))


def create_request(job: Any, service_account: str | None) -> dict[str, Any]:
    """The CreatePipelineJobRequest `job.submit(service_account=...)` sends, as JSON."""
    from google.cloud.aiplatform_v1.types import pipeline_service

    # A copy: the service account is set on the request only, not on the job.
    original = compat.pipeline_job_resource(job)
    message_type = type(original)
    resource = message_type.deserialize(message_type.serialize(original))
    if service_account:
        resource.service_account = service_account  # as PipelineJob.submit sets it
    request = pipeline_service.CreatePipelineJobRequest(
        parent=compat.pipeline_job_parent(job), pipeline_job=resource, pipeline_job_id=job.job_id
    )
    return json.loads(pipeline_service.CreatePipelineJobRequest.to_json(request))


def request_url(job: Any) -> str:
    """The REST endpoint the create request goes to (regional, like the client's)."""
    parent = compat.pipeline_job_parent(job)
    return (
        f"https://{job.location}-aiplatform.googleapis.com/v1/{parent}/pipelineJobs"
        f"?pipelineJobId={job.job_id}"
    )
