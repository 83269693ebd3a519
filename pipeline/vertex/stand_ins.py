"""What `taxifare rehearse` puts in place of the Google Cloud services a Vertex run calls.

A rehearsed task runs the spec's own entrypoint (TFX's `kubeflow_v2_run_executor`) through
`python -m pipeline.vertex.stand_ins <the task's arguments>`, which first installs these:

- the Trainer's Vertex AI Training job: the CustomJob TFX builds is parsed as
  `aiplatform_v1.CustomJob` (unknown or mistyped fields fail), its machines are checked, and
  its worker pools run here as processes with the environment Vertex gives them
  (`CLUSTER_SPEC`, `TF_CONFIG`; chief in workerpool0, workers in workerpool1);
- Cloud Storage for Beam: Beam has no filesystem for `file://` URIs (TFX's `fileio` and
  TensorFlow do), so `FileUriFileSystem` maps them to local paths, as Beam's GCS filesystem
  maps `gs://` on Dataflow;
- the Pusher's upload and deploy: the arguments are built into `aiplatform_v1.Model` and
  `aiplatform_v1.DeployedModel` and checked against `aiplatform.Model.deploy`'s parameters;
  the exported model is called as the prediction container calls it (`serving_default` on a
  JSON instance, `serving_tf_example` on the rawPredict body of a trip with unknown
  coordinates); the deployed model is recorded on a stand-in endpoint (a JSON file beside
  the rehearsal's metadata), which the Pusher's logging and undeploy steps then talk to
  through the real `aiplatform_v1` request types.

Nothing here is used by a real run.
"""

from __future__ import annotations

import datetime
import inspect
import json
import math
import os
import socket
import subprocess
import sys
from typing import Any

from taxifare_modules import compat

# Beam's filesystem for file:// URIs, once install() has defined it.
FileUriFileSystem: type | None = None

# Where the stand-in endpoint lives: set by the rehearsal for every task it runs.
ENDPOINT_FILE_ENV = "TAXIFARE_REHEARSAL_ENDPOINT"
_ENDPOINT_ID = "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_command(command: list[str]) -> list[str]:
    """The container's command on this machine: its `python` is this interpreter."""
    return [sys.executable if command and command[0] == "python" else command[0], *command[1:]]


