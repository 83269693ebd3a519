"""The gRPC adapter: TF Serving's `PredictionService` (Predict, GetModelMetadata) and
`ModelService` (GetModelStatus) over the predict core, with `tensorflow-serving-api`'s
protos on grpcio's asyncio server.

It runs in the REST server's process and on its event loop, over the same predict core, so
both protocols share one batcher, one set of model versions and one request log: a call is
decoded and validated on the loop, then awaits its share of a batched model call exactly as
a REST request does (`PredictCore.predict`). No thread per call: calls that arrive while the
model is busy queue on the loop and share the next model call, which is what lets gRPC
throughput grow with concurrency. At most `grpc_max_calls` calls are in progress at once per
process; more are refused with RESOURCE_EXHAUSTED (grpcio's answer at that limit).

Errors use TF Serving's status codes: NOT_FOUND for an unknown model or version,
INVALID_ARGUMENT for bad input, UNAVAILABLE while nothing is loaded (or while stopping),
RESOURCE_EXHAUSTED for a message over `max_body_bytes` (grpcio refuses it before it reaches
us), INTERNAL for a failure of the server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.serving.core import PredictCore
from pipeline.serving.tensors import fares_tensor, parse_tensor_request
from pipeline.serving.validation import RequestError, unknown_label
from pipeline.serving.versions import STATE_AVAILABLE, STATE_END, STATE_LOADING, STATE_START
from taxifare_modules import features as f

_LOG = logging.getLogger(__name__)

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
_STATES = {
    STATE_START: get_model_status_pb2.ModelVersionStatus.START,
    STATE_LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    STATE_AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    STATE_END: get_model_status_pb2.ModelVersionStatus.END,
}
_ERROR_CODES = {"OK": 0, "UNKNOWN": 2}  # tensorflow.error.Code
_SIGNATURE_DEF_FIELD = "signature_def"
_REQUEST_ID_KEY = "x-request-id"
# A stop refuses new calls until none has come for this long (at most the second figure).
_QUIET_SECONDS = 0.2
_MAX_DRAIN_SECONDS = 2.0
_PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
_MODEL_SERVICE = "tensorflow.serving.ModelService"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code of an HTTP status, as TF Serving maps its errors."""
    return _CODES.get(status, grpc.StatusCode.UNKNOWN)


