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
- the Pusher's Vertex EndpointService and ModelService (`StandInVertex`, on one JSON file
  beside the rehearsal's metadata, named by ENDPOINT_FILE_ENV): every request the Pusher
  sends is parsed as its `aiplatform_v1` request type and sent through the wire format
  (unknown or mistyped fields fail), and is recorded; uploads become Model versions with
  Vertex's rules for labels and aliases (an alias names one version of a Model and moves to
  the version that takes it; the first version is "default"); a deploy calls the exported
  model as the prediction container calls it (`serving_default` on a JSON instance,
  `serving_tf_example` on the rawPredict body of a trip with unknown coordinates) and puts
  it on the stand-in endpoint, where the Pusher's logging and undeploy steps find it.

The stand-in file (JSON) holds the state and the calls:

    {
      "endpoint": <the Endpoint, aiplatform_v1.Endpoint's JSON mapping> or null,
      "models": [<one aiplatform_v1.Model JSON mapping per version: name
                  "projects/P/locations/R/models/<id>" (no "@"), versionId "1", "2", ...,
                  versionAliases, labels, artifactUri, encryptionSpec, ...>],
      "calls": [{"method": "UploadModel" | "DeployModel" | "UndeployModel" |
                 "CreateEndpoint" | "UpdateEndpoint" | "MergeVersionAliases",
                 "request": <the request's aiplatform_v1 JSON mapping>}, ...]
    }

Only calls that change something are recorded (not List/Get). Read it with
`StandInVertex(path)`: `.load()` (the Endpoint or None), `.models()` (the Model versions) and
`.calls("DeployModel")` (the requests of one method, as `aiplatform_v1` objects, oldest
first). A run that deployed nothing adds no "UploadModel" and no "DeployModel" call. Deployed
model ids count the deploys: "1", "2", ...

Nothing here is used by a real run.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
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
    """A long-running operation that is done: `result()` is its response."""

    def __init__(self, response: Any = None) -> None:
        self.response = response

    def result(self, timeout: float | None = None) -> Any:
        del timeout
        return self.response


# Vertex's rules for labels (keys and values) and version aliases.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")
_DEFAULT_ALIAS = "default"


def _wire(request_type: Any, request: Any) -> Any:
    """`request` as the service would receive it: typed, then through the wire format."""
    typed = request_type(request)
    return request_type.deserialize(request_type.serialize(typed))


def _check_labels(labels: Any, what: str) -> None:
    if len(labels) > 64:
        raise ValueError(f"{what}: {len(labels)} labels, Vertex takes at most 64")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"{what}: label {key}={value!r} is not a valid Vertex label")


class StandInVertex:
    """Vertex's EndpointService and ModelService on a JSON file (format in the module doc).

    Args:
      path: the stand-in file (created by the first change).
      call_model: whether a deploy calls the model as the prediction container would (the
        rehearsal does; a test of the push logic on a placeholder SavedModel does not).
    """

    def __init__(self, path: str, call_model: bool = True) -> None:
        self.path = path
        self.call_model = call_model

    # The file: a file of this machine, not an artifact.
    def _read(self) -> dict[str, Any]:
        if not os.path.exists(self.path):
            return {"endpoint": None, "models": [], "calls": []}
        with open(self.path) as fh:
            state = json.load(fh)
        if not isinstance(state, dict) or set(state) != {"endpoint", "models", "calls"}:
            raise ValueError(
                f"{self.path} is not a stand-in Vertex file (keys endpoint, models, calls):"
                " delete it, or rehearse in a new root"
            )
        return state

    def _write(self, state: dict[str, Any]) -> None:
        with open(self.path + ".tmp", "w") as fh:
            json.dump(state, fh, indent=1)
        os.replace(self.path + ".tmp", self.path)

    def _record(self, state: dict[str, Any], method: str, request: Any) -> None:
        state["calls"].append(
            {"method": method, "request": json.loads(type(request).to_json(request))}
        )

    def load(self) -> Any:
        """The endpoint (an `aiplatform_v1.Endpoint`), or None before it is created."""
        from google.cloud import aiplatform_v1

        found = self._read()["endpoint"]
        return None if found is None else aiplatform_v1.Endpoint.from_json(json.dumps(found))

    def save(self, endpoint: Any) -> None:
        """Writes the endpoint back."""
        from google.cloud import aiplatform_v1

        state = self._read()
        state["endpoint"] = json.loads(aiplatform_v1.Endpoint.to_json(endpoint))
        self._write(state)

    def models(self) -> list[Any]:
        """Every Model version (`aiplatform_v1.Model`), oldest first."""
        from google.cloud import aiplatform_v1

        return [aiplatform_v1.Model.from_json(json.dumps(m)) for m in self._read()["models"]]

    def calls(self, method: str) -> list[Any]:
        """The recorded requests of one method (e.g. "DeployModel"), oldest first."""
        from google.cloud import aiplatform_v1

        request_type = getattr(aiplatform_v1, f"{method}Request")
        return [
            request_type.from_json(json.dumps(c["request"]))
            for c in self._read()["calls"]
            if c["method"] == method
        ]

    def _save_models(self, state: dict[str, Any], models: list[Any]) -> None:
        from google.cloud import aiplatform_v1

        state["models"] = [json.loads(aiplatform_v1.Model.to_json(m)) for m in models]

    def _endpoint(self, name: str) -> Any:
        from google.api_core import exceptions

        endpoint = self.load()
        if endpoint is None or endpoint.name != name:
            raise exceptions.NotFound(f"endpoint {name} not found")
        return endpoint

    # EndpointService

    def list_endpoints(self, request: Any) -> list[Any]:
        """ListEndpoints with a display_name filter."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.ListEndpointsRequest, request)
        endpoint = self.load()
        if endpoint is None or f'display_name="{endpoint.display_name}"' != request.filter:
            return []
        return [endpoint]

    def create_endpoint(self, request: Any) -> _DoneOperation:
        """CreateEndpoint (this stand-in holds one endpoint)."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.CreateEndpointRequest, request)
        if self.load() is not None:
            raise RuntimeError("the stand-in holds one endpoint, and it exists")
        _check_labels(request.endpoint.labels, "CreateEndpoint")
        endpoint = aiplatform_v1.Endpoint(request.endpoint)
        endpoint.name = f"{request.parent}/endpoints/{_ENDPOINT_ID}"
        endpoint.create_time = datetime.datetime.now(datetime.timezone.utc)
        state = self._read()
        self._record(state, "CreateEndpoint", request)
        state["endpoint"] = json.loads(aiplatform_v1.Endpoint.to_json(endpoint))
        self._write(state)
        return _DoneOperation(endpoint)

    def update_endpoint(self, request: Any) -> Any:
        """UpdateEndpoint: the masked fields only."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.UpdateEndpointRequest, request)
        endpoint = self._endpoint(request.endpoint.name)
        for path in request.update_mask.paths:
            if path == "traffic_split":
                ids = {m.id for m in endpoint.deployed_models}
                split = dict(request.endpoint.traffic_split)
                if set(split) - ids or sum(split.values()) != 100:
                    raise ValueError(f"traffic split {split} for deployed models {sorted(ids)}")
                endpoint.traffic_split.clear()
                endpoint.traffic_split.update(split)
            else:
                setattr(endpoint, path, getattr(request.endpoint, path))
        state = self._read()
        self._record(state, "UpdateEndpoint", request)
        state["endpoint"] = json.loads(aiplatform_v1.Endpoint.to_json(endpoint))
        self._write(state)
        return endpoint

    def deploy_model(self, request: Any) -> _DoneOperation:
        """DeployModel of a Model version: checked, called, recorded, given its traffic."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.DeployModelRequest, request)
        endpoint = self._endpoint(request.endpoint)
        model = self.get_model(aiplatform_v1.GetModelRequest(name=request.deployed_model.model))
        resources = request.deployed_model.dedicated_resources
        if not resources.machine_spec.machine_type or resources.min_replica_count < 1:
            raise ValueError("a deploy needs a machine type and at least one replica")
        if resources.max_replica_count < resources.min_replica_count:
            raise ValueError("max_replica_count is below min_replica_count")
        if self.call_model:
            call_as_prediction_container(model.artifact_uri)
        state = self._read()
        number = 1 + sum(c["method"] == "DeployModel" for c in state["calls"])
        deployed = aiplatform_v1.DeployedModel(request.deployed_model)
        deployed.id = str(number)
        deployed.model = model.name
        deployed.model_version_id = model.version_id
        deployed.create_time = datetime.datetime.now(datetime.timezone.utc)
        split = dict(request.traffic_split)
        if split:
            split[deployed.id] = split.pop("0", 0)
            ids = {m.id for m in endpoint.deployed_models} | {deployed.id}
            if set(split) - ids or sum(split.values()) != 100:
                raise ValueError(f"traffic split {dict(request.traffic_split)} does not add up")
            endpoint.traffic_split.clear()
            endpoint.traffic_split.update({k: v for k, v in split.items() if v})
        endpoint.deployed_models.append(deployed)
        self._record(state, "DeployModel", request)
        state["endpoint"] = json.loads(aiplatform_v1.Endpoint.to_json(endpoint))
        self._write(state)
        return _DoneOperation(aiplatform_v1.DeployModelResponse(deployed_model=deployed))

    def undeploy_model(self, request: Any) -> _DoneOperation:
        """UndeployModel: refused for a model that has traffic, as Vertex does."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.UndeployModelRequest, request)
        endpoint = self._endpoint(request.endpoint)
        if endpoint.traffic_split.get(request.deployed_model_id):
            raise RuntimeError(f"deployed model {request.deployed_model_id} has traffic")
        kept = [m for m in endpoint.deployed_models if m.id != request.deployed_model_id]
        del endpoint.deployed_models[:]
        endpoint.deployed_models.extend(kept)
        state = self._read()
        self._record(state, "UndeployModel", request)
        state["endpoint"] = json.loads(aiplatform_v1.Endpoint.to_json(endpoint))
        self._write(state)
        return _DoneOperation(aiplatform_v1.UndeployModelResponse())

    # ModelService

    def list_models(self, request: Any) -> list[Any]:
        """ListModels with a display_name filter: each Model's default version."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.ListModelsRequest, request)
        return [
            m
            for m in self.models()
            if _DEFAULT_ALIAS in m.version_aliases
            and m.name.startswith(request.parent + "/")
            and f'display_name="{m.display_name}"' == request.filter
        ]

    def list_model_versions(self, request: Any) -> list[Any]:
        """ListModelVersions of one Model."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.ListModelVersionsRequest, request)
        return [m for m in self.models() if m.name == request.name]

    def get_model(self, request: Any) -> Any:
        """GetModel by `models/<id>` (the default version), `@<version id>` or `@<alias>`."""
        from google.api_core import exceptions
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.GetModelRequest, request)
        name, _, version = request.name.partition("@")
        version = version or _DEFAULT_ALIAS
        for model in self.models():
            if model.name == name and version in (model.version_id, *model.version_aliases):
                return model
        raise exceptions.NotFound(f"model {request.name} not found")

    def upload_model(self, request: Any) -> _DoneOperation:
        """UploadModel: a new Model, or a new version of `parent_model`; aliases move."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.UploadModelRequest, request)
        model = aiplatform_v1.Model(request.model)
        if not model.display_name or not model.artifact_uri or not model.container_spec.image_uri:
            raise ValueError("UploadModel needs a display name, an artifact_uri and an image")
        _check_labels(model.labels, "UploadModel")
        bad = [a for a in model.version_aliases if not _ALIAS.match(a)]
        if bad:
            raise ValueError(f"UploadModel: version aliases {bad} are not valid")
        models = self.models()
        if request.parent_model:
            versions = [m for m in models if m.name == request.parent_model]
            if not versions:
                raise ValueError(f"UploadModel: parent_model {request.parent_model} not found")
            model.name = request.parent_model
            model.version_id = str(1 + max(int(m.version_id) for m in versions))
        else:
            number = 1 + len({m.name for m in models})
            model.name = f"{request.parent}/models/{number}"
            model.version_id = "1"
            if _DEFAULT_ALIAS not in model.version_aliases:
                model.version_aliases.append(_DEFAULT_ALIAS)
        model.create_time = model.version_create_time = datetime.datetime.now(datetime.timezone.utc)
        models = self._move_aliases(models, model, list(model.version_aliases))
        state = self._read()
        self._record(state, "UploadModel", request)
        self._save_models(state, models)
        self._write(state)
        return _DoneOperation(
            aiplatform_v1.UploadModelResponse(model=model.name, model_version_id=model.version_id)
        )

    def merge_version_aliases(self, request: Any) -> Any:
        """MergeVersionAliases: the aliases move to the version; "-alias" removes one."""
        from google.cloud import aiplatform_v1

        request = _wire(aiplatform_v1.MergeVersionAliasesRequest, request)
        target = self.get_model(aiplatform_v1.GetModelRequest(name=request.name))
        added = [a for a in request.version_aliases if not a.startswith("-")]
        removed = {a[1:] for a in request.version_aliases if a.startswith("-")}
        if _DEFAULT_ALIAS in removed:
            raise ValueError("the default alias can only move, not be removed")
        kept = [a for a in target.version_aliases if a not in removed]
        del target.version_aliases[:]
        target.version_aliases.extend(kept)
        models = self._move_aliases(self.models(), target, added)
        state = self._read()
        self._record(state, "MergeVersionAliases", request)
        self._save_models(state, models)
        self._write(state)
        return target

    @staticmethod
    def _move_aliases(models: list[Any], target: Any, aliases: list[str]) -> list[Any]:
        """`models` with `target` in its place (or last), holding `aliases`, which no other
        version of its Model keeps."""
        for alias in aliases:
            if alias not in target.version_aliases:
                target.version_aliases.append(alias)
        result = []
        for model in models:
            if version_key(model) == version_key(target):
                result.append(target)
                continue
            if model.name == target.name:
                kept = [a for a in model.version_aliases if a not in aliases]
                del model.version_aliases[:]
                model.version_aliases.extend(kept)
            result.append(model)
        if target not in result:
            result.append(target)
        return result


def version_key(model: Any) -> tuple[str, str]:
    """A Model version's (name, version id)."""
    return model.name, model.version_id


# The name the rehearsal reads the stand-in endpoint by.
StandInEndpointClient = StandInVertex


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

    from pipeline.vertex import serving_compat
    from pipeline.vertex.prediction import endpoint_body
    from taxifare_modules import features as f

    model = tf.saved_model.load(serving_path)
    trip = _sample_trip()
    body = json.loads(json.dumps({"instances": [trip]}, allow_nan=False))
    problems = serving_compat.check_instances(serving_path, body["instances"])
    if problems:
        raise RuntimeError("serving_default would refuse the JSON trip: " + "; ".join(problems))
    signature = model.signatures[f.SERVING_DEFAULT_SIGNATURE]
    _, spec = signature.structured_input_signature
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
    """Puts the stand-ins in place of the training job and the Vertex endpoint and models."""
    global FileUriFileSystem
    FileUriFileSystem = _file_uri_filesystem()  # registered with Beam by being defined

    from pipeline.vertex import pusher

    compat.replace_tfx_vertex_job_client(_offline_job_client)
    compat.replace_tfx_vertex_training_launch(run_training_job)
    pusher.endpoint_client = lambda region: StandInVertex(os.environ[ENDPOINT_FILE_ENV])
    pusher.model_client = lambda region: StandInVertex(os.environ[ENDPOINT_FILE_ENV])


def main() -> None:
    """`python -m pipeline.vertex.stand_ins <kubeflow_v2_run_executor arguments>`."""
    from absl import app
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as entry

    install()
    app.run(entry.main, flags_parser=compat.kubeflow_v2_executor_flags_parser())


if __name__ == "__main__":
    main()