def cluster_environments(pools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The CLUSTER_SPEC and TF_CONFIG of every replica, as Vertex AI Training sets them.

    Returns:
      One environment per replica, pool by pool (the chief first).
    """
    cluster = {
        f"workerpool{i}": [
            f"127.0.0.1:{_free_port()}" for _ in range(int(p.get("replica_count", 1)))
        ]
        for i, p in enumerate(pools)
    }
    tf_names = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps"}
    tf_cluster = {tf_names[k]: v for k, v in cluster.items() if k in tf_names}
    envs = []
    for pool_name, hosts in cluster.items():
        for index in range(len(hosts)):
            task = {"type": pool_name, "index": index}
            envs.append(
                {
                    "CLUSTER_SPEC": json.dumps(
                        {"cluster": cluster, "environment": "cloud", "task": task}
                    ),
                    "TF_CONFIG": json.dumps(
                        {
                            "cluster": tf_cluster,
                            "environment": "cloud",
                            "task": {"type": tf_names[pool_name], "index": index},
                        }
                    ),
                }
            )
    return envs


def run_training_job(
    project: str,
    training_job: dict[str, Any],
    enable_vertex: bool | None = False,
    vertex_region: str | None = None,
) -> None:
    """Stands in for TFX's launch of a Vertex CustomJob: its worker pools run here."""
    from google.cloud import aiplatform_v1

    from pipeline.vertex import scale_tiers

    if not enable_vertex or not vertex_region or not project:
        raise RuntimeError("the Trainer would not start a Vertex AI training job")
    aiplatform_v1.CustomJob(training_job)  # unknown or mistyped fields raise here
    pools = training_job["job_spec"]["worker_pool_specs"]
    for i, pool in enumerate(pools):
        machine = pool["machine_spec"]
        scale_tiers.check_machine(
            machine["machine_type"],
            machine.get("accelerator_type"),
            f"worker_pool_specs[{i}]: ",
            int(machine.get("accelerator_count") or 0),
        )
    commands = [
        _local_command(
            list(p["container_spec"]["command"]) + list(p["container_spec"].get("args", []))
        )
        for p in pools
        for _ in range(int(p.get("replica_count", 1)))
    ]
    # The machines are this one: a pool's GPUs are stood in by its CPU, which the Trainer's
    # GPU check is told (on Vertex it stops a GPU pool that sees no GPU).
    from taxifare_modules.trainer import GPU_STAND_IN_ENV

    processes = []
    for command, env in zip(commands, cluster_environments(pools), strict=True):
        processes.append(
            subprocess.Popen(command, env={**os.environ, **env, GPU_STAND_IN_ENV: "1"})
        )
    codes = [p.wait() for p in processes]
    if any(codes):
        raise RuntimeError(f"the training job's replicas exited with {codes}")


class _DoneOperation:
    def result(self, timeout: float | None = None) -> None:
        del timeout


class StandInEndpointClient:
    """An EndpointService on a JSON file: list, update and undeploy with the real types."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Any:
        """The endpoint (an `aiplatform_v1.Endpoint`), or None before the first deploy."""
        from google.cloud import aiplatform_v1

        if not os.path.exists(self.path):
            return None
        with open(self.path) as fh:  # a file of this machine, not an artifact
            return aiplatform_v1.Endpoint.from_json(fh.read())

    def save(self, endpoint: Any) -> None:
        """Writes the endpoint back."""
        from google.cloud import aiplatform_v1

        with open(self.path, "w") as fh:
            fh.write(aiplatform_v1.Endpoint.to_json(endpoint))

    def list_endpoints(self, request: Any) -> list[Any]:
        """ListEndpoints with a display_name filter."""
        from google.cloud import aiplatform_v1

        request = aiplatform_v1.ListEndpointsRequest(request)
        endpoint = self.load()
        if endpoint is None or f'display_name="{endpoint.display_name}"' != request.filter:
            return []
        return [endpoint]

    def update_endpoint(self, request: Any) -> Any:
        """UpdateEndpoint: the masked fields only."""
        from google.cloud import aiplatform_v1

        request = aiplatform_v1.UpdateEndpointRequest(request)
        endpoint = self.load()
        for path in request.update_mask.paths:
            setattr(endpoint, path, getattr(request.endpoint, path))
        self.save(endpoint)
        return endpoint

    def undeploy_model(self, request: Any) -> _DoneOperation:
        """UndeployModel: refused for a model that has traffic, as Vertex does."""
        from google.cloud import aiplatform_v1

        request = aiplatform_v1.UndeployModelRequest(request)
        endpoint = self.load()
        if endpoint.traffic_split.get(request.deployed_model_id):
            raise RuntimeError(f"deployed model {request.deployed_model_id} has traffic")
        kept = [m for m in endpoint.deployed_models if m.id != request.deployed_model_id]
        del endpoint.deployed_models[:]
        endpoint.deployed_models.extend(kept)
        self.save(endpoint)
        return _DoneOperation()


def _sample_trip() -> dict[str, Any]:
    """A complete real trip as a JSON instance (the tfx sample's first complete row)."""
    import csv

    from pipeline.data_source import tfx_sample_dir
    from pipeline.serving.client import csv_row_to_instance
    from taxifare_modules import features as f

    with open(os.path.join(tfx_sample_dir(), "data.csv"), newline="") as fh:
        for row in csv.DictReader(fh):
            if all(row[k] for k in f.RAW_FEATURE_KEYS):
                return csv_row_to_instance(row)
    raise RuntimeError("the sample has no complete trip")


def call_as_prediction_container(serving_path: str) -> list[float]:
    """Calls the exported model as Vertex's TF Serving container would.

    `predict` with a JSON instance on `serving_default` (every named input given), and
    `rawPredict` with the serving_tf_example body of the same trip with unknown dropoff
    coordinates.

    Returns:
      The two fares.
    """
    import base64

    import tensorflow as tf

    from pipeline.vertex.prediction import endpoint_body
    from taxifare_modules import features as f

    model = tf.saved_model.load(serving_path)
    trip = _sample_trip()
    body = json.loads(json.dumps({"instances": [trip]}, allow_nan=False))
    signature = model.signatures[f.SERVING_DEFAULT_SIGNATURE]
    _, spec = signature.structured_input_signature
    missing = sorted(set(spec) - set(body["instances"][0]))
    if missing:
        raise RuntimeError(f"serving_default takes inputs the instance lacks: {missing}")
    inputs = {k: tf.constant([body["instances"][0][k]], dtype=s.dtype) for k, s in spec.items()}
    by_name = float(signature(**inputs)[f.PREDICTION_KEY].numpy()[0])
    unknown = {**trip, f.DROPOFF_LATITUDE_KEY: None, f.DROPOFF_LONGITUDE_KEY: None}
    raw = json.loads(json.dumps(endpoint_body([unknown]), allow_nan=False))
    examples = tf.constant([base64.b64decode(i["b64"]) for i in raw["instances"]])
    by_example = model.signatures[raw["signature_name"]](examples=examples)
    fare = float(by_example[f.PREDICTION_KEY].numpy()[0])
    for value in (by_name, fare):
        if not math.isfinite(value):
            raise RuntimeError(f"the model answered a non-finite fare {value}")
    return [by_name, fare]


def deploy_model(
    serving_path: str,
    model_version_name: str,
    ai_platform_serving_args: dict[str, Any],
    labels: dict[str, str],
    serving_container_image_uri: str | None = None,
    endpoint_region: str | None = None,
    enable_vertex: bool | None = False,
    **kwargs: Any,
) -> str:
    """Stands in for TFX's upload and deploy to a Vertex endpoint (see the module doc)."""
    from google.cloud import aiplatform, aiplatform_v1

    del kwargs, labels
    if not enable_vertex or not endpoint_region or not serving_container_image_uri:
        raise RuntimeError("the Pusher would not deploy to a Vertex endpoint")
    args = dict(ai_platform_serving_args)
    project = args.pop("project_id", None) or args.pop("project")
    endpoint_name = args.pop("endpoint_name")
    args.setdefault("traffic_percentage", 100)
    accepted = set(inspect.signature(aiplatform.Model.deploy).parameters) - {"self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise RuntimeError(f"aiplatform.Model.deploy takes no {unknown}")
    parent = f"projects/{project}/locations/{endpoint_region}"
    aiplatform_v1.Model(
        display_name=model_version_name,
        artifact_uri=serving_path,
        container_spec=aiplatform_v1.ModelContainerSpec(image_uri=serving_container_image_uri),
    )
    client = StandInEndpointClient(os.environ[ENDPOINT_FILE_ENV])
    endpoint = client.load() or aiplatform_v1.Endpoint(
        name=f"{parent}/endpoints/{_ENDPOINT_ID}", display_name=endpoint_name
    )
    number = 1 + max([int(m.id) for m in endpoint.deployed_models] or [0])
    deployed = aiplatform_v1.DeployedModel(
        id=str(number),
        model=f"{parent}/models/{number}",
        display_name=model_version_name,
        create_time=datetime.datetime.now(datetime.timezone.utc),
        dedicated_resources=aiplatform_v1.DedicatedResources(
            machine_spec=aiplatform_v1.MachineSpec(machine_type=args["machine_type"]),
            min_replica_count=int(args.get("min_replica_count", 1)),
            max_replica_count=int(args.get("max_replica_count", 1)),
        ),
    )
    call_as_prediction_container(serving_path)
    endpoint.deployed_models.append(deployed)
    traffic = int(args["traffic_percentage"])
    endpoint.traffic_split.clear()
    endpoint.traffic_split[deployed.id] = traffic
    client.save(endpoint)
    return deployed.model


_FILE_SCHEME = "file://"


def _local(path: str) -> str:
    return path[len(_FILE_SCHEME) :] if path.startswith(_FILE_SCHEME) else path


def _file_uri_filesystem() -> type:
    """Beam's LocalFileSystem for `file://` URIs (defined on first use: it imports Beam)."""
    from apache_beam.io.filesystem import FileMetadata
    from apache_beam.io.localfilesystem import LocalFileSystem

    class FileUriFileSystem(LocalFileSystem):
        """`file:///a/b` is `/a/b`; listed and joined paths keep the scheme."""

        @classmethod
        def scheme(cls) -> str:
            return "file"

        def join(self, basepath: str, *paths: str) -> str:
            joined = os.path.join(_local(basepath), *paths)
            return _FILE_SCHEME + joined if basepath.startswith(_FILE_SCHEME) else joined

        def split(self, path: str) -> tuple[str, str]:
            head, tail = super().split(_local(path))
            return (_FILE_SCHEME + head if path.startswith(_FILE_SCHEME) else head), tail

        def _url_dirname(self, url_or_path: str) -> str:
            head = os.path.dirname(_local(url_or_path))
            return _FILE_SCHEME + head if url_or_path.startswith(_FILE_SCHEME) else head

        def _list(self, dir_or_prefix: str):
            for meta in super()._list(_local(dir_or_prefix)):
                yield FileMetadata(
                    _FILE_SCHEME + meta.path, meta.size_in_bytes, meta.last_updated_in_seconds
                )

        def mkdirs(self, path: str) -> None:
            return super().mkdirs(_local(path))

        def create(self, path: str, *args: Any, **kwargs: Any):
            return super().create(_local(path), *args, **kwargs)

        def open(self, path: str, *args: Any, **kwargs: Any):
            return super().open(_local(path), *args, **kwargs)

        def copy(self, sources: list[str], destinations: list[str]) -> None:
            return super().copy([_local(p) for p in sources], [_local(p) for p in destinations])

        def rename(self, sources: list[str], destinations: list[str]) -> None:
            return super().rename([_local(p) for p in sources], [_local(p) for p in destinations])

        def exists(self, path: str) -> bool:
            return super().exists(_local(path))

        def size(self, path: str) -> int:
            return super().size(_local(path))

        def last_updated(self, path: str) -> float:
            return super().last_updated(_local(path))

        def checksum(self, path: str) -> str:
            return super().checksum(_local(path))

        def metadata(self, path: str):
            meta = super().metadata(_local(path))
            return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

        def delete(self, paths: list[str]) -> None:
            return super().delete([_local(p) for p in paths])

    return FileUriFileSystem


def _offline_job_client(region: str) -> Any:
    """TFX's Vertex job client, built with anonymous credentials: it sends nothing here."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform import gapic

    return gapic.JobServiceClient(
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"},
    )


def install() -> None:
    """Puts the stand-ins in place of the training job, the deploy and the endpoint client."""
    from tfx.extensions.google_cloud_ai_platform import runner

    global FileUriFileSystem
    FileUriFileSystem = _file_uri_filesystem()  # registered with Beam by being defined

    from pipeline.vertex import pusher

    compat.replace_tfx_vertex_job_client(_offline_job_client)
    compat.replace_tfx_vertex_training_launch(run_training_job)
    runner.deploy_model_for_aip_prediction = deploy_model
    pusher.endpoint_client = lambda region: StandInEndpointClient(os.environ[ENDPOINT_FILE_ENV])


def main() -> None:
    """`python -m pipeline.vertex.stand_ins <kubeflow_v2_run_executor arguments>`."""
    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as entry

    install()
    app.run(entry.main, flags_parser=compat.kubeflow_v2_executor_flags_parser())


if __name__ == "__main__":
    main()
