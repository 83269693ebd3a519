"""Builds the Vertex AI PipelineJob from a compiled spec, and submits it or shows the request."""

from __future__ import annotations

import json
import os
import re
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
        # Caching on: each task as compiled (all cached but an ExampleGen that must read new
        # data every run, see compiler.uncache_relative_month); off: off for every task.
        enable_caching=None if cfg.orchestrator.enable_cache else False,
        # The pipeline has no runtime parameters: every value is compiled from the config.
        parameter_values={},
        # The compiled spec's own labels (TFX's) plus the config's, for the bill.
        labels={**_spec_labels(template_path), **vertex.labels} or None,
        # CMEK: the pipeline job's own data (its context, executions, artifacts' metadata).
        encryption_spec_key_name=vertex.encryption_key,
        credentials=credentials,
    )


def _spec_labels(template_path: str | os.PathLike[str]) -> dict[str, str]:
    with open(template_path) as fh:  # a local file: compile_pipeline wrote it here
        return dict(json.load(fh).get("labels", {}))


def pipeline_job_resource(job: Any, service_account: str | None, network: str | None) -> Any:
    """The aiplatform_v1.PipelineJob `job.submit(service_account=..., network=...)` sends.

    A copy: the service account and the network are set on it as PipelineJob.submit sets
    them on its own resource, and `job` is left as it was.
    """
    original = compat.pipeline_job_resource(job)
    message_type = type(original)
    resource = message_type.deserialize(message_type.serialize(original))
    if service_account:
        resource.service_account = service_account
    if network:
        resource.network = network
    return resource


def create_request(
    job: Any, service_account: str | None, network: str | None = None
) -> dict[str, Any]:
    """The CreatePipelineJobRequest `job.submit(service_account=..., network=...)` sends,
    as JSON."""
    from google.cloud.aiplatform_v1.types import pipeline_service

    request = pipeline_service.CreatePipelineJobRequest(
        parent=compat.pipeline_job_parent(job),
        pipeline_job=pipeline_job_resource(job, service_account, network),
        pipeline_job_id=job.job_id,
    )
    return json.loads(pipeline_service.CreatePipelineJobRequest.to_json(request))


def request_url(job: Any) -> str:
    """The REST endpoint the create request goes to (regional, like the client's)."""
    parent = compat.pipeline_job_parent(job)
    return (
        f"https://{job.location}-aiplatform.googleapis.com/v1/{parent}/pipelineJobs"
        f"?pipelineJobId={job.job_id}"
    )


# An image named by its content: a tag can be pushed again, a digest cannot.
_DIGEST = re.compile(r"^\S+@sha256:[0-9a-f]{64}$")
# The custom_config keys of the Trainer's and the Tuner's Vertex jobs (TFX's).
_JOB_ARGS_KEYS = ("ai_platform_training_args", "ai_platform_tuning_args")

DIGEST_HELP = (
    "submit the image by digest (REPOSITORY/pipeline@sha256:...), so that the run and Vertex's"
    " cache are tied to one image: after `docker push`, `gcloud artifacts docker images"
    " describe IMAGE:TAG --format='value(image_summary.fully_qualified_digest)'` prints it;"
    " set vertex.image to it. --allow-tag submits the tag anyway"
)


def is_digest(image: str) -> bool:
    """Whether `image` names its content (`...@sha256:<64 hex digits>`), not a tag."""
    return bool(_DIGEST.match(image))


def pipeline_images(job: dict[str, Any]) -> set[str]:
    """Every image of this pipeline the compiled job runs: each step's container, the
    Dataflow workers' (--sdk_container_image) and the Trainer's and Tuner's worker pools'.

    The endpoint's serving image (Vertex's prebuilt TensorFlow Serving) is not the
    pipeline's own and is left out.
    """
    spec = job.get("pipelineSpec", job)
    images: set[str] = set()
    for executor in spec.get("deploymentSpec", {}).get("executors", {}).values():
        container = executor.get("container")
        if not container:
            continue
        images.add(container["image"])
        for arg in container.get("args", []):
            if arg.startswith("--sdk_container_image="):
                images.add(arg.split("=", 1)[1])
    for task in spec.get("root", {}).get("dag", {}).get("tasks", {}).values():
        value = task.get("inputs", {}).get("parameters", {}).get("custom_config")
        text = (value or {}).get("runtimeValue", {}).get("constantValue", {}).get("stringValue")
        config = json.loads(text) if text else None
        if not isinstance(config, dict):
            continue
        for key in _JOB_ARGS_KEYS:
            pools = (config.get(key) or {}).get("job_spec", {}).get("worker_pool_specs", [])
            for pool in pools:
                image = pool.get("container_spec", {}).get("image_uri")
                if image:
                    images.add(image)
    return images


def mutable_images(job: dict[str, Any]) -> list[str]:
    """The pipeline images of `job` named by a tag instead of a digest."""
    return sorted(image for image in pipeline_images(job) if not is_digest(image))
