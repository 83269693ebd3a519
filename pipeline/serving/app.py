"""The Starlette application: TF Serving's REST API over the pushed model.

URLs (as TF Serving's), `{name}` being the configured model name:
- `GET /v1/models/{name}[/versions/{v}]`: version status.
- `GET /v1/models/{name}[/versions/{v}]/metadata`: the signature defs.
- `POST /v1/models/{name}[/versions/{v}]:predict`: predictions.
- `GET /healthz`: 200 once a version is served, else 503 (for load balancers).
- `GET /v1/models/{name}/stats`: batching and request-log counters (not in TF Serving).

Every error is `{"error": "..."}`: 400 for a bad request, 404 for an unknown model, version or
URL, 405 for a wrong method, 413 for a body over the limit, 503 while no version is loaded.

Predict requests, the hot path, are answered by a lean ASGI handler in front of Starlette's
routing (`_ServingApp`); everything else goes through Starlette. Both give the same answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipeline.serving.batching import MicroBatcher
from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import RequestLog, log_examples, recover_request_logs
from pipeline.serving.validation import (
    PredictRequest,
    RequestError,
    parse_json_body,
    parse_predict_request,
)
from pipeline.serving.versions import LoadedModel, VersionManager, load_model

_LOG = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
MODEL_VERSION_HEADER = "X-Model-Version"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()
_MODEL_VERSION_NAME = MODEL_VERSION_HEADER.lower().encode()
# Request ids the server makes up: 128 random bits as hex, like a uuid4 but without a
# system call per request (seeded from the OS once).
_request_ids = random.Random()
_MODELS_PREFIX = "/v1/models/"
_PREDICT_SUFFIX = ":predict"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# {name}[/versions/{v}][/metadata|/stats][:verb]
_MODEL_URL = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
    r"(?:/(?P<resource>metadata|stats))?(?::(?P<verb>[^/:]+))?$"
)
# A body over the limit is still read (and dropped) up to this many bytes, so the client
# gets the 413 instead of a connection reset while it is still sending.
_DRAIN_LIMIT = 32 * 1024 * 1024


def _json_bytes(content: Any) -> bytes:
    """JSON via orjson; float32 numpy values are written in their shortest exact form."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONResponse(Response):
    """A Starlette response of `_json_bytes`."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@dataclasses.dataclass
class _Job:
    """One predict request on its way through the batcher."""

    request: PredictRequest
    request_id: str
    log: bool
    timestamp_ms: int


class ServingState:
    """The server's moving parts: versions, batcher and request log.

    Args:
      config: the server settings.
      loader: loads one model version (for tests); `load_model` by default.
    """

    def __init__(
        self, config: ServeConfig, loader: Callable[[str, int], LoadedModel] = load_model
    ) -> None:
        self.config = config
        self.versions = VersionManager(config.model_dir, config.poll_seconds, loader)
        self.request_log = (
            RequestLog(
                config.log_dir,
                rotate_bytes=config.log_rotate_bytes,
                rotate_seconds=config.log_rotate_seconds,
                sample_rate=config.log_sample_rate,
            )
            if config.log_dir
            else None
        )
        self.log_errors = 0
        self.batcher = MicroBatcher(
            self._run_batch,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            batch_threads=config.batch_threads,
        )

    def _run_batch(self, key: tuple[LoadedModel, str], jobs: list[_Job]) -> list[Any]:
        """Runs in a worker thread: one model call for the batch, then its log records."""
        import tensorflow as tf

        model, signature = key
        trips = [t for job in jobs for t in job.request.trips]
        examples = None
        if jobs[0].request.examples is not None:
            examples = [e for job in jobs for e in job.request.examples]
        try:
            fares = model.predict(signature, trips, examples)
        except tf.errors.InvalidArgumentError as e:
            # The model refused something validation let through: find whose it is, so the
            # other requests of the batch are still answered.
            if len(jobs) > 1:
                return [r for job in jobs for r in self._run_batch(key, [job])]
            return [RequestError(f"the model rejected the request: {e.message}")]
        if len(jobs) == 1:
            results = [fares]
        else:
            results = np.split(fares, np.cumsum([len(job.request) for job in jobs])[:-1])
        if self.request_log is not None:
            self._log(model, signature, jobs, results)
        return results

    def _log(
        self, model: LoadedModel, signature: str, jobs: list[_Job], results: list[np.ndarray]
    ) -> None:
        records = [
            record
            for job, fares in zip(jobs, results, strict=True)
            if job.log
            for record in log_examples(
                job.request.trips, fares, model.version, job.request_id, job.timestamp_ms, signature
            )
        ]
        try:
            self.request_log.write(records)
        except OSError:
            # Answering matters more than logging: a full disk must not take serving down.
            self.log_errors += len(records)
            _LOG.exception("could not write %d request log records", len(records))

    def resolve(self, name: str, version: str | None) -> LoadedModel:
        """The model a request for `name` (and `version`, if given) goes to.

        Raises:
          RequestError: 404 for an unknown model or version, 503 while none is loaded.
        """
        self.check_name(name)
        current = self.versions.current
        number = self.parse_version(name, version)
        if number is None:
            if current is None:
                raise RequestError(f"no version of model {name!r} is available yet", 503)
            return current
        if current is not None and current.version == number:
            return current
        serving = f"; serving version {current.version}" if current is not None else ""
        status = self.versions.status(number)
        if status is None:
            raise RequestError(f"version {number} of model {name!r} not found{serving}", 404)
        if status.error_message:
            raise RequestError(
                f"version {number} of model {name!r} failed to load: {status.error_message}"
                f"{serving}",
                404,
            )
        raise RequestError(
            f"version {number} of model {name!r} is not available (state {status.state}){serving}",
            404,
        )

    def check_name(self, name: str) -> None:
        """Raises RequestError(404) unless `name` is the served model."""
        if name != self.config.model_name:
            raise RequestError(
                f"model {name!r} not found; this server serves {self.config.model_name!r}", 404
            )

    @staticmethod
    def parse_version(name: str, version: str | None) -> int | None:
        """The version number in a URL, or None if the URL names none."""
        if version is None:
            return None
        if not version.isdigit():
            raise RequestError(
                f"version {version!r} of model {name!r} not found (versions are integers)", 404
            )
        return int(version)


# (status, JSON body, extra headers) of an answer.
_Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body, or RequestError(413) past `limit` bytes.

    Raises:
      ClientDisconnect: the client went away before sending it all.
    """
    chunks: list[bytes] = []
    total = 0
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        total += len(chunk)
        if not too_big and total > limit:
            too_big = True
        if too_big:
            if total > _DRAIN_LIMIT:
                break
        elif chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if too_big:
        size = f"{declared} bytes" if declared and declared.isdigit() else "too large"
        raise RequestError(
            f"request body is {size}; the limit is {limit} bytes (send fewer instances per"
            " request)",
            413,
        )
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _predict_headers(scope: Scope) -> tuple[str | None, str | None]:
    """(Content-Length, X-Request-Id) of a request, each None if absent (the first of each,
    as Starlette's `headers.get` reads them)."""
    declared = given = None
    for name, value in scope["headers"]:
        if name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
        elif name == _REQUEST_ID_NAME and given is None:
            given = value.decode("latin-1")
    return declared, given


