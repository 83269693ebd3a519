"""The options a team operating the pipeline on Google Cloud sets reach the jobs a run creates.

configs/vertex.yaml is compiled with a CMEK key, a peered VPC network, a Vertex TensorBoard,
Spot VMs, a timeout and labels; the Trainer's and the Tuner's job args are turned into the
CustomJob dict by TFX's own VertexJobClient (what its executors send) and read by the real
`aiplatform_v1.CustomJob`; the Dataflow options are read by Beam's own PipelineOptions; the
PipelineJob request is parsed by `aiplatform_v1.CreatePipelineJobRequest` with unknown fields
refused. Nothing is sent.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from pipeline import dag
from pipeline.config import ConfigError, load_config
from pipeline.vertex import component_config
from pipeline.vertex.compiler import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"

KEY = "projects/kms-project/locations/us-central1/keyRings/taxifare/cryptoKeys/pipeline"
NETWORK = "projects/123456789012/global/networks/taxifare-vpc"
TENSORBOARD = "projects/my-gcp-project/locations/us-central1/tensorboards/4242"
PIPELINE_ROOT = "gs://my-gcp-project-taxifare/pipeline"
OPTIONS = [
    f"vertex.encryption_key={KEY}",
    f"vertex.network={NETWORK}",
    f"vertex.tensorboard={TENSORBOARD}",
    "vertex.training.spot=true",
    "vertex.training.timeout_hours=2.5",
    "vertex.labels={app: taxifare, team: pricing}",
]
# The Beam components that run as Dataflow jobs, as the spec names their tasks.
BEAM_TASKS = (
    dag.EXAMPLE_GEN_ID,
    dag.FARE_FILTER_ID,
    dag.STATISTICS_GEN_ID,
    dag.TRANSFORM_ID,
    dag.EVALUATOR_ID,
)


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("operating") / "spec.json"
    return compile_pipeline(load_config(VERTEX, OPTIONS), path)


def _tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _custom_config(job: dict, task: str) -> dict:
    value = _tasks(job)[task]["inputs"]["parameters"]["custom_config"]
    return json.loads(value["runtimeValue"]["constantValue"]["stringValue"])


def _executor_args(job: dict, task: str) -> list[str]:
    executor = job["pipelineSpec"]["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = job["pipelineSpec"]["components"][executor]["executorLabel"]
    return job["pipelineSpec"]["deploymentSpec"]["executors"][label]["container"]["args"]


def _sent_custom_job(job_args: dict):
    """The CustomJob TFX's Vertex client sends for these job args, read by aiplatform_v1.

    VertexJobClient.create_training_job builds the dict that JobServiceClient.create_custom_job
    receives; the client is made without its API client (create_training_job sends nothing).
    """
    from google.cloud import aiplatform_v1
    from tfx.extensions.google_cloud_ai_platform import training_clients

    client = training_clients.VertexJobClient.__new__(training_clients.VertexJobClient)
    client._region = "us-central1"  # noqa: SLF001 (what __init__ sets beside the API client)
    body = client.create_training_job(
        input_dict={},
        output_dict={},
        exec_properties={},
        executor_class_path="tfx.components.trainer.executor.GenericExecutor",
        job_args=json.loads(json.dumps(job_args)),  # a copy, as the executor's own
        job_id=None,
        job_labels=None,
    )
    # proto-plus refuses a key that is not a field of the message.
    return aiplatform_v1.CustomJob(body)


@pytest.mark.parametrize(
    "task,key",
    [(dag.TRAINER_ID, "ai_platform_training_args"), (dag.TUNER_ID, "ai_platform_tuning_args")],
)
def test_training_and_tuning_jobs_carry_cmek_vpc_spot_timeout_tensorboard_and_labels(
    job, task, key
):
    from google.cloud import aiplatform_v1

    custom_job = _sent_custom_job(_custom_config(job, task)[key])
    spec = custom_job.job_spec
    assert custom_job.encryption_spec.kms_key_name == KEY
    assert spec.network == NETWORK
    assert spec.scheduling.strategy == aiplatform_v1.Scheduling.Strategy.SPOT
    assert spec.scheduling.timeout == datetime.timedelta(hours=2.5)
    assert spec.tensorboard == TENSORBOARD
    # TensorBoard logs go under the pipeline root, in a folder of the component's own.
    assert spec.base_output_directory.output_uri_prefix == (
        f"{PIPELINE_ROOT}/tensorboard/{task.lower()}"
    )
    assert spec.service_account == "taxifare-pipelines@my-gcp-project.iam.gserviceaccount.com"
    assert {"app": "taxifare", "team": "pricing"}.items() <= dict(custom_job.labels).items()


def test_the_tuners_trials_are_not_restarted_together(job):
    # Independent search loops: one reclaimed Spot VM must not restart the others.
    custom_job = _sent_custom_job(_custom_config(job, dag.TUNER_ID)["ai_platform_tuning_args"])
    assert len(custom_job.job_spec.worker_pool_specs) == 2
    assert custom_job.job_spec.scheduling.restart_job_on_worker_restart is False


def test_a_multi_vm_trainer_on_spot_restarts_all_its_vms_together(tmp_path):
    cfg = load_config(
        VERTEX,
        ["vertex.training.tier=multi-worker", "vertex.training.workers=2", *OPTIONS],
    )
    args = component_config.training_job_args(cfg.vertex)
    scheduling = _sent_custom_job(args).job_spec.scheduling
    assert scheduling.restart_job_on_worker_restart is True
    assert scheduling.strategy.name == "SPOT"


def test_without_the_options_the_jobs_carry_none_of_them():
    vertex = load_config(VERTEX).vertex
    custom_job = _sent_custom_job(component_config.training_job_args(vertex))
    assert not custom_job.encryption_spec.kms_key_name
    assert not custom_job.job_spec.network
    assert not custom_job.job_spec.tensorboard
    assert "scheduling" not in component_config.training_job_args(vertex)["job_spec"]
    args = component_config.beam_pipeline_args(vertex, load_config(VERTEX).beam)
    assert not [a for a in args if a.startswith("--dataflow_kms_key")]


def test_every_dataflow_job_gets_the_key_and_labels_naming_pipeline_and_component(job):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

    components = set()
    for task in BEAM_TASKS:
        args = _executor_args(job, task)
        beam_args = [a for a in args if a.startswith("--") and "=" in a]
        options = PipelineOptions(beam_args).view_as(GoogleCloudOptions)
        assert options.dataflow_kms_key == KEY, task
        labels = dict(label.split("=", 1) for label in options.labels)
        assert labels["app"] == "taxifare" and labels["team"] == "pricing", task
        assert labels[component_config.PIPELINE_LABEL] == "taxifare", task
        components.add(labels[component_config.COMPONENT_LABEL])
        # The config's own Beam options stay last (beam.extra_args override what precedes).
        assert args[-1].startswith("--service_account_email="), task
    # One label value per component: the Dataflow jobs of a run are told apart by it.
    assert components == {task.lower() for task in BEAM_TASKS}


def test_component_label_values_are_valid_google_cloud_labels():
    for component_id in ("CsvExampleGen_span3", "LatestBlessedModelResolver.model", "X" * 80):
        value = component_config.component_label_value(component_id)
        assert value and len(value) <= 63
        assert value == value.lower() and all(c.isalnum() or c in "_-" for c in value)


def test_the_direct_runner_gets_no_dataflow_labels():
    vertex = load_config(VERTEX, ["vertex.dataflow.runner=DirectRunner"]).vertex
    assert component_config.component_beam_args(vertex, "taxifare", "Transform") == []


def test_the_pipeline_job_request_carries_the_key_and_the_network(job, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format

    from pipeline.vertex import submit

    cfg = load_config(VERTEX, OPTIONS)
    template = tmp_path / "spec.json"
    template.write_text(json.dumps(job))
    pipeline_job = submit.build_pipeline_job(cfg, template, AnonymousCredentials())
    request = submit.create_request(pipeline_job, cfg.vertex.service_account, cfg.vertex.network)
    message = aiplatform_v1.CreatePipelineJobRequest.pb()()
    json_format.ParseDict(request, message)  # an unknown field fails here
    assert message.pipeline_job.encryption_spec.kms_key_name == KEY
    assert message.pipeline_job.network == NETWORK
    assert dict(message.pipeline_job.labels)["team"] == "pricing"


def test_bigquery_query_jobs_are_labelled():
    from pipeline import bigquery, bigquery_executor

    cfg = load_config(REPO / "configs" / "vertex-bigquery.yaml", OPTIONS)
    settings = bigquery.read_settings(cfg.data.bigquery, cfg.vertex.project, cfg.vertex.labels)
    labels = bigquery_executor.read_kwargs(settings)["bigquery_job_labels"]
    assert {"app": "taxifare", "team": "pricing"}.items() <= labels.items()


@pytest.mark.parametrize(
    "override,message",
    [
        ("vertex.encryption_key=my-key", "vertex.encryption_key"),
        (
            "vertex.encryption_key=projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k",
            "the key is in 'europe-west4' but vertex.region is 'us-central1'",
        ),
        (
            "vertex.encryption_key=projects/p/locations/us-central1/keyRings/r/cryptoKeys/k",
            "Dataflow takes a key in the job's region only",
        ),
        ("vertex.network=projects/my-gcp-project/global/networks/vpc", "vertex.network"),
        ("vertex.network=vpc", "vertex.network"),
        ("vertex.tensorboard=tensorboards/1", "vertex.tensorboard"),
        (
            "vertex.tensorboard=projects/p/locations/europe-west4/tensorboards/1",
            "the TensorBoard is in 'europe-west4'",
        ),
        ("vertex.service_account=null", "set vertex.service_account too"),
        ("vertex.training.timeout_hours=0", "vertex.training.timeout_hours"),
        ("vertex.training.timeout_hours=200", "vertex.training.timeout_hours"),
        ("vertex.training.spot=maybe", "vertex.training.spot"),
        ("vertex.schedule.cron=0 6 1 *", "vertex.schedule.cron"),
        ("vertex.schedule.cron=60 6 1 * *", "minute '60' is not in 0-59"),
        ("vertex.schedule.cron=0 6 1 13 *", "month '13' is not in 1-12"),
        ("vertex.schedule.cron=0 6 1 * FRIDAY", "day of week 'FRIDAY'"),
        ("vertex.schedule.cron=0/0 * * * *", "a step is a positive number"),
        ("vertex.schedule.cron=TZ=Chicago 0 6 1 * *", "not an IANA time zone"),
        ("vertex.schedule.max_concurrent_runs=0", "vertex.schedule.max_concurrent_runs"),
        ("vertex.schedule.max_runs=0", "vertex.schedule.max_runs"),
        ("vertex.schedule.start_time=next monday", "not an ISO-8601 time"),
        ("vertex.schedule.start_time=2027-01-01T06:00:00", "has no time zone"),
    ],
)
def test_bad_operating_options_are_refused_at_load_naming_the_field(override, message):
    overrides = [override]
    if "us-central1/keyRings" in override:
        # A key in the Vertex region, but the Dataflow jobs elsewhere.
        overrides.append("vertex.dataflow.region=europe-west4")
    if override == "vertex.service_account=null":
        overrides.append(f"vertex.tensorboard={TENSORBOARD}")
    with pytest.raises(ConfigError) as error:
        load_config(VERTEX, overrides)
    assert message in str(error.value)


def test_a_schedule_window_must_end_after_it_starts():
    with pytest.raises(ConfigError, match="end_time .* must be after start_time"):
        load_config(
            VERTEX,
            [
                "vertex.schedule.start_time=2027-06-01T00:00:00Z",
                "vertex.schedule.end_time=2027-01-01T00:00:00+01:00",
            ],
        )


@pytest.mark.parametrize(
    "cron",
    [
        "0 6 1 * *",
        "*/15 0-6,22-23 * JAN-MAR MON-FRI",
        "TZ=America/Chicago 0 6 1 * *",
        "CRON_TZ=Europe/Berlin 30 2 * * 0",
        "0 0 1,15 * 7",
    ],
)
def test_cron_lines_vertex_takes_are_accepted(cron):
    cfg = load_config(VERTEX, [f"vertex.schedule.cron={cron}"])
    assert cfg.vertex.schedule.cron == cron
