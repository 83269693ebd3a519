"""The Vertex pipeline spec compiled by TFX's KubeflowV2DagRunner, checked offline.

For each scale tier the spec must parse as a KFP PipelineSpec/PipelineJob, hold every
component of the local pipeline with the module code by dotted path, give the Beam
components the Dataflow options, and give the Trainer exactly the tier's worker pools.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from pipeline import dag
from pipeline.config import load_config
from pipeline.data_source import tfx_sample_dir
from pipeline.vertex.compiler import VertexConfigMissingError, compile_pipeline
from pipeline.vertex.component_config import IMAGE_SCHEMA_FILE

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"
LOCAL = REPO / "configs" / "local.yaml"

IMAGE = "us-central1-docker.pkg.dev/my-gcp-project/taxifare/pipeline:0.1.0"
SERVICE_ACCOUNT = "taxifare-pipelines@my-gcp-project.iam.gserviceaccount.com"
CONTAINER = {"image_uri": IMAGE}

# The worker pools each tier must compile to, written out (not computed by the code).
CUSTOM_POOLS = [
    {
        "machine_spec": {
            "machine_type": "a2-highgpu-2g",
            "accelerator_type": "NVIDIA_TESLA_A100",
            "accelerator_count": 2,
        },
        "replica_count": 1,
    },
    {
        "machine_spec": {
            "machine_type": "a2-highgpu-2g",
            "accelerator_type": "NVIDIA_TESLA_A100",
            "accelerator_count": 2,
        },
        "replica_count": 3,
        "container_spec": {"image_uri": "europe-docker.pkg.dev/other/img:1"},
    },
]
EXPECTED_POOLS = {
    "basic": [
        {
            "machine_spec": {"machine_type": "n1-standard-4"},
            "replica_count": 1,
            "container_spec": CONTAINER,
        }
    ],
    "basic-gpu": [
        {
            "machine_spec": {
                "machine_type": "n1-standard-8",
                "accelerator_type": "NVIDIA_TESLA_T4",
                "accelerator_count": 1,
            },
            "replica_count": 1,
            "container_spec": CONTAINER,
        }
    ],
    "multi-gpu": [
        {
            "machine_spec": {
                "machine_type": "n1-standard-16",
                "accelerator_type": "NVIDIA_TESLA_T4",
                "accelerator_count": 4,
            },
            "replica_count": 1,
            "container_spec": CONTAINER,
        }
    ],
    "multi-worker": [
        {
            "machine_spec": {"machine_type": "n1-standard-8"},
            "replica_count": 1,
            "container_spec": CONTAINER,
        },
        {
            "machine_spec": {"machine_type": "n1-standard-8"},
            "replica_count": 2,
            "container_spec": CONTAINER,
        },
    ],
    "custom": [
        dict(CUSTOM_POOLS[0], container_spec=CONTAINER),
        CUSTOM_POOLS[1],
    ],
}
DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--project=my-gcp-project",
    "--region=us-central1",
    "--temp_location=gs://my-gcp-project-taxifare/dataflow-tmp",
    "--machine_type=e2-standard-4",
    "--max_num_workers=10",
    f"--sdk_container_image={IMAGE}",
    "--sdk_location=container",
    "--disk_size_gb=50",
    "--labels=app=taxifare",
    f"--service_account_email={SERVICE_ACCOUNT}",
]
# Components whose executor runs Beam.
BEAM_TASKS = ("CsvExampleGen", "FareFilter", "StatisticsGen", "Transform", "Evaluator")


def _tier_overrides(tier: str) -> list[str]:
    if tier == "custom":
        return [
            "vertex.training.tier=custom",
            f"vertex.training.worker_pool_specs={json.dumps(CUSTOM_POOLS)}",
        ]
    return [f"vertex.training.tier={tier}"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("compiled")
    result = {}
    for tier in EXPECTED_POOLS:
        cfg = load_config(VERTEX, _tier_overrides(tier))
        path = out / f"{tier}.json"
        compile_pipeline(cfg, path)
        # What is submitted is the file: read it, not the return value.
        result[tier] = (path, json.loads(path.read_text()))
    return result


def _tasks(job: dict) -> dict:
    return job["pipelineSpec"]["root"]["dag"]["tasks"]


def _params(job: dict, task: str) -> dict:
    params = _tasks(job)[task]["inputs"].get("parameters", {})
    # Each constant is {"stringValue": ...} or {"intValue": ...}: take the one value.
    return {k: next(iter(v["runtimeValue"]["constantValue"].values())) for k, v in params.items()}


def _executor(job: dict, task: str) -> dict:
    label = _tasks(job)[task]["componentRef"]["name"]
    executor = job["pipelineSpec"]["components"][label]["executorLabel"]
    return job["pipelineSpec"]["deploymentSpec"]["executors"][executor]["container"]


def _custom_config(job: dict, task: str) -> dict:
    return json.loads(_params(job, task)["custom_config"])


def test_spec_parses_as_kfp_pipeline_job_and_spec(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    for _, job in compiled.values():
        parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
        spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
        assert parsed.display_name == "taxifare"
        assert spec.pipeline_info.name == "taxifare"
        assert spec.schema_version == "2.0.0"
        assert parsed.runtime_config.gcs_output_directory == "gs://my-gcp-project-taxifare/pipeline"


def test_spec_has_every_component_of_the_local_pipeline(compiled):
    # configs/vertex.yaml tunes: the spec holds the (Vertex) Tuner before the Trainer.
    local = dag.create_pipeline(
        load_config(LOCAL, ["root=/tmp/taxifare-unit", "tuning.enabled=true"]), tfx_sample_dir()
    )
    local_ids = {c.id for c in local.components}
    assert dag.TUNER_ID in local_ids
    for _, job in compiled.values():
        # The KFP compiler splits the resolver into one task per resolved channel.
        ids = {
            dag.MODEL_RESOLVER_ID if t.startswith(dag.MODEL_RESOLVER_ID + "-") else t
            for t in _tasks(job)
        }
        assert ids == local_ids
        assert dag.TUNER_ID in _tasks(job)[dag.TRAINER_ID]["dependentTasks"]
        # The gate still guards Transform on Vertex.
        assert dag.ANOMALY_GATE_ID in _tasks(job)[dag.TRANSFORM_ID]["dependentTasks"]


def test_module_code_and_custom_components_are_referenced_by_importable_paths(compiled):
    _, job = compiled["basic"]
    assert _params(job, dag.TRANSFORM_ID)["preprocessing_fn"] == (
        "taxifare_modules.preprocessing.preprocessing_fn"
    )
    assert _params(job, dag.TRAINER_ID)["run_fn"] == "taxifare_modules.trainer.run_fn"
    assert "module_file" not in _params(job, dag.TRAINER_ID)
    for task in (dag.FARE_FILTER_ID, dag.ANOMALY_GATE_ID):
        args = _executor(job, task)["args"]
        path = args[args.index("--executor_class_path") + 1]
        assert path.startswith("pipeline.components.")
        module, name = path.rsplit(".", 1)
        # The image installs this package, so what imports here imports there.
        assert hasattr(importlib.import_module(module), name)


def test_every_component_runs_the_pipeline_image(compiled):
    _, job = compiled["basic"]
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    # Every component but the resolvers (metadata queries Vertex runs itself: two for the
    # latest blessed model; the drift check finds its baseline itself) is a container.
    resolvers = [e for e in executors.values() if "resolver" in e]
    assert len(resolvers) == 2
    assert len(containers) == len(executors) - len(resolvers)
    assert {c["image"] for c in containers} == {IMAGE}


def test_skew_check_reads_a_gcs_log_with_the_dataflow_options(tmp_path):
    cfg = load_config(VERTEX, ["monitoring.skew.serving_logs=gs://b/requests"])
    path = tmp_path / "skew.json"
    compile_pipeline(cfg, path)
    job = json.loads(path.read_text())
    assert {dag.DRIFT_CHECK_ID, dag.SKEW_CHECK_ID, dag.MONITORING_GATE_ID} <= set(_tasks(job))
    assert _params(job, dag.SKEW_CHECK_ID)["serving_logs"] == "gs://b/requests"
    args = _executor(job, dag.SKEW_CHECK_ID)["args"]
    assert args[-len(DATAFLOW_ARGS) :] == DATAFLOW_ARGS


def test_beam_components_get_the_dataflow_options(compiled):
    _, job = compiled["basic"]
    for task in BEAM_TASKS:
        args = _executor(job, task)["args"]
        assert args[-len(DATAFLOW_ARGS) :] == DATAFLOW_ARGS, task


def test_trainer_gets_exactly_the_worker_pools_of_each_tier(compiled):
    for tier, expected in EXPECTED_POOLS.items():
        _, job = compiled[tier]
        custom = _custom_config(job, dag.TRAINER_ID)
        assert custom["ai_platform_enable_vertex"] is True
        assert custom["ai_platform_vertex_region"] == "us-central1"
        training = custom["ai_platform_training_args"]
        assert training["project"] == "my-gcp-project"
        assert training["job_spec"]["worker_pool_specs"] == expected, tier
        assert training["job_spec"]["service_account"] == SERVICE_ACCOUNT
        # Several VMs restart together, so they resume together from the backup.
        several = sum(p["replica_count"] for p in expected) > 1
        assert ("scheduling" in training["job_spec"]) is several, tier
        # run_fn's own keys travel beside the Vertex ones.
        assert custom["batch_size"] == 128 and custom["model"]["hidden_units"] == [64, 32]
        args = _executor(job, dag.TRAINER_ID)["args"]
        assert args[args.index("--executor_class_path") + 1] == (
            "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
        )


def test_pusher_deploys_to_an_autoscaling_endpoint(compiled):
    _, job = compiled["basic"]
    custom = _custom_config(job, dag.PUSHER_ID)
    assert custom["ai_platform_enable_vertex"] is True
    assert custom["ai_platform_vertex_region"] == "us-central1"
    assert custom["ai_platform_vertex_container_image_uri"] == (
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    )
    assert custom["ai_platform_serving_args"] == {
        "project_id": "my-gcp-project",
        "endpoint_name": "taxifare",
        "machine_type": "n1-standard-2",
        "min_replica_count": 1,
        "max_replica_count": 3,
    }
    args = _executor(job, dag.PUSHER_ID)["args"]
    # TFX's Vertex Pusher executor, extended to turn on the endpoint's request logging.
    assert "pipeline.vertex.pusher.Executor" in args


def test_pusher_can_push_to_a_gcs_directory_instead(tmp_path):
    cfg = load_config(
        VERTEX, ["vertex.push=directory", "serving_root=gs://my-gcp-project-taxifare/serving"]
    )
    job = compile_pipeline(cfg, tmp_path / "p.json")
    args = _executor(job, dag.PUSHER_ID)["args"]
    # The atomic Pusher: on gs:// it copies beside the serving dir, then into place.
    assert "pipeline.components.atomic_pusher.Executor" in args
    destination = json.loads(_params(job, dag.PUSHER_ID)["push_destination"])
    assert destination == {
        "filesystem": {"base_directory": "gs://my-gcp-project-taxifare/serving/taxifare"}
    }


def test_curated_schema_is_read_from_the_image_or_gcs(compiled, tmp_path):
    _, job = compiled["basic"]
    assert _params(job, dag.SCHEMA_GEN_ID)["schema_file"] == IMAGE_SCHEMA_FILE
    cfg = load_config(VERTEX, ["schema.path=gs://my-gcp-project-taxifare/schema.pbtxt"])
    job = compile_pipeline(cfg, tmp_path / "p.json")
    assert _params(job, dag.SCHEMA_GEN_ID)["schema_file"] == (
        "gs://my-gcp-project-taxifare/schema.pbtxt"
    )


def test_dockerfile_provides_what_the_spec_refers_to():
    import platform

    dockerfile = (REPO / "Dockerfile").read_text()
    # The tested interpreter, not the TFX image's conda environment (see test_image.py).
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert base == f"python:{platform.python_version()}-bookworm"
    assert IMAGE_SCHEMA_FILE in dockerfile
    assert re.search(r"^ENV\s+TF_USE_LEGACY_KERAS=1\s*$", dockerfile, flags=re.MULTILINE)
    assert "requirements.lock" in dockerfile


def test_direct_runner_keeps_beam_inside_the_containers(tmp_path):
    cfg = load_config(VERTEX, ["vertex.dataflow.runner=DirectRunner"])
    job = compile_pipeline(cfg, tmp_path / "p.json")
    args = _executor(job, dag.TRANSFORM_ID)["args"]
    assert "--runner=DirectRunner" in args
    assert not any(a.startswith("--sdk_container_image") for a in args)


def test_pipeline_job_is_accepted_by_aiplatform_offline(compiled):
    from google.auth.credentials import AnonymousCredentials

    from pipeline.vertex.submit import build_pipeline_job
    from taxifare_modules import compat

    for tier in ("basic", "multi-worker"):
        path, _ = compiled[tier]
        cfg = load_config(VERTEX, _tier_overrides(tier))
        job = build_pipeline_job(cfg, path, AnonymousCredentials())
        assert job.project == "my-gcp-project"
        assert job.location == "us-central1"
        resource = compat.pipeline_job_resource(job)
        assert resource.runtime_config.gcs_output_directory == (
            "gs://my-gcp-project-taxifare/pipeline"
        )
        assert set(resource.pipeline_spec["root"]["dag"]["tasks"]) == set(_tasks(compiled[tier][1]))


def test_a_config_without_vertex_is_not_compiled(tmp_path):
    with pytest.raises(VertexConfigMissingError, match="no `vertex` section"):
        compile_pipeline(load_config(LOCAL), tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_dataflow_network_disk_and_labels_reach_every_billed_job(tmp_path):
    from google.auth.credentials import AnonymousCredentials

    from pipeline.vertex import submit

    cfg = load_config(
        VERTEX,
        [
            "vertex.labels={app: taxifare, team: pricing}",
            "vertex.dataflow.disk_size_gb=100",
            "vertex.dataflow.network=taxifare-vpc",
            "vertex.dataflow.subnetwork=regions/us-central1/subnetworks/dataflow",
            "vertex.dataflow.use_public_ips=false",
        ],
    )
    out = tmp_path / "spec.json"
    job = compile_pipeline(cfg, out)
    args = _executor(job, "StatisticsGen")["args"]
    for wanted in (
        "--disk_size_gb=100",
        "--network=taxifare-vpc",
        "--subnetwork=regions/us-central1/subnetworks/dataflow",
        "--no_use_public_ips",
        "--labels=app=taxifare",
        "--labels=team=pricing",
    ):
        assert wanted in args
    from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions

    options = GoogleCloudOptions(args[args.index("--runner=DataflowRunner") :])
    assert options.labels == ["app=taxifare", "team=pricing"]
    assert options.view_as(WorkerOptions).disk_size_gb == 100
    # The Trainer's Vertex training job carries them.
    custom = _custom_config(job, dag.TRAINER_ID)
    assert custom["ai_platform_training_args"]["labels"] == {"app": "taxifare", "team": "pricing"}
    # And the pipeline job, beside TFX's own label.
    pipeline_job = submit.build_pipeline_job(cfg, out, AnonymousCredentials())
    request = submit.create_request(pipeline_job, None)
    labels = request["pipelineJob"]["labels"]
    assert labels["app"] == "taxifare" and labels["team"] == "pricing"
    assert set(job["labels"]) <= set(labels)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("vertex.labels={App: x}", "label key 'App'"),
        ("vertex.labels={app: Big Value}", "label app: value 'Big Value'"),
        ("vertex.dataflow.disk_size_gb=10", "disk_size_gb"),
        ("vertex.dataflow.subnetwork=dataflow", "subnetwork"),
    ],
)
def test_bad_dataflow_options_and_labels_are_named(override, message):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(VERTEX, [override])
