"""The HTTP connection layer of the REST server: uvicorn's httptools protocol with limits.

uvicorn by itself puts no bound on a request head's size and no timeout on a connection
that never finishes its head or body, so slow or idle clients can hold connections (and
file handles) forever. This protocol adds, from the serving config:
- a request head over `max_header_bytes` gets 431;
- a head not complete `header_timeout_seconds` after the connection opened (or after the
  previous request) closes the connection (408 if part of it came);
- a body not complete `body_timeout_seconds` after its head gets 408;
- connections over `max_connections` get 503 at once;
and every answer it writes itself (those, and the parser's 400) is JSON `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from pipeline.serving.config import ServeConfig


def _raw_response(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return b"".join(
        (
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        )
    )


class LimitedHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with head size, timeouts, a connection limit and JSON errors.

    The limits are the class attribute `limits`; `protocol_class(config)` makes the class.
    """

    limits: ServeConfig

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.limits.max_connections:
            self._reject(503, "too many connections to the server; retry later")
            return
        self._arm(self.limits.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._reject(
                431,
                f"the request head is over {self.limits.max_header_bytes} bytes"
                " (request line and headers)",
            )

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_raw_response(400, f"malformed HTTP request: {msg}"))
        self.transport.close()

    # Parser callbacks: the timers follow the request through head and body.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._timer is None:
            self._arm(self.limits.header_timeout_seconds)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._arm(self.limits.body_timeout_seconds)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The idle time until the next request is the keep-alive timeout's (uvicorn's).
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._on_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()
        elif self._in_head and self._head_bytes == 0 and (cycle is None or cycle.response_complete):
            self.transport.close()  # an idle connection: nothing to answer
        elif self._in_head:
            self._reject(
                408,
                f"the request head did not arrive within {self.limits.header_timeout_seconds:g}s",
            )
        else:
            self._reject(
                408, f"the request body did not arrive within {self.limits.body_timeout_seconds:g}s"
            )

    def _reject(self, status: int, message: str) -> None:
        self._disarm()
        self.transport.write(_raw_response(status, message))
        self.transport.close()


def protocol_class(config: ServeConfig) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn runs (`uvicorn.Config(http=...)`) for `config`'s limits."""
    return type("ServingHttpProtocol", (LimitedHttpProtocol,), {"limits": config})


# The environment variable that carries the config to uvicorn's worker processes.
CONFIG_ENV = "TAXIFARE_SERVE_CONFIG"


@functools.lru_cache(maxsize=1)
def _limits_from_env() -> ServeConfig:
    return ServeConfig.from_json(os.environ[CONFIG_ENV])


class EnvLimitedHttpProtocol(LimitedHttpProtocol):
    """`LimitedHttpProtocol` whose limits come from `CONFIG_ENV` (in worker processes, which
    import the protocol by name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = _limits_from_env()
