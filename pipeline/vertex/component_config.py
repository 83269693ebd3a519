"""What the Vertex flavour of each component receives, built from the typed config.

`pipeline.dag.create_pipeline` calls these when the config has a `vertex` section: the
Trainer's Vertex AI Training job, the Pusher's endpoint deployment, the Beam options of the
Dataflow jobs, and where the curated schema is inside the pipeline image.
"""

from __future__ import annotations

import os
import re
from typing import Any

from tfx.extensions.google_cloud_ai_platform import constants as vertex_keys

from pipeline.config import BeamConfig, RequestLoggingConfig, VertexConfig
from pipeline.vertex import scale_tiers

# Where the pipeline image holds the curated schema: the Dockerfile links this path to the
# schema shipped inside the installed package (and fails the build if it is missing). The
# compiled spec must name a path that exists in the container, not one on this machine.
IMAGE_SCHEMA_FILE = "/opt/taxifare/schema.pbtxt"

# The Pusher's custom_config key of the endpoint's logging settings (read by
# pipeline.vertex.pusher.Executor).
REQUEST_LOGGING_KEY = "taxifare_request_logging"
# ... and of how many earlier models stay deployed beside the new one.
KEEP_PREVIOUS_KEY = "taxifare_keep_previous"

# TFX's key for the Vertex AI Training job of the Trainer's custom_config (its value is in
# the Trainer executor's module, which imports the Vertex client; the string is stable).
_TRAINING_ARGS_KEY = "ai_platform_training_args"

# Vertex's prebuilt TensorFlow Serving images (CPU). 2.15 is the newest Vertex offers: a
# SavedModel exported by TF 2.16 loads in it unless it uses an op added in 2.16 (then set
# vertex.endpoint.serving_image to a newer serving image).
_SERVING_IMAGE = "{}-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"


def serving_image(vertex: VertexConfig) -> str:
    """The endpoint's serving container: the config's, or the prebuilt one near the region."""
    if vertex.endpoint.serving_image:
        return vertex.endpoint.serving_image
    multi_region = vertex.region.split("-")[0]
    return _SERVING_IMAGE.format(multi_region if multi_region in ("europe", "asia") else "us")


def worker_pool_specs(vertex: VertexConfig) -> list[dict[str, Any]]:
    """The Trainer's Vertex worker pools for the configured scale tier."""
    training = vertex.training
    if training.tier == scale_tiers.CUSTOM:
        return scale_tiers.worker_pool_specs(
            training.tier, vertex.image, custom_pools=training.worker_pool_specs
        )
    return scale_tiers.worker_pool_specs(training.tier, vertex.image, shape=training.shape())


# The folder under the pipeline root that the training jobs' base_output_directory is in
# when vertex.tensorboard is set: <pipeline_root>/tensorboard/<component>/.
TENSORBOARD_FOLDER = "tensorboard"


def _scheduling(vertex: VertexConfig, restart_together: bool) -> dict[str, Any]:
    """The CustomJob's `scheduling` (aiplatform_v1.Scheduling, as a dict the client takes)."""
    training = vertex.training
    scheduling: dict[str, Any] = {}
    if training.spot:
        # Spot VMs: Compute Engine may reclaim them; Vertex restarts the reclaimed workers.
        scheduling["strategy"] = "SPOT"
    if training.timeout_hours is not None:
        # A google.protobuf.Duration, in whole seconds.
        scheduling["timeout"] = {"seconds": round(training.timeout_hours * 3600)}
    if restart_together:
        scheduling["restart_job_on_worker_restart"] = True
    return scheduling


def _custom_job_args(
    vertex: VertexConfig, pools: list[dict[str, Any]], component: str, restart_together: bool
) -> dict[str, Any]:
    """TFX's job args of a Vertex CustomJob (the Trainer's or the Tuner's): the job spec
    with the config's operating options, and the labels and CMEK of the job itself.

    TFX's VertexJobClient.create_training_job takes `job_spec`, `labels` and
    `encryption_spec` from these args and hands the resulting dict to
    JobServiceClient.create_custom_job, which reads it as an aiplatform_v1.CustomJob.
    """
    job_spec: dict[str, Any] = {"worker_pool_specs": pools}
    if vertex.service_account:
        job_spec["service_account"] = vertex.service_account
    scheduling = _scheduling(vertex, restart_together)
    if scheduling:
        job_spec["scheduling"] = scheduling
    if vertex.network:
        # The VPC peered with Vertex (private services access), as the pipeline job's.
        job_spec["network"] = vertex.network
    if vertex.tensorboard:
        # Vertex sets AIP_TENSORBOARD_LOG_DIR to a folder under base_output_directory in the
        # job's containers and streams what is written there to the TensorBoard.
        job_spec["tensorboard"] = vertex.tensorboard
        job_spec["base_output_directory"] = {
            "output_uri_prefix": tensorboard_output_directory(vertex, component)
        }
    args: dict[str, Any] = {"project": vertex.project, "job_spec": job_spec}
    if vertex.labels:
        # TFX adds these to the CustomJob's labels (beside its own telemetry label).
        args["labels"] = dict(vertex.labels)
    if vertex.encryption_key:
        args["encryption_spec"] = {"kms_key_name": vertex.encryption_key}
    return args


