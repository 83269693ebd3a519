"""The Vertex Pusher deploys a blessed model once: the real executor against the stand-in
Vertex services (EndpointService and ModelService on a JSON file, every request parsed as its
`aiplatform_v1` type and sent through the wire format), and once through the real GAPIC
clients to the same services on loopback.

Push A: one Model, one version, deployed. Push A again (or a copy of it): no upload, no
deploy, the PushedModel says it is already serving, the logging is still applied. Push B: a
new version of the same Model, the aliases moved, deployed, the older one undeployed but for
`keep_previous`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from tfx.types import standard_artifacts
from tfx.utils import json_utils

from pipeline.config import load_config
from pipeline.names import ALREADY_SERVING_PROPERTY
from pipeline.vertex import pusher
from pipeline.vertex.component_config import pusher_custom_config
from pipeline.vertex.stand_ins import StandInVertex

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"
KEY = "projects/my-gcp-project/locations/us-central1/keyRings/ml/cryptoKeys/taxifare"
PARENT = "projects/my-gcp-project/locations/us-central1"
MODEL = f"{PARENT}/models/1"
BLESSED, DEFAULT = "blessed", "default"


def _config(*overrides: str):
    return load_config(VERTEX, [f"vertex.encryption_key={KEY}", *overrides])


def _saved_model_pb(*ops: str) -> bytes:
    """A SavedModel proto whose serve graph holds one node per op (the Pusher's serving check
    reads the graph; the stand-in does not call the model here)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    meta = saved.meta_graphs.add()
    meta.meta_info_def.tags.append("serve")
    for i, op in enumerate(ops):
        meta.graph_def.node.add(name=f"node_{i}", op=op)
    return saved.SerializeToString()


def _write_model(root: Path, weights: bytes, ops: tuple[str, ...] = ("NoOp",)) -> Path:
    """A model artifact folder with a SavedModel's files."""
    serving = root / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "assets").mkdir()
    (serving / "saved_model.pb").write_bytes(_saved_model_pb(*ops))
    # As TensorFlow's index holds a checksum of each variable's bytes.
    checksum = hashlib.sha256(weights).digest()[:4]
    (serving / "variables" / "variables.index").write_bytes(b"index of fare/kernel " + checksum)
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    (serving / "assets" / "vocab_payment_type").write_text("Cash\nCredit Card\n")
    return root


class _Pushes:
    """Runs the real Vertex Pusher executor, one push after another, on one stand-in."""

    def __init__(self, tmp_path: Path, monkeypatch, vertex=None) -> None:
        self.tmp = tmp_path
        self.count = 0
        self.vertex = vertex or StandInVertex(str(tmp_path / "endpoint.json"), call_model=False)
        monkeypatch.setattr(pusher, "endpoint_client", lambda region: self.vertex)
        monkeypatch.setattr(pusher, "model_client", lambda region: self.vertex)

    def push(self, model_dir: Path, cfg=None, blessed: bool = True):
        cfg = cfg or _config()
        self.count += 1
        model = standard_artifacts.Model()
        model.uri = str(model_dir)
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(self.tmp / f"blessing-{self.count}")
        blessing.set_int_custom_property("blessed", int(blessed))
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(self.tmp / f"pushed-{self.count}")
        custom = pusher_custom_config(cfg.vertex, cfg.name)
        pusher.Executor().Do(
            {"model": [model], "model_blessing": [blessing]},
            {"pushed_model": [pushed]},
            {"custom_config": json_utils.dumps(custom)},
        )
        return pushed

    def calls(self, method: str) -> list:
        return self.vertex.calls(method)


@pytest.fixture()
def models(tmp_path):
    a = _write_model(tmp_path / "trainer-a", b"weights of model A" * 4)
    b = _write_model(tmp_path / "trainer-b", b"weights of model B" * 4)
    return a, b


