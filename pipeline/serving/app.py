"""The REST adapter: TF Serving's REST API over the predict core, as one ASGI application.

URLs (as TF Serving's), `{name}` being the configured model name:
- `GET /v1/models/{name}[/versions/{v}]`: version status.
- `.../labels/{label}` in place of `.../versions/{v}`: 400, as TF Serving answers a label
  its model config does not define (this server defines none).
- `GET /v1/models/{name}[/versions/{v}]/metadata`: the signature defs.
- `POST /v1/models/{name}[/versions/{v}]:predict`: predictions.
- `GET /healthz`: 200 once a version is served, else 503 (for load balancers).
- `GET /v1/models/{name}/stats`: counters of the server (not in TF Serving).

Every answer is JSON; every error is `{"error": "..."}`: 400 for a bad request, 404 for an
unknown model, version or URL, 405 (with `Allow`) for a wrong method, 413 for a body over the
limit, 500 for a failure of the server, 503 while no version is loaded or while stopping.
The errors of the HTTP layer itself (431, 408, a malformed request) come from
`pipeline.serving.http`, in the same shape.

The application is a plain ASGI callable: the routes are the table `_ROUTES`, matched once
per request, with no framework in between (a framework's routing, middleware and request
objects cost a sizeable share of a small request's CPU time).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import types
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from pipeline.serving.config import ServeConfig
from pipeline.serving.core import PredictCore, describe_error, new_request_id
from pipeline.serving.http import CONNECTED_EXTENSION
from pipeline.serving.request_log import RequestLog, recover_request_logs
from pipeline.serving.validation import (
    RequestError,
    parse_json_body,
    parse_predict_request,
    unknown_label,
)
from pipeline.serving.versions import LoadedModel, load_model

_LOG = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
MODEL_VERSION_HEADER = "X-Model-Version"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()
_MODEL_VERSION_NAME = MODEL_VERSION_HEADER.lower().encode()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MODELS_PREFIX = "/v1/models/"
# {name}[/versions/{v}|/labels/{label}][/metadata|/stats][:verb]
_MODEL_URL = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<resource>metadata|stats))?(?::(?P<verb>[^/:]+))?$"
)
# A body over the limit is still read (and dropped) up to this many bytes, so the client
# gets the 413 instead of a connection reset while it is still sending.
_DRAIN_LIMIT = 32 * 1024 * 1024
JSON_CONTENT_TYPE = b"application/json"
# JSON arrays and objects a predict body may hold per allowed instance: an instance object,
# and a list or a {"b64": ...} object around each of its values, with room to spare. A body
# with more is refused before any Python object is made of it: half a million `[]` in 1.5 MB
# are cheap to send and hold the event loop for seconds to decode.
_CONTAINERS_PER_INSTANCE = 64
_CONTAINERS_BASE = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_bytes(content: Any) -> bytes:
    """JSON via orjson; float32 numpy values are written in their shortest exact form."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str) -> bytes:
    """`{"error": message}`; text that is not valid Unicode is escaped, never a failure."""
    return json_bytes({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")})


@dataclasses.dataclass
class Answer:
    """A response: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)


class ClientGoneError(Exception):
    """The client disconnected before sending the whole request."""


@dataclasses.dataclass
class _Request:
    """What a route handler gets."""

    scope: dict
    receive: Callable[[], Awaitable[dict]]
    name: str = ""
    version: str | None = None


def _header(scope: dict, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


async def _receive_body(request: _Request, limit: int) -> bytes:
    """The request body, or RequestError(413) past `limit` bytes.

    A declared length over the limit is refused before anything is read: a client that sent
    `Expect: 100-continue` gets the 413 instead of a 100 and never sends the body.

    Raises:
      ClientGoneError: the client went away before sending it all.
    """
    declared = _header(request.scope, b"content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        if int(declared) > limit:
            expects = (_header(request.scope, b"expect") or "").lower() == "100-continue"
            if not expects and int(declared) <= _DRAIN_LIMIT:
                await _drain(request.receive)
            raise _too_large(f"{declared} bytes", limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            await _drain(request.receive, total)
            raise _too_large("too large", limit)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _drain(receive: Callable[[], Awaitable[dict]], total: int = 0) -> None:
    """Reads and drops the rest of a body, up to `_DRAIN_LIMIT` bytes."""
    while total <= _DRAIN_LIMIT:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError()
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def check_container_count(body: bytes, max_instances: int) -> None:
    """Refuses a body with more JSON arrays and objects than `max_instances` can need.

    Counted on the bytes (at C speed) before the body is parsed; brackets inside strings are
    left out of the count only when the rough count is over the bound.

    Raises:
      RequestError: 400, naming the count and the bound.
    """
    bound = _CONTAINERS_BASE + _CONTAINERS_PER_INSTANCE * max_instances
    count = body.count(b"[") + body.count(b"{")
    if count <= bound:
        return
    count = _count_containers_outside_strings(body)
    if count > bound:
        raise RequestError(
            f"request body holds {count} JSON arrays and objects; at most {bound} are"
            f" accepted ({_CONTAINERS_PER_INSTANCE} per instance, {max_instances} instances)"
        )


def _count_containers_outside_strings(body: bytes) -> int:
    unquoted = _JSON_STRING.sub(b"", body)
    return unquoted.count(b"[") + unquoted.count(b"{")


def _client_connected(scope: dict) -> Callable[[], bool] | None:
    """The HTTP layer's check that the client is still there (None under another server)."""
    return scope.get("extensions", {}).get(CONNECTED_EXTENSION)


def _too_large(size: str, limit: int) -> RequestError:
    return RequestError(
        f"request body is {size}; the limit is {limit} bytes (send fewer instances per request)",
        413,
    )


class RestApp:
    """The ASGI application of the REST API.

    Args:
      core: the predict core it serves.
      grpc_port: also serve gRPC on this port (started and stopped with the app); None: not.
    """

    def __init__(self, core: PredictCore, grpc_port: int | None = None) -> None:
        self.core = core
        self.grpc_port = grpc_port
        self.grpc_server: Any = None
        self.grpc_bound_port: int | None = None  # the port gRPC got (port 0 picks one)
        # `app.state.serving`: the core, as a framework app would expose its state.
        self.state = types.SimpleNamespace(serving=core)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            answer = await self._route(scope, receive)
        except RequestError as e:
            headers = [(b"allow", e.allow.encode("latin-1"))] if e.allow else []
            if e.status == 413:  # the unread rest of the body must not be taken for a request
                headers.append((b"connection", b"close"))
            answer = Answer(e.status, error_body(e.message), headers)
        except ClientGoneError:
            return  # nobody to answer
        except asyncio.CancelledError:
            # The graceful stop ran out of time for this request: answer rather than cut.
            answer = Answer(503, error_body("the server is shutting down; retry"))
        except Exception as e:
            self.core.count_error("internal")
            # One line, not a traceback: a client may be able to set this off at will.
            _LOG.error(
                "internal error on %s %s: %s", scope["method"], scope["path"], describe_error(e)
            )
            answer = Answer(500, error_body(f"internal server error: {type(e).__name__}"))
        await send_answer(send, answer)

    async def _route(self, scope: dict, receive: Callable) -> Answer:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
            path = path[len(root) :]
        request = _Request(scope, receive)
        if path == "/healthz":
            route = "health"
        elif path.startswith(_MODELS_PREFIX):
            match = _MODEL_URL.match(path[len(_MODELS_PREFIX) :])
            if match is None or (match["resource"] and match["verb"]):
                raise RequestError(f"malformed URL {path!r}", 404)
            request.name, request.version = match["name"], match["version"]
            resource, verb = match["resource"], match["verb"]
            if verb is not None and verb != "predict":
                if verb in ("classify", "regress"):
                    raise RequestError(
                        f"':{verb}' is not supported; this model answers ':predict'", 400
                    )
                raise RequestError(f"unknown method ':{verb}' in {path!r}", 404)
            route = verb or resource or "status"
            if route == "stats" and (request.version is not None or match["label"] is not None):
                raise RequestError(f"malformed URL {path!r}", 404)
            if match["label"] is not None:
                method = _ROUTES[route][0]
                if scope["method"] != method:
                    raise RequestError(f"{path} takes {method}", 405, allow=method)
                self.core.check_name(request.name)
                raise unknown_label(match["label"])
        else:
            raise RequestError(f"not found: {scope['method']} {path}", 404)
        method, handler = _ROUTES[route]
        if scope["method"] != method:
            raise RequestError(f"{path} takes {method}", 405, allow=method)
        return await handler(self, request)

    # --- handlers ---------------------------------------------------------------------------

    async def _predict(self, request: _Request) -> Answer:
        core = self.core
        core.resolve(request.name, request.version)  # 404/503 before reading the body
        body = await _receive_body(request, core.config.max_body_bytes)
        check_container_count(body, core.config.max_instances)
        parsed = parse_predict_request(
            parse_json_body(body), core.config.max_instances, core.config.strict_examples
        )
        given = _header(request.scope, _REQUEST_ID_NAME)
        request_id = given if given and _REQUEST_ID.match(given) else new_request_id()
        prediction = await core.predict(
            parsed,
            request.name,
            request.version,
            request_id,
            delivered=_client_connected(request.scope),
        )
        fares = prediction.fares
        content = {"outputs": fares} if parsed.columnar else {"predictions": fares}
        return Answer(
            200,
            json_bytes(content),
            [
                (_REQUEST_ID_NAME, prediction.request_id.encode("latin-1")),
                (_MODEL_VERSION_NAME, str(prediction.version).encode("latin-1")),
            ],
        )

    async def _status(self, request: _Request) -> Answer:
        return Answer(200, json_bytes(self.core.status_json(request.name, request.version)))

    async def _metadata(self, request: _Request) -> Answer:
        model = self.core.resolve(request.name, request.version)
        return Answer(
            200,
            json_bytes(
                {
                    "model_spec": {
                        "name": request.name,
                        "signature_name": "",
                        "version": str(model.version),
                    },
                    "metadata": {"signature_def": {"signature_def": model.signature_defs}},
                }
            ),
        )

    async def _stats(self, request: _Request) -> Answer:
        return Answer(200, json_bytes(self.core.stats_json(request.name)))

    async def _health(self, request: _Request) -> Answer:
        core = self.core
        current = core.versions.current
        if current is None:
            raise RequestError(f"no version of model {core.config.model_name!r} is loaded", 503)
        return Answer(
            200,
            json_bytes(
                {
                    "status": "ok",
                    "model_name": core.config.model_name,
                    "version": str(current.version),
                }
            ),
        )

    # --- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        started = False
        try:
            async with self.running():
                started = True
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
        except Exception as e:
            if not started:
                _LOG.error("the server could not start: %s", e, exc_info=e)
                await send({"type": "lifespan.startup.failed", "message": str(e)})
                return
            # A failure while stopping is reported as one (the protocol allows one answer
            # to each of startup and shutdown).
            _LOG.error("the server did not stop cleanly: %s", describe_error(e))
            await send({"type": "lifespan.shutdown.failed", "message": str(e)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    @contextlib.asynccontextmanager
    async def running(self):
        """Starts the core (and gRPC) on the running loop; stops them on exit."""
        core = self.core
        rotation = None
        if core.request_log is not None:
            await asyncio.to_thread(recover_request_logs, core.request_log.log_dir)
            rotation = asyncio.create_task(_rotate_on_time(core.request_log))
        # The first version loads before the port opens: no request sees a server without one.
        await asyncio.to_thread(core.versions.start)
        await core.batcher.start()
        if self.grpc_port is not None:
            from pipeline.serving.grpc_service import start_grpc_server

            self.grpc_server, self.grpc_bound_port = await start_grpc_server(
                core, core.config.host, self.grpc_port
            )
        try:
            yield
        finally:
            # By now uvicorn has answered every request in flight; what they queued is logged.
            if self.grpc_server is not None:
                await self.grpc_server.stop(core.config.shutdown_timeout_seconds)
            await core.batcher.stop()
            await asyncio.to_thread(core.versions.stop, core.config.shutdown_timeout_seconds)
            if rotation is not None:
                rotation.cancel()
            if core.request_log is not None:
                core.request_log.close()


# route -> (method, handler); the one declaration of the REST routes.
_ROUTES: dict[str, tuple[str, Callable[[RestApp, _Request], Awaitable[Answer]]]] = {
    "predict": ("POST", RestApp._predict),
    "status": ("GET", RestApp._status),
    "metadata": ("GET", RestApp._metadata),
    "stats": ("GET", RestApp._stats),
    "health": ("GET", RestApp._health),
}


async def send_answer(send: Callable, answer: Answer) -> None:
    """Sends a JSON answer."""
    headers = [
        (b"content-length", str(len(answer.body)).encode("latin-1")),
        (b"content-type", JSON_CONTENT_TYPE),
        *answer.headers,
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _rotate_on_time(request_log: RequestLog) -> None:
    """Closes a log file that got too old even while no request comes to rotate it."""
    period = min(max(request_log.rotate_seconds / 10, 0.5), 60.0)
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(request_log.rotate_if_due)


def create_app(
    config: ServeConfig, loader: Callable[[str, int], LoadedModel] = load_model
) -> RestApp:
    """Builds the REST application for `config` (with gRPC if `config.grpc_port` is set).

    Args:
      config: the server settings.
      loader: loads one model version; tests may pass their own.

    Returns:
      The ASGI app; its core is `app.core` (also `app.state.serving`).
    """
    return RestApp(PredictCore(config, loader), config.grpc_port)