def tensorboard_output_directory(vertex: VertexConfig, component: str) -> str:
    """The base_output_directory of a training job streaming to vertex.tensorboard."""
    return "/".join((vertex.pipeline_root.rstrip("/"), TENSORBOARD_FOLDER, component.lower()))


def training_job_args(vertex: VertexConfig) -> dict[str, Any]:
    """The Vertex CustomJob the Trainer starts (TFX's TRAINING_ARGS_KEY value)."""
    pools = worker_pool_specs(vertex)
    # A worker that restarts (maintenance, a reclaimed Spot VM) breaks the others'
    # collectives: restart them all so they resume together from the backup in the model
    # run dir.
    restart_together = scale_tiers.replica_total(pools) > 1
    return _custom_job_args(vertex, pools, "trainer", restart_together)


def trainer_custom_config(vertex: VertexConfig) -> dict[str, Any]:
    """The Vertex keys of the Trainer's custom_config (added to run_fn's own keys)."""
    return {
        vertex_keys.ENABLE_VERTEX_KEY: True,
        vertex_keys.VERTEX_REGION_KEY: vertex.region,
        _TRAINING_ARGS_KEY: training_job_args(vertex),
    }


# TFX's key for the Vertex AI Training job of the Tuner's custom_config (its value is in the
# Vertex Tuner executor's module, which imports the Vertex client; the string is stable).
_TUNING_ARGS_KEY = "ai_platform_tuning_args"


def tuning_job_args(vertex: VertexConfig, parallel_trials: int) -> dict[str, Any]:
    """The Vertex CustomJob the Tuner starts: one machine of the tier's chief per trial.

    Pool 0 runs the chief (KerasTuner's oracle and a search loop), pool 1 the other
    `parallel_trials - 1` search loops; each trial trains on one machine: the Trainer's
    chief machine, or `vertex.tuning_machine_type` without GPUs.
    """
    chief = worker_pool_specs(vertex)[0]
    if vertex.tuning_machine_type:
        chief = dict(chief, machine_spec={"machine_type": vertex.tuning_machine_type})
    pools = [dict(chief, replica_count=1)]
    if parallel_trials > 1:
        pools.append(dict(chief, replica_count=parallel_trials - 1))
    # The search loops are independent (each asks the chief's oracle for its next trial): a
    # restarted loop rejoins alone, so the others are not restarted with it.
    return _custom_job_args(vertex, pools, "tuner", restart_together=False)


def tuner_custom_config(vertex: VertexConfig, parallel_trials: int) -> dict[str, Any]:
    """The Vertex keys of the Tuner's custom_config (added to tuner_fn's own keys)."""
    return {
        vertex_keys.ENABLE_VERTEX_KEY: True,
        vertex_keys.VERTEX_REGION_KEY: vertex.region,
        _TUNING_ARGS_KEY: tuning_job_args(vertex, parallel_trials),
    }


def endpoint_name(vertex: VertexConfig, pipeline_name: str) -> str:
    """The display name of the endpoint the Pusher deploys to."""
    return vertex.endpoint.name or pipeline_name


# The Pusher's custom_config keys of the Model Registry entry and the endpoint's creation
# (read by pipeline.vertex.pusher.Executor): the Model's display name, the labels of the
# Model, its versions and the endpoint, and the CMEK key that encrypts them.
MODEL_DISPLAY_NAME_KEY = "taxifare_model_display_name"
LABELS_KEY = "taxifare_labels"
ENCRYPTION_KEY_KEY = "taxifare_encryption_key"
# The label that ties the Model, its versions and the endpoint to the pipeline.
PIPELINE_LABEL = "taxifare-pipeline"