async def _answer_predict(
    state: ServingState, scope: Scope, receive: Receive, name: str, version: str | None
) -> _Answer:
    """Answers a predict request.

    Raises:
      RequestError: the request is refused (its status and message).
      ClientDisconnect: the client went away while sending the body.
    """
    model = state.resolve(name, version)
    declared, given = _predict_headers(scope)
    body = await _receive_body(receive, declared, state.config.max_body_bytes)
    parsed = parse_predict_request(parse_json_body(body), state.config.max_instances)
    if given and _REQUEST_ID.match(given):
        request_id = given
    else:
        request_id = f"{_request_ids.getrandbits(128):032x}"
    job = _Job(
        parsed,
        request_id,
        state.request_log is not None and state.request_log.sample(),
        int(time.time() * 1000),
    )
    try:
        fares = await state.batcher.submit((model, parsed.signature_name), job, len(parsed))
    except RuntimeError as e:
        raise RequestError(str(e), 503) from None
    content = {"outputs": fares} if parsed.columnar else {"predictions": fares}
    headers = [
        (_REQUEST_ID_NAME, request_id.encode("latin-1")),
        (_MODEL_VERSION_NAME, str(model.version).encode("latin-1")),
    ]
    return 200, _json_bytes(content), headers


async def _predict(request: Request, state: ServingState, name: str, version: str | None):
    """A predict request that came through Starlette's routing."""
    status, body, headers = await _answer_predict(
        state, request.scope, request.receive, name, version
    )
    response = Response(body, status, media_type=JSONResponse.media_type)
    response.raw_headers.extend(headers)
    return response