def test_first_push_makes_one_model_with_one_version_and_deploys_it(tmp_path, monkeypatch, models):
    from google.cloud import aiplatform_v1

    pushes = _Pushes(tmp_path, monkeypatch)
    pushed = pushes.push(models[0])

    (created,) = pushes.calls("CreateEndpoint")
    assert created.parent == PARENT
    assert created.endpoint.display_name == "taxifare"
    assert dict(created.endpoint.labels) == {"app": "taxifare", "taxifare-pipeline": "taxifare"}
    assert created.endpoint.encryption_spec.kms_key_name == KEY

    (upload,) = pushes.calls("UploadModel")
    assert isinstance(upload, aiplatform_v1.UploadModelRequest)
    assert upload.parent == PARENT and upload.parent_model == ""
    assert upload.model.display_name == "taxifare"
    assert upload.model.encryption_spec.kms_key_name == KEY
    assert upload.model.labels["app"] == "taxifare"
    assert upload.model.labels["taxifare-pipeline"] == "taxifare"
    digest = pusher.model_digest(str(models[0] / "Format-Serving"))
    assert upload.model.labels[pusher.DIGEST_LABEL] == digest[:32]
    assert digest in upload.model.version_description
    # Uploaded from the Pusher's own copy, as TFX does.
    assert upload.model.artifact_uri == pushed.uri
    assert (Path(pushed.uri) / "saved_model.pb").is_file()
    assert sorted(upload.model.version_aliases) == [BLESSED, DEFAULT]

    (version,) = pushes.vertex.models()
    assert (version.name, version.version_id) == (MODEL, "1")
    assert sorted(version.version_aliases) == [BLESSED, DEFAULT]

    (deploy,) = pushes.calls("DeployModel")
    assert deploy.deployed_model.model == f"{MODEL}@1"
    resources = deploy.deployed_model.dedicated_resources
    assert resources.machine_spec.machine_type == "n1-standard-2"
    assert (resources.min_replica_count, resources.max_replica_count) == (1, 3)
    assert dict(deploy.traffic_split) == {"0": 100}

    endpoint = pushes.vertex.load()
    assert [m.id for m in endpoint.deployed_models] == ["1"]
    assert dict(endpoint.traffic_split) == {"1": 100}
    assert endpoint.predict_request_response_logging_config.enabled
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_destination") == f"{MODEL}@1"


def test_the_same_model_again_is_neither_uploaded_nor_deployed(tmp_path, monkeypatch, models):
    pushes = _Pushes(tmp_path, monkeypatch)
    pushes.push(models[0])
    # The re-run's settings changed the logging only.
    again = pushes.push(models[0], _config("vertex.endpoint.request_logging.sampling_rate=0.5"))

    assert len(pushes.calls("UploadModel")) == 1
    assert len(pushes.calls("DeployModel")) == 1
    assert len(pushes.calls("CreateEndpoint")) == 1
    assert again.get_int_custom_property("pushed") == 0
    assert again.get_string_custom_property(ALREADY_SERVING_PROPERTY) == f"{MODEL}@1"
    assert not os.path.exists(again.uri)  # nothing archived: nothing pushed
    endpoint = pushes.vertex.load()
    assert [m.id for m in endpoint.deployed_models] == ["1"]
    assert dict(endpoint.traffic_split) == {"1": 100}
    # Logging still applied on the push that deployed nothing.
    assert endpoint.predict_request_response_logging_config.sampling_rate == 0.5
    assert len(pushes.calls("UpdateEndpoint")) == 2

    # A copy of the same SavedModel at another URI is the same model.
    copy = tmp_path / "trainer-a-copy"
    shutil.copytree(models[0], copy)
    third = pushes.push(copy)
    assert len(pushes.calls("UploadModel")) == 1 and len(pushes.calls("DeployModel")) == 1
    assert third.get_string_custom_property(ALREADY_SERVING_PROPERTY) == f"{MODEL}@1"


