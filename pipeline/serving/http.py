"""The HTTP connection layer of the REST server: uvicorn's httptools protocol with limits.

uvicorn by itself puts no bound on a request head's size and no timeout on a connection
that never finishes its head or body, so slow or idle clients can hold connections (and
file handles) forever. This protocol adds, from the serving config:
- a request head over `max_header_bytes` gets 431;
- a head not complete `header_timeout_seconds` after the connection opened (or after the
  previous request) closes the connection (408 if part of it came);
- a body not complete `body_timeout_seconds` after its head gets 408; a body still coming
  when the answer went out early (a 404, a `GET` with a body) is drained until that same
  deadline, then the connection is closed: trickling it cannot hold the connection;
- an answer the client does not read within `write_timeout_seconds` (the write buffer stays
  full) aborts the connection, so a reader that stalls frees its slot and its buffered bytes;
- connections over `max_connections` get 503 at once;
and every answer it writes itself (those, and the parser's 400) is JSON `{"error": ...}`.

The head size is checked twice: after each read while the head is incomplete (so a head
that never ends is not buffered without bound), and on the parsed head once complete (a
whole oversized head can arrive in one read).

The app learns whether its client is still there through the scope's extension
`CONNECTED_EXTENSION`: a callable that is False once the client has closed, reset or
half-closed the connection (the answer then goes nowhere, and is not logged).
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from pipeline.serving.config import ServeConfig

# scope["extensions"][CONNECTED_EXTENSION]() -> whether the answer can still reach the client.
CONNECTED_EXTENSION = "taxifare.connected"
# The bytes of a request head besides the URL and the headers' names and values: the method
# (at least 3), spaces, " HTTP/1.1", CRLFs and ": " separators, counted low.
_HEAD_LINE_OVERHEAD = 14
_HEADER_OVERHEAD = 4


class _HeadTooLargeError(Exception):
    """Raised in a parser callback to stop parsing a request whose head was refused."""


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
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_done = True  # the current request's body is all in (or there is none)
        if len(self.connections) > self.limits.max_connections:
            self._reject(503, "too many connections to the server; retry later")
            return
        self._arm(self.limits.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.limits.write_timeout_seconds, self._on_write_timeout
            )

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _on_write_timeout(self) -> None:
        # The client stopped reading: what it has not read is dropped with the connection.
        self._write_timer = None
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._reject_large_head()

    def _reject_large_head(self) -> None:
        self._reject(
            431,
            f"the request head is over {self.limits.max_header_bytes} bytes"
            " (request line and headers)",
        )

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():  # already answered (431) and closing
            return
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
        size = (
            _HEAD_LINE_OVERHEAD
            + len(self.url)
            + sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers)
        )
        if size > self.limits.max_header_bytes:
            self._reject_large_head()
            raise _HeadTooLargeError()  # the parser stops; nothing of this request runs
        self._arm(self.limits.body_timeout_seconds)
        self._body_done = False
        super().on_headers_complete()
        cycle, transport = self.cycle, self.transport
        extensions = self.scope.setdefault("extensions", {})  # type: ignore[typeddict-item]
        extensions[CONNECTED_EXTENSION] = lambda: not (cycle.disconnected or transport.is_closing())

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        self._body_done = True
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._body_done:
            # Answered before its body was all in: the body timer keeps running, so the rest
            # is drained until the body deadline and then the connection closes (uvicorn's
            # keep-alive timer restarts at every byte and would let a trickle last forever).
            return
        if self._in_head and self._head_bytes:
            return  # a pipelined request's head is arriving: its timer stays
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