async def _send_answer(send: Send, answer: _Answer | None) -> None:
    """Sends an answer as Starlette would; None is the empty 400 for a vanished client."""
    if answer is None:
        status, body, headers = 400, b"", [(b"content-length", b"0")]
    else:
        status, body, extra = answer
        headers = [
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", JSONResponse.media_type.encode("latin-1")),
            *extra,
        ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ServingApp(Starlette):
    """Starlette, with `POST /v1/models/{name}[/versions/{v}]:predict` answered directly.

    The predict path skips Starlette's middleware, routing and request objects (a sizeable
    share of a small request's CPU time); its answers are the ones `_models` would give.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = _route_path(scope)
            if path.startswith(_MODELS_PREFIX) and path.endswith(_PREDICT_SUFFIX):
                match = _MODEL_URL.match(path[len(_MODELS_PREFIX) :])
                if match is not None and match["resource"] is None:
                    await self._predict(scope, receive, send, match["name"], match["version"])
                    return
        await super().__call__(scope, receive, send)

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        answer: _Answer | None
        try:
            answer = await _answer_predict(self.state.serving, scope, receive, name, version)
        except RequestError as e:
            answer = e.status, _json_bytes({"error": e.message}), []
        except ClientDisconnect:
            answer = None
        except Exception as e:
            _LOG.error("internal error on POST %s", scope["path"], exc_info=e)
            answer = 500, _json_bytes({"error": f"internal server error: {type(e).__name__}"}), []
        await _send_answer(send, answer)


def _route_path(scope: Scope) -> str:
    """The path the routes see: the request path without the app's root path."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def _status(state: ServingState, name: str, version: str | None) -> JSONResponse:
    state.check_name(name)
    number = state.parse_version(name, version)
    if number is not None:
        status = state.versions.status(number)
        if status is None:
            raise RequestError(f"version {number} of model {name!r} not found", 404)
        statuses = [status]
    else:
        statuses = state.versions.statuses()
        if not statuses:
            raise RequestError(f"no versions of model {name!r} found", 404)
    return JSONResponse({"model_version_status": [s.to_json() for s in statuses]})


def _metadata(state: ServingState, name: str, version: str | None) -> JSONResponse:
    model = state.resolve(name, version)
    return JSONResponse(
        {
            "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
            "metadata": {"signature_def": {"signature_def": model.signature_defs}},
        }
    )


def _stats(state: ServingState, name: str) -> JSONResponse:
    state.check_name(name)
    current = state.versions.current
    log = state.request_log
    return JSONResponse(
        {
            "model_name": name,
            "model_version": str(current.version) if current is not None else None,
            "pid": os.getpid(),
            "batching": state.batcher.stats.to_json(),
            "request_log": {
                "enabled": log is not None,
                "records_written": log.records_written if log is not None else 0,
                "write_errors": state.log_errors,
            },
        }
    )


async def _models(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    match = _MODEL_URL.match(request.path_params["path"])
    try:
        if match is None or (match["resource"] and match["verb"]):
            raise RequestError(f"malformed URL {request.url.path!r}", 404)
        name, version, resource, verb = match.group("name", "version", "resource", "verb")
        if verb is not None:
            if verb != "predict":
                if verb in ("classify", "regress"):
                    raise RequestError(
                        f"':{verb}' is not supported; this model answers ':predict'", 400
                    )
                raise RequestError(f"unknown method ':{verb}' in {request.url.path!r}", 404)
            if request.method != "POST":
                return _error("':predict' takes POST", 405, {"Allow": "POST"})
            return await _predict(request, state, name, version)
        if request.method != "GET":
            return _error(f"{request.url.path} takes GET", 405, {"Allow": "GET"})
        if resource == "metadata":
            return _metadata(state, name, version)
        if resource == "stats":
            if version is not None:
                raise RequestError(f"malformed URL {request.url.path!r}", 404)
            return _stats(state, name)
        return _status(state, name, version)
    except RequestError as e:
        return _error(e.message, e.status)
    except ClientDisconnect:
        return Response(status_code=400)


async def _healthz(request: Request) -> Response:
    state: ServingState = request.app.state.serving
    current = state.versions.current
    if current is None:
        return _error(f"no version of model {state.config.model_name!r} is loaded", 503)
    return JSONResponse(
        {"status": "ok", "model_name": state.config.model_name, "version": str(current.version)}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(f"{exc.detail}: {request.method} {request.url.path}", exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    _LOG.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(f"internal server error: {type(exc).__name__}", 500)


async def _rotate_on_time(request_log: RequestLog) -> None:
    """Closes a log file that got too old even while no request comes to rotate it."""
    period = min(max(request_log.rotate_seconds / 10, 0.5), 60.0)
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(request_log.rotate_if_due)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette):
    state: ServingState = app.state.serving
    rotation = None
    if state.request_log is not None:
        await asyncio.to_thread(recover_request_logs, state.request_log.log_dir)
        rotation = asyncio.create_task(_rotate_on_time(state.request_log))
    # The first version loads before the port opens: no request sees a server without one.
    await asyncio.to_thread(state.versions.start)
    await state.batcher.start()
    try:
        yield
    finally:
        # By now uvicorn has answered every request in flight; what they queued is logged.
        await state.batcher.stop()
        await asyncio.to_thread(state.versions.stop)
        if rotation is not None:
            rotation.cancel()
        if state.request_log is not None:
            state.request_log.close()


def create_app(
    config: ServeConfig, loader: Callable[[str, int], LoadedModel] = load_model
) -> Starlette:
    """Builds the REST application for `config`.

    Args:
      config: the server settings.
      loader: loads one model version; tests may pass their own.

    Returns:
      The Starlette app; its state (`app.state.serving`) is a `ServingState`.
    """
    app = _ServingApp(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/v1/models/{path:path}", _models, methods=["GET", "POST"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=_lifespan,
    )
    app.state.serving = ServingState(config, loader)
    return app
