"""The Vertex Pusher turns on the endpoint's request-response logging, checked offline.

The compiled spec must carry the configured logging and name an executor that imports; the
patch is checked on the real Vertex client library's request objects and on the wire, with
the real GAPIC client talking to an EndpointService on loopback (the deploy itself and a
real endpoint need Google Cloud and are not run here).
"""

from __future__ import annotations

import importlib
import json
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from pipeline import dag
from pipeline.config import ConfigError, load_config
from pipeline.vertex import pusher
from pipeline.vertex.compiler import compile_pipeline

REPO = Path(__file__).resolve().parents[2]
VERTEX = REPO / "configs" / "vertex.yaml"
PROJECT, REGION = "my-gcp-project", "us-central1"
ENDPOINT = f"projects/{PROJECT}/locations/{REGION}/endpoints/4242"
TABLE = "bq://my-gcp-project.serving_logs.requests"
_SERVICE = "google.cloud.aiplatform.v1.EndpointService"


def _pusher_task(job: dict) -> tuple[dict, list[str]]:
    task = job["pipelineSpec"]["root"]["dag"]["tasks"][dag.PUSHER_ID]
    params = task["inputs"]["parameters"]
    custom = json.loads(params["custom_config"]["runtimeValue"]["constantValue"]["stringValue"])
    label = task["componentRef"]["name"]
    executor = job["pipelineSpec"]["components"][label]["executorLabel"]
    args = job["pipelineSpec"]["deploymentSpec"]["executors"][executor]["container"]["args"]
    return custom, args


def test_config_defaults_and_checks():
    logging = load_config(VERTEX).vertex.endpoint.request_logging
    assert (logging.enabled, logging.sampling_rate, logging.bigquery_table) == (True, 0.1, None)
    for override, message in (
        ("sampling_rate=0", "greater than 0"),
        ("sampling_rate=1.5", "less than or equal to 1"),
        ("bigquery_table=my-gcp-project.ds.t", "bq://project.dataset.table"),
        ("bigquery_table=bq://my-gcp-project.ds", "bq://project.dataset.table"),
        ("sample=0.5", "unknown key"),
    ):
        with pytest.raises(ConfigError, match=message) as error:
            load_config(VERTEX, [f"vertex.endpoint.request_logging.{override}"])
        assert "vertex.endpoint.request_logging." in str(error.value)


def test_compiled_pusher_carries_the_logging_and_an_importable_executor(tmp_path):
    cfg = load_config(
        VERTEX,
        [
            "vertex.endpoint.request_logging.sampling_rate=0.25",
            f"vertex.endpoint.request_logging.bigquery_table={TABLE}",
        ],
    )
    custom, args = _pusher_task(compile_pipeline(cfg, tmp_path / "p.json"))
    assert custom[pusher.REQUEST_LOGGING_KEY] == {
        "enabled": True,
        "sampling_rate": 0.25,
        "bigquery_table": TABLE,
    }
    # TFX's own keys are still there for the deploy.
    assert custom["ai_platform_serving_args"]["endpoint_name"] == "taxifare"
    path = args[args.index("--executor_class_path") + 1]
    assert path == "pipeline.vertex.pusher.Executor"
    module, name = path.rsplit(".", 1)
    executor = getattr(importlib.import_module(module), name)
    from tfx.extensions.google_cloud_ai_platform.pusher import executor as tfx_executor

    assert issubclass(executor, tfx_executor.Executor)

    off = load_config(VERTEX, ["vertex.endpoint.request_logging.enabled=false"])
    custom, _ = _pusher_task(compile_pipeline(off, tmp_path / "off.json"))
    assert custom[pusher.REQUEST_LOGGING_KEY]["enabled"] is False


def test_update_request_sets_only_the_logging_config():
    from google.cloud import aiplatform_v1

    settings = {"enabled": True, "sampling_rate": 0.25, "bigquery_table": TABLE}
    request = pusher.update_logging_request(ENDPOINT, pusher.logging_config(settings, PROJECT))
    assert isinstance(request, aiplatform_v1.UpdateEndpointRequest)
    assert list(request.update_mask.paths) == ["predict_request_response_logging_config"]
    body = json.loads(aiplatform_v1.UpdateEndpointRequest.to_json(request))
    assert body["endpoint"]["name"] == ENDPOINT
    assert body["endpoint"]["predictRequestResponseLoggingConfig"] == {
        "enabled": True,
        "samplingRate": 0.25,
        "bigqueryDestination": {"outputUri": TABLE},
    }
    # No other field of the endpoint is set (the mask keeps Vertex from reading them anyway).
    assert not body["endpoint"].get("trafficSplit") and not body["endpoint"].get("displayName")


def test_default_destination_is_the_project_or_the_table_in_use():
    settings = {"enabled": True, "sampling_rate": 0.1, "bigquery_table": None}
    fresh = pusher.logging_config(settings, PROJECT)
    assert fresh.bigquery_destination.output_uri == f"bq://{PROJECT}"
    existing = f"bq://{PROJECT}.logging_taxifare_4242.request_response_logging"
    kept = pusher.logging_config(settings, PROJECT, current_table=existing)
    assert kept.bigquery_destination.output_uri == existing
    off = pusher.logging_config({**settings, "enabled": False}, PROJECT)
    assert not off.enabled and not off.bigquery_destination.output_uri