def pusher_custom_config(vertex: VertexConfig, pipeline_name: str) -> dict[str, Any]:
    """The Vertex Pusher's custom_config: a version of the pipeline's Model, deployed to the
    autoscaling endpoint unless it serves there already, then the endpoint's logging."""
    endpoint = vertex.endpoint
    # vertex.labels leaves room for these (config.MAX_USER_LABELS).
    labels = {**vertex.labels, PIPELINE_LABEL: pipeline_name}
    return {
        vertex_keys.ENABLE_VERTEX_KEY: True,
        vertex_keys.VERTEX_REGION_KEY: vertex.region,
        vertex_keys.VERTEX_CONTAINER_IMAGE_URI_KEY: serving_image(vertex),
        # aiplatform.Model.deploy's arguments; min < max replicas makes it autoscale.
        vertex_keys.SERVING_ARGS_KEY: {
            "project_id": vertex.project,
            "endpoint_name": endpoint_name(vertex, pipeline_name),
            "machine_type": endpoint.machine_type,
            "min_replica_count": endpoint.min_replicas,
            "max_replica_count": endpoint.max_replicas,
        },
        # One Model per pipeline in the registry, a version per push.
        MODEL_DISPLAY_NAME_KEY: pipeline_name,
        LABELS_KEY: labels,
        ENCRYPTION_KEY_KEY: vertex.encryption_key,
        # Read by pipeline.vertex.pusher.Executor after a successful deploy.
        KEEP_PREVIOUS_KEY: endpoint.keep_previous,
        # Read by pipeline.vertex.pusher.Executor after the push (also when nothing new
        # was deployed).
        REQUEST_LOGGING_KEY: request_logging_settings(endpoint.request_logging),
    }


def request_logging_settings(logging: RequestLoggingConfig) -> dict[str, Any]:
    """The endpoint's request-response logging, as the Pusher's executor reads it."""
    return {
        "enabled": logging.enabled,
        "sampling_rate": logging.sampling_rate,
        "bigquery_table": logging.bigquery_table,
    }


def dataflow_temp_location(vertex: VertexConfig) -> str:
    """Dataflow's scratch space: the config's, or beside the pipeline root."""
    return vertex.dataflow.temp_location or os.path.join(vertex.pipeline_root, "dataflow-tmp")


def beam_pipeline_args(vertex: VertexConfig, beam: BeamConfig) -> list[str]:
    """The Beam options of every Beam component of a Vertex run.

    With Dataflow, `beam.extra_args` are appended (e.g. "--disk_size_gb=100"); with the
    DirectRunner, Beam runs inside each component's container with the `beam` options.
    """
    dataflow = vertex.dataflow
    if dataflow.runner == "DirectRunner":
        return beam.to_args()
    args = [
        "--runner=DataflowRunner",
        f"--project={vertex.project}",
        f"--region={dataflow.region or vertex.region}",
        f"--temp_location={dataflow_temp_location(vertex)}",
        f"--machine_type={dataflow.machine_type}",
        f"--max_num_workers={dataflow.max_workers}",
        f"--sdk_container_image={dataflow.sdk_container_image or vertex.image}",
        # The image already has Beam and this package: stage nothing, install nothing.
        "--sdk_location=container",
    ]
    if dataflow.disk_size_gb is not None:
        args.append(f"--disk_size_gb={dataflow.disk_size_gb}")
    if dataflow.network:
        args.append(f"--network={dataflow.network}")
    if dataflow.subnetwork:
        args.append(f"--subnetwork={dataflow.subnetwork}")
    if not dataflow.use_public_ips:
        args.append("--no_use_public_ips")
    if vertex.encryption_key:
        # CMEK for the jobs' state (shuffle, streaming state, the workers' disks).
        args.append(f"--dataflow_kms_key={vertex.encryption_key}")
    # Beam takes one --labels=key=value per label.
    args += [f"--labels={key}={value}" for key, value in sorted(vertex.labels.items())]
    if vertex.service_account:
        args.append(f"--service_account_email={vertex.service_account}")
    return args + list(beam.extra_args)


# With PIPELINE_LABEL: which component a Dataflow job belongs to.
COMPONENT_LABEL = "taxifare-component"


def component_label_value(component_id: str) -> str:
    """A component id as a label value: lowercase letters, digits, _ and -, <= 63."""
    return re.sub(r"[^a-z0-9_-]", "-", component_id.lower())[:63]


def component_beam_args(vertex: VertexConfig, pipeline_name: str, component_id: str) -> list[str]:
    """The Beam options of one component's Dataflow job beside beam_pipeline_args: labels
    naming the pipeline and the component (none with the DirectRunner: no Dataflow job).

    Labels, not a --job_name per component: Dataflow refuses a job whose name is the name
    of a job still running in the region, so a fixed name per component would fail the
    second of two overlapping runs (a schedule's and a manual one, or two configs), and a
    name made unique per run cannot be compiled with TFX 1.16: its Vertex compiler
    (KubeflowV2DagRunner's step builder) copies beam_pipeline_args into the container's
    arguments as plain strings (a TFX placeholder such as the pipeline run id is not
    resolved there), and KFP's run-time placeholders ({{$.pipeline_job_uuid}}) are
    documented for component inputs, not inside a container argument. Dataflow's own
    names (beamapp-<user>-<time>-<random>) stay unique; TFX adds a tfx_executor label.
    """
    if vertex.dataflow.runner != "DataflowRunner":
        return []
    return [
        f"--labels={PIPELINE_LABEL}={pipeline_name}",
        f"--labels={COMPONENT_LABEL}={component_label_value(component_id)}",
    ]