@pytest.mark.parametrize(("keep_previous", "deployed"), [(0, ["2"]), (1, ["1", "2"])])
def test_a_new_model_is_a_new_version_of_the_same_model(
    tmp_path, monkeypatch, models, keep_previous, deployed
):
    pushes = _Pushes(tmp_path, monkeypatch)
    cfg = _config(f"vertex.endpoint.keep_previous={keep_previous}")
    pushes.push(models[0], cfg)
    pushed = pushes.push(models[1], cfg)

    first, second = pushes.calls("UploadModel")
    assert second.parent_model == MODEL
    assert second.model.encryption_spec.kms_key_name == KEY
    assert second.model.labels[pusher.DIGEST_LABEL] != first.model.labels[pusher.DIGEST_LABEL]
    v1, v2 = pushes.vertex.models()
    assert v1.name == v2.name == MODEL
    assert (v1.version_id, v2.version_id) == ("1", "2")
    # The aliases moved to the new version.
    assert list(v1.version_aliases) == []
    assert sorted(v2.version_aliases) == [BLESSED, DEFAULT]

    assert [d.deployed_model.model for d in pushes.calls("DeployModel")] == [
        f"{MODEL}@1",
        f"{MODEL}@2",
    ]
    endpoint = pushes.vertex.load()
    assert sorted(m.id for m in endpoint.deployed_models) == deployed
    assert dict(endpoint.traffic_split) == {"2": 100}
    undeployed = [u.deployed_model_id for u in pushes.calls("UndeployModel")]
    assert undeployed == ([] if keep_previous else ["1"])
    assert pushed.get_string_custom_property("pushed_destination") == f"{MODEL}@2"
    assert pushed.get_string_custom_property("pushed_version") == "2"


def test_a_kept_model_blessed_again_gets_the_traffic_back_without_a_deploy(
    tmp_path, monkeypatch, models
):
    pushes = _Pushes(tmp_path, monkeypatch)
    pushes.push(models[0])
    pushes.push(models[1])  # keep_previous 1: A stays deployed, without traffic
    back = pushes.push(models[0])

    assert len(pushes.calls("UploadModel")) == 2 and len(pushes.calls("DeployModel")) == 2
    endpoint = pushes.vertex.load()
    assert dict(endpoint.traffic_split) == {"1": 100}
    assert back.get_int_custom_property("pushed") == 1
    assert back.get_string_custom_property("pushed_destination") == f"{MODEL}@1"
    v1, v2 = pushes.vertex.models()
    assert sorted(v1.version_aliases) == [BLESSED, DEFAULT] and list(v2.version_aliases) == []


def test_an_uploaded_version_whose_deploy_failed_is_deployed_without_a_second_upload(
    tmp_path, monkeypatch, models
):
    vertex = StandInVertex(str(tmp_path / "endpoint.json"), call_model=False)
    pushes = _Pushes(tmp_path, monkeypatch, vertex)
    real_deploy = vertex.deploy_model

    def failing_deploy(request):
        raise RuntimeError("quota exceeded")

    monkeypatch.setattr(vertex, "deploy_model", failing_deploy)
    with pytest.raises(RuntimeError, match="quota exceeded"):
        pushes.push(models[0])
    monkeypatch.setattr(vertex, "deploy_model", real_deploy)
    pushed = pushes.push(models[0])
    assert len(pushes.calls("UploadModel")) == 1
    (deploy,) = pushes.calls("DeployModel")
    assert deploy.deployed_model.model == f"{MODEL}@1"
    assert pushed.get_int_custom_property("pushed") == 1


def test_an_unblessed_model_touches_nothing(tmp_path, monkeypatch, models):
    pushes = _Pushes(tmp_path, monkeypatch)
    pushed = pushes.push(models[0], blessed=False)
    assert pushed.get_int_custom_property("pushed") == 0
    assert not (tmp_path / "endpoint.json").exists()


def test_the_serving_args_are_model_deploy_parameters():
    from google.cloud import aiplatform

    accepted = set(inspect.signature(aiplatform.Model.deploy).parameters)
    assert pusher._SERVING_ARGS - {"project_id", "project", "endpoint_name"} <= accepted
    cfg = _config()
    custom = pusher_custom_config(cfg.vertex, cfg.name)
    target = pusher.PushTarget.from_custom_config(custom)
    assert (target.project, target.region, target.endpoint_name) == (
        "my-gcp-project",
        "us-central1",
        "taxifare",
    )
    assert target.encryption_key == KEY and target.model_display_name == "taxifare"
    bad = json.loads(json.dumps(custom))
    bad["ai_platform_serving_args"]["min_replicas"] = 2
    with pytest.raises(ValueError, match=r"unknown keys \['min_replicas'\]"):
        pusher.PushTarget.from_custom_config(bad)
    # Without a CMEK key the requests carry no encryption spec at all.
    plain = load_config(VERTEX)
    target = pusher.PushTarget.from_custom_config(pusher_custom_config(plain.vertex, plain.name))
    request = pusher.upload_request(target, "gs://b/m", "0" * 64, None)
    assert "encryption_spec" not in request.model