class _EndpointService:
    """An EndpointService on loopback holding endpoints, recording what it is sent."""

    def __init__(self, endpoints: list) -> None:
        from google.cloud import aiplatform_v1

        self.endpoints = {e.name: e for e in endpoints}
        self.list_requests: list = []
        self.update_requests: list = []
        self.undeploy_requests: list = []
        self._lock = threading.Lock()
        handlers = {
            "ListEndpoints": grpc.unary_unary_rpc_method_handler(
                self._list,
                request_deserializer=aiplatform_v1.ListEndpointsRequest.deserialize,
                response_serializer=aiplatform_v1.ListEndpointsResponse.serialize,
            ),
            "UpdateEndpoint": grpc.unary_unary_rpc_method_handler(
                self._update,
                request_deserializer=aiplatform_v1.UpdateEndpointRequest.deserialize,
                response_serializer=aiplatform_v1.Endpoint.serialize,
            ),
            "UndeployModel": grpc.unary_unary_rpc_method_handler(
                self._undeploy,
                request_deserializer=aiplatform_v1.UndeployModelRequest.deserialize,
                response_serializer=lambda op: op.SerializeToString(),
            ),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICE, handlers),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _list(self, request, context):
        from google.cloud import aiplatform_v1

        with self._lock:
            self.list_requests.append(request)
            name = request.filter.split('"')[1]
            found = [e for e in self.endpoints.values() if e.display_name == name]
        return aiplatform_v1.ListEndpointsResponse(endpoints=found)

    def _update(self, request, context):
        from google.cloud import aiplatform_v1

        with self._lock:
            self.update_requests.append(request)
            current = self.endpoints[request.endpoint.name]
            # Apply the masked fields only, as Vertex does.
            merged = aiplatform_v1.Endpoint(current)
            for path in request.update_mask.paths:
                setattr(merged, path, getattr(request.endpoint, path))
            self.endpoints[merged.name] = merged
        return merged

    def _undeploy(self, request, context):
        from google.cloud import aiplatform_v1
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2

        with self._lock:
            self.undeploy_requests.append(request)
            current = aiplatform_v1.Endpoint(self.endpoints[request.endpoint])
            if current.traffic_split.get(request.deployed_model_id):
                # As Vertex refuses it: a model with traffic needs a new split first.
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "model has traffic")
            kept = [m for m in current.deployed_models if m.id != request.deployed_model_id]
            del current.deployed_models[:]
            current.deployed_models.extend(kept)
            self.endpoints[current.name] = current
        response = any_pb2.Any()
        response.Pack(aiplatform_v1.UndeployModelResponse.pb(aiplatform_v1.UndeployModelResponse()))
        # Done at once: the client's operation needs no polling.
        return operations_pb2.Operation(
            name=f"{current.name}/operations/1", done=True, response=response
        )

    def client(self):
        from google.cloud import aiplatform_v1
        from google.cloud.aiplatform_v1.services.endpoint_service.transports import (
            EndpointServiceGrpcTransport,
        )

        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return aiplatform_v1.EndpointServiceClient(
            transport=EndpointServiceGrpcTransport(channel=channel)
        )


@pytest.fixture()
def service():
    from google.cloud import aiplatform_v1

    endpoint = aiplatform_v1.Endpoint(
        name=ENDPOINT, display_name="taxifare", traffic_split={"777": 100}
    )
    other = aiplatform_v1.Endpoint(
        name=ENDPOINT.replace("4242", "99"), display_name="other", traffic_split={"5": 100}
    )
    svc = _EndpointService([endpoint, other])
    yield svc
    svc.server.stop(grace=None)


def test_apply_turns_logging_on_through_the_vertex_client(service):
    settings = {"enabled": True, "sampling_rate": 0.25, "bigquery_table": TABLE}
    updated = pusher.apply_request_logging(service.client(), PROJECT, REGION, "taxifare", settings)
    (listed,) = service.list_requests
    assert listed.parent == f"projects/{PROJECT}/locations/{REGION}"
    assert listed.filter == 'display_name="taxifare"'
    (request,) = service.update_requests
    assert request.endpoint.name == ENDPOINT
    assert list(request.update_mask.paths) == ["predict_request_response_logging_config"]
    config = service.endpoints[ENDPOINT].predict_request_response_logging_config
    assert config.enabled and config.sampling_rate == 0.25
    assert config.bigquery_destination.output_uri == TABLE
    assert updated.predict_request_response_logging_config == config
    # The traffic split survived the patch; the other endpoint was not touched.
    assert dict(service.endpoints[ENDPOINT].traffic_split) == {"777": 100}
    other = service.endpoints[ENDPOINT.replace("4242", "99")]
    assert not other.predict_request_response_logging_config.enabled

    # A second push with the same settings sends no update.
    pusher.apply_request_logging(service.client(), PROJECT, REGION, "taxifare", settings)
    assert len(service.update_requests) == 1
    # Turned off by the config: the endpoint stops logging.
    pusher.apply_request_logging(
        service.client(), PROJECT, REGION, "taxifare", {**settings, "enabled": False}
    )
    assert not service.endpoints[ENDPOINT].predict_request_response_logging_config.enabled


def test_apply_without_the_endpoint_says_so(service):
    settings = {"enabled": True, "sampling_rate": 0.1, "bigquery_table": None}
    with pytest.raises(RuntimeError, match="no Vertex endpoint named 'nope'"):
        pusher.apply_request_logging(service.client(), PROJECT, REGION, "nope", settings)
    assert service.update_requests == []