def _version(spec: Any) -> int | None:
    """The version a ModelSpec names, or None for the served one.

    Raises:
      RequestError: a version label: TF Serving's labels are names given to versions in its
        model config, and this server has none, so every label is unknown (400, TF
        Serving's answer and message for an unknown label).
    """
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value
    if choice == "version_label":
        raise unknown_label(spec.version_label)
    return None


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> None:
    """Ends the call with the error's status code and message (raises)."""
    await context.abort(grpc_code(error.status), error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService`: Predict and GetModelMetadata."""

    def __init__(self, core: PredictCore) -> None:
        self.core = core

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        core = self.core
        spec = request.model_spec
        try:
            version = _version(spec)
            core.resolve(spec.name, version)  # NOT_FOUND / UNAVAILABLE before decoding
            parsed = parse_tensor_request(
                spec.signature_name,
                request.inputs,
                core.config.max_instances,
                core.config.strict_examples,
                core.config.max_body_bytes,
            )
            unknown = set(request.output_filter) - {f.PREDICTION_KEY}
            if unknown:
                raise RequestError(
                    f"output_filter: unknown output(s) {sorted(unknown)}; the output is"
                    f" {f.PREDICTION_KEY!r}"
                )
            given = dict(context.invocation_metadata() or ()).get(_REQUEST_ID_KEY)
            request_id = given if given and _REQUEST_ID.match(given) else None
            prediction = await core.predict(
                parsed,
                spec.name,
                version,
                request_id,
                "grpc",
                # A call past its deadline or cancelled gets no answer: its instances are not
                # logged (a call the handler is cancelled in never returns here at all).
                delivered=lambda: (
                    not context.cancelled()
                    and ((left := context.time_remaining()) is None or left > 0)
                ),
            )
        except RequestError as e:
            await _abort(context, e)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = prediction.version
        response.model_spec.signature_name = parsed.signature_name
        model = core.versions.current
        rank = _output_rank(model, parsed.signature_name) if model is not None else 1
        response.outputs[f.PREDICTION_KEY].CopyFrom(
            fares_tensor(prediction.fares, rank, type(response.outputs[f.PREDICTION_KEY]))
        )
        return response

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = request.model_spec
        try:
            fields = list(request.metadata_field)
            if not fields:
                raise RequestError("metadata_field is empty; ask for 'signature_def'")
            for field in fields:
                if field != _SIGNATURE_DEF_FIELD:
                    raise RequestError(
                        f"metadata field {field!r} is not supported; ask for 'signature_def'"
                    )
            model = self.core.resolve(spec.name, _version(spec))
        except RequestError as e:
            await _abort(context, e)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in model.signature_defs.items():
            json_format.ParseDict(signature, signatures.signature_def[name])
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = model.version
        response.metadata[_SIGNATURE_DEF_FIELD].Pack(signatures)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: GetModelStatus."""

    def __init__(self, core: PredictCore) -> None:
        self.core = core

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = request.model_spec
        try:
            statuses = self.core.status_json(spec.name, _version(spec))["model_version_status"]
        except RequestError as e:
            await _abort(context, e)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add()
            entry.version = int(status["version"])
            entry.state = _STATES.get(
                status["state"], get_model_status_pb2.ModelVersionStatus.UNKNOWN
            )
            entry.status.error_code = _ERROR_CODES.get(status["status"]["error_code"], 2)
            entry.status.error_message = status["status"]["error_message"]
        return response


def _output_rank(model: Any, signature: str) -> int:
    """The rank of the fare output the signature declares (TF Serving answers its shape)."""
    outputs = model.signature_defs.get(signature, {}).get("outputs", {})
    dims = outputs.get(f.PREDICTION_KEY, {}).get("tensor_shape", {}).get("dim", [])
    return 2 if len(dims) == 2 else 1


class _Gate:
    """Whether the server is stopping, and when the last call came (for the drain)."""

    def __init__(self) -> None:
        self.stopping = False
        self.last_arrival = time.monotonic()


def _decoding(method: Any, request_cls: type, gate: _Gate) -> Any:
    """The handler of a unary method that decodes its request itself, so that bytes which are
    not the request message are INVALID_ARGUMENT (grpcio's own decoding answers them with an
    error code that blames the server); while stopping, every new call is UNAVAILABLE."""
    name = request_cls.DESCRIPTOR.full_name

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        gate.last_arrival = time.monotonic()
        if gate.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        try:
            request = request_cls.FromString(data)
        except DecodeError as e:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {e}"
            )
        return await method(request, context)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=_serialize
    )


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def _handlers(core: PredictCore, gate: _Gate) -> dict[str, dict[str, Any]]:
    """The methods served, by service: TF Serving's Predict, GetModelMetadata and
    GetModelStatus (other methods of its services answer UNIMPLEMENTED)."""
    prediction, models = PredictionService(core), ModelService(core)
    return {
        _PREDICTION_SERVICE: {
            "Predict": _decoding(prediction.Predict, predict_pb2.PredictRequest, gate),
            "GetModelMetadata": _decoding(
                prediction.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest, gate
            ),
        },
        _MODEL_SERVICE: {
            "GetModelStatus": _decoding(
                models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest, gate
            ),
        },
    }


class GrpcServer:
    """The running gRPC server; `await stop(grace)` stops it gracefully.

    grpcio's own stop cancels (CANCELLED) the calls that reached it but that the event loop
    had not yet taken up, a client's answer that blames nobody. So the stop first drains:
    every new call is refused UNAVAILABLE (what a client retries elsewhere) until none has
    come for `_QUIET_SECONDS` (at most `_MAX_DRAIN_SECONDS`), calls in progress go on, and
    only then does grpcio stop, giving those `grace` seconds.
    """

    def __init__(self, server: grpc.aio.Server, gate: _Gate) -> None:
        self.server = server
        self._gate = gate

    async def stop(self, grace: float | None) -> None:
        """Refuses new calls, drains those queued, then stops (in-progress calls get `grace`)."""
        gate = self._gate
        gate.stopping = True
        started = time.monotonic()
        limit = _MAX_DRAIN_SECONDS if grace is None else min(grace, _MAX_DRAIN_SECONDS)
        while True:
            now = time.monotonic()
            if now - gate.last_arrival >= _QUIET_SECONDS or now - started >= limit:
                break
            await asyncio.sleep(_QUIET_SECONDS / 4)
        await self.server.stop(grace)


async def start_grpc_server(core: PredictCore, host: str, port: int) -> tuple[GrpcServer, int]:
    """Starts the gRPC services on `host:port`, on the running event loop.

    Returns:
      The server (`await server.stop(grace)` stops it, giving calls in progress `grace`
      seconds) and the bound port.

    Raises:
      RuntimeError: the port cannot be bound.
    """
    config = core.config
    limit = config.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 4 * 1024 * 1024)),
            # grpcio binds with SO_REUSEPORT by default, so a second server on a taken port
            # would silently split the calls with the first. Only the workers of one
            # `--workers N` server share the port (the command checked it was free).
            ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
        ],
        maximum_concurrent_rpcs=config.grpc_max_calls,
    )
    gate = _Gate()
    # Registered methods take grpcio's fast path (a generic handler is looked up per call).
    for service, methods in _handlers(core, gate).items():
        server.add_registered_method_handlers(service, methods)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise RuntimeError(f"cannot listen for gRPC on {address}: the port is taken")
    await server.start()
    _LOG.info("serving gRPC on %s", address.rsplit(":", 1)[0] + f":{bound}")
    return GrpcServer(server, gate), bound