# The stand-in behind the real GAPIC clients: every call goes through gRPC on loopback.
_SERVICES = {
    "google.cloud.aiplatform.v1.EndpointService": {
        "ListEndpoints": ("ListEndpointsRequest", "ListEndpointsResponse", "endpoints"),
        "CreateEndpoint": ("CreateEndpointRequest", "Endpoint", None),
        "UpdateEndpoint": ("UpdateEndpointRequest", "Endpoint", None),
        "DeployModel": ("DeployModelRequest", "DeployModelResponse", None),
        "UndeployModel": ("UndeployModelRequest", "UndeployModelResponse", None),
    },
    "google.cloud.aiplatform.v1.ModelService": {
        "ListModels": ("ListModelsRequest", "ListModelsResponse", "models"),
        "ListModelVersions": ("ListModelVersionsRequest", "ListModelVersionsResponse", "models"),
        "GetModel": ("GetModelRequest", "Model", None),
        "UploadModel": ("UploadModelRequest", "UploadModelResponse", None),
        "MergeVersionAliases": ("MergeVersionAliasesRequest", "Model", None),
    },
}
_LONG_RUNNING = {"CreateEndpoint", "DeployModel", "UndeployModel", "UploadModel"}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _handler(vertex: StandInVertex, method: str, request_type, response_type, listed):
    from google.api_core import exceptions
    from google.longrunning import operations_pb2
    from google.protobuf import any_pb2

    def call(request, context):
        try:
            result = getattr(vertex, _snake(method))(request)
        except exceptions.NotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        if listed:
            return response_type(**{listed: list(result)})
        if method not in _LONG_RUNNING:
            return result
        packed = any_pb2.Any()
        packed.Pack(response_type.pb(result.result()))
        # Done at once: the client's operation needs no polling.
        return operations_pb2.Operation(name=f"{PARENT}/operations/1", done=True, response=packed)

    serialize = (
        (lambda op: op.SerializeToString()) if method in _LONG_RUNNING else response_type.serialize
    )
    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=request_type.deserialize, response_serializer=serialize
    )


@pytest.fixture()
def loopback(tmp_path):
    from google.cloud import aiplatform_v1

    vertex = StandInVertex(str(tmp_path / "endpoint.json"), call_model=False)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    for service, methods in _SERVICES.items():
        handlers = {
            method: _handler(
                vertex,
                method,
                getattr(aiplatform_v1, request),
                getattr(aiplatform_v1, response),
                listed,
            )
            for method, (request, response, listed) in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield vertex, port
    server.stop(grace=None)


def test_the_push_through_the_real_vertex_clients(tmp_path, monkeypatch, models, loopback):
    from google.cloud import aiplatform_v1
    from google.cloud.aiplatform_v1.services.endpoint_service.transports import (
        EndpointServiceGrpcTransport,
    )
    from google.cloud.aiplatform_v1.services.model_service.transports import (
        ModelServiceGrpcTransport,
    )

    vertex, port = loopback
    pushes = _Pushes(tmp_path, monkeypatch, vertex)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    monkeypatch.setattr(
        pusher,
        "endpoint_client",
        lambda region: aiplatform_v1.EndpointServiceClient(
            transport=EndpointServiceGrpcTransport(channel=channel)
        ),
    )
    monkeypatch.setattr(
        pusher,
        "model_client",
        lambda region: aiplatform_v1.ModelServiceClient(
            transport=ModelServiceGrpcTransport(channel=channel)
        ),
    )
    first = pushes.push(models[0])
    assert first.get_string_custom_property("pushed_destination") == f"{MODEL}@1"
    again = pushes.push(models[0])
    assert again.get_string_custom_property(ALREADY_SERVING_PROPERTY) == f"{MODEL}@1"
    pushes.push(models[1])
    assert len(vertex.calls("UploadModel")) == 2 and len(vertex.calls("DeployModel")) == 2
    assert [(m.name, m.version_id) for m in vertex.models()] == [(MODEL, "1"), (MODEL, "2")]
    assert dict(vertex.load().traffic_split) == {"2": 100}


def test_the_digest_tells_real_saved_models_apart_by_their_weights(tmp_path):
    import tensorflow as tf

    def save(value: float, path: Path) -> str:
        module = tf.Module()
        module.weight = tf.Variable([value, 0.0, 0.0])
        module.fare = tf.function(
            lambda x: x * module.weight,
            input_signature=[tf.TensorSpec([3], tf.float32)],
            autograph=False,
        )
        tf.saved_model.save(module, str(path))
        return pusher.model_digest(str(path))

    one, two = save(1.0, tmp_path / "one"), save(2.0, tmp_path / "two")
    assert one != two
    # The weights count through the variables index (the data shards are not read): it holds
    # each variable's checksum.
    index = Path("variables", "variables.index")
    assert (tmp_path / "one" / index).read_bytes() != (tmp_path / "two" / index).read_bytes()
    shutil.copytree(tmp_path / "one", tmp_path / "copy")
    assert pusher.model_digest(str(tmp_path / "copy")) == one
    with pytest.raises(FileNotFoundError, match="saved_model.pb is missing"):
        pusher.model_digest(str(tmp_path))


@pytest.mark.parametrize(
    ("current", "percentage", "split"),
    [
        ({}, 100, {"0": 100}),
        ({"1": 100}, 100, {"0": 100}),
        ({"1": 100}, 20, {"1": 80, "0": 20}),
        ({"1": 50, "2": 50}, 25, {"1": 38, "2": 37, "0": 25}),
    ],
)
def test_the_new_model_takes_its_share_and_the_others_keep_their_proportions(
    current, percentage, split
):
    assert pusher.new_traffic_split(current, percentage) == split
    assert sum(split.values()) == 100


def test_a_traffic_percentage_out_of_range_is_refused():
    with pytest.raises(ValueError, match="traffic_percentage must be 1 to 100, not 0"):
        pusher.new_traffic_split({"1": 100}, 0)


def test_the_stand_in_applies_vertex_rules_and_refuses_a_file_of_another_format(tmp_path):
    from google.cloud import aiplatform_v1

    vertex = StandInVertex(str(tmp_path / "endpoint.json"), call_model=False)
    model = aiplatform_v1.Model(
        display_name="taxifare", artifact_uri="gs://b/m", container_spec={"image_uri": "i"}
    )
    too_long = aiplatform_v1.Model(model, labels={pusher.DIGEST_LABEL: "0" * 64})
    with pytest.raises(ValueError, match="not a valid Vertex label"):
        vertex.upload_model(aiplatform_v1.UploadModelRequest(parent=PARENT, model=too_long))
    numeric = aiplatform_v1.Model(model, version_aliases=["2"])
    with pytest.raises(ValueError, match="version aliases"):
        vertex.upload_model(aiplatform_v1.UploadModelRequest(parent=PARENT, model=numeric))
    assert vertex.models() == [] and vertex.calls("UploadModel") == []

    old = tmp_path / "old.json"
    old.write_text(aiplatform_v1.Endpoint.to_json(aiplatform_v1.Endpoint(display_name="t")))
    with pytest.raises(ValueError, match="not a stand-in Vertex file"):
        StandInVertex(str(old)).load()


def test_a_model_the_serving_image_cannot_load_is_not_uploaded(tmp_path, monkeypatch):
    # GlobalIterId is registered in TensorFlow 2.16, not in the endpoint's 2.15 image: the
    # deploy would fail after the upload (or the first request would); the push stops first.
    from pipeline.vertex.serving_compat import ServingCompatError

    pushes = _Pushes(tmp_path, monkeypatch)
    model = _write_model(tmp_path / "trainer-new-op", b"weights" * 4, ops=("GlobalIterId",))
    with pytest.raises(ServingCompatError, match="GlobalIterId"):
        pushes.push(model)
    assert not pushes.vertex.calls("UploadModel") and not pushes.vertex.calls("DeployModel")
    assert not pushes.vertex.calls("CreateEndpoint")
