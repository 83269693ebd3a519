"""The benchmark's load clients: latency and throughput of a running server under
concurrent clients, over REST (`run_load`) and gRPC (`run_grpc_load`).

The REST load generator is deliberately lean, so that it measures the server rather than itself
(it usually shares the machine's cores with the server): one thread, `concurrency` keep-alive
HTTP/1.1 connections multiplexed with `selectors`, request bytes encoded once before the
clock starts, and an answer read only as far as its status line and `Content-Length`. It
speaks just enough HTTP for a server that answers with a `Content-Length` (as `taxifare
serve` does); an answer without one counts as an error.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
import urllib.parse
from typing import Any

import numpy as np

from pipeline.serving.client import predict_url
from taxifare_modules import features as f

_RECV_BYTES = 65_536
_HEADER_END = b"\r\n\r\n"


class _Connection:
    """One keep-alive connection and the request it has in flight."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking from here on: reads happen only once the selector says data is there,
        # and a timeout mode would add a poll() to every recv.
        self.sock.settimeout(None)
        self.buffer = b""
        self.started = 0.0
        self.body_start = -1  # offset of the body in `buffer` once the headers are in
        self.length = 0
        self.status = 0
        self.close_after = False

    def send(self, request: bytes) -> None:
        self.buffer, self.body_start = b"", -1
        self.started = time.perf_counter()
        self.sock.sendall(request)

    def read(self) -> bool | None:
        """Reads what arrived; True once the whole answer is in, None if the peer closed."""
        data = self.sock.recv(_RECV_BYTES)
        if not data:
            return None
        self.buffer += data
        if self.body_start < 0:
            end = self.buffer.find(_HEADER_END)
            if end < 0:
                return False
            self._parse_head(self.buffer[:end])
            self.body_start = end + len(_HEADER_END)
        return len(self.buffer) - self.body_start >= self.length

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.length, self.close_after = -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.close_after = True
        if self.length < 0:
            raise ValueError("an answer without Content-Length")

    def close(self) -> None:
        self.sock.close()


def _encode_request(host: str, path: str, body: Any) -> bytes:
    content = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode("latin-1") + content


def run_load(
    url: str,
    instances: list[Any],
    concurrency: int,
    total_requests: int,
    model_name: str = "taxifare",
    instances_per_request: int = 1,
    timeout: float = 30.0,
) -> dict[str, float]:
    """Sends `total_requests` predict requests over `concurrency` keep-alive connections.

    Request `i` carries `instances_per_request` instances, taken round-robin from
    `instances`. Each connection has one request in flight at a time and sends the next as
    soon as its answer is in. Latency is measured per request, from just before its bytes
    are sent to the last byte of its answer.

    Args:
      url: the server, `http://host:port`.
      instances: JSON instances to send.
      concurrency: how many requests are in flight at once.
      total_requests: how many requests to send in all.
      model_name: the model in the URL.
      instances_per_request: instances per request.
      timeout: per-request timeout in seconds (a timeout counts as an error).

    Returns:
      `requests`, `concurrency`, `errors` (non-200 answers and failures), `seconds`,
      `requests_per_s`, `instances_per_s`, and latency percentiles of the successful
      requests in ms: `p50_ms`, `p90_ms`, `p99_ms`, `max_ms` (NaN if none succeeded).

    Raises:
      ValueError: the arguments are not usable (e.g. not an `http://` URL).
    """
    if not instances or concurrency < 1 or total_requests < 1 or instances_per_request < 1:
        raise ValueError("need instances and positive concurrency, requests and batch size")
    target = urllib.parse.urlsplit(predict_url(url, model_name))
    if target.scheme != "http" or not target.hostname:
        raise ValueError(f"run_load speaks plain http://host:port, not {url!r}")
    address = (target.hostname, target.port or 80)
    requests = [
        _encode_request(
            target.netloc,
            target.path,
            {
                "instances": [
                    instances[(i * instances_per_request + j) % len(instances)]
                    for j in range(instances_per_request)
                ]
            },
        )
        for i in range(min(total_requests, len(instances)))
    ]

    latencies: list[float] = []
    errors = 0
    sent = 0
    selector = selectors.DefaultSelector()
    in_flight: set[_Connection] = set()

    def send_next(conn: _Connection | None) -> None:
        """Sends the next request on `conn` (a new connection if None); counts failures."""
        nonlocal sent, errors
        while sent < total_requests:
            request = requests[sent % len(requests)]
            sent += 1
            try:
                if conn is None:
                    conn = _Connection(address, timeout)
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn.send(request)
            except OSError:
                errors += 1
                if conn is not None:
                    drop(conn)
                    conn = None
                continue
            in_flight.add(conn)
            return
        if conn is not None:
            drop(conn)

    def drop(conn: _Connection) -> None:
        in_flight.discard(conn)
        try:
            selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()

    started = time.perf_counter()
    for _ in range(min(concurrency, total_requests)):
        send_next(None)
    try:
        while in_flight:
            for key, _ in selector.select(timeout=min(1.0, timeout)):
                conn = key.data
                try:
                    done = conn.read()
                except (OSError, ValueError):
                    done = None
                if done is None:  # closed, reset or unreadable: a failed request
                    errors += 1
                    drop(conn)
                    send_next(None)
                elif done:
                    if conn.status == 200:
                        latencies.append((time.perf_counter() - conn.started) * 1000.0)
                    else:
                        errors += 1
                    in_flight.discard(conn)
                    if conn.close_after:
                        drop(conn)
                        send_next(None)
                    else:
                        send_next(conn)
            now = time.perf_counter()
            for conn in [c for c in in_flight if now - c.started > timeout]:
                errors += 1
                drop(conn)
                send_next(None)
    finally:
        for conn in list(in_flight):
            drop(conn)
        selector.close()
    seconds = time.perf_counter() - started

    return _figures(total_requests, concurrency, errors, seconds, latencies, instances_per_request)


def _figures(
    total_requests: int,
    concurrency: int,
    errors: int,
    seconds: float,
    latencies: list[float],
    instances_per_request: int,
) -> dict[str, float]:
    ms = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "requests": total_requests,
        "concurrency": concurrency,
        "errors": errors,
        "seconds": seconds,
        "requests_per_s": len(latencies) / seconds,
        "instances_per_s": len(latencies) * instances_per_request / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(np.max(ms)),
    }


def grpc_request_bytes(
    instances: list[dict[str, Any]], model_name: str = "taxifare", version: int | None = None
) -> bytes:
    """A serialized TF Serving `PredictRequest` of `serving_default` for `instances`, one
    tensor per raw field (sentinels where a field is missing)."""
    from tensorflow_serving.apis import predict_pb2

    from pipeline.serving.client import _column_tensor

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
    if version is not None:
        request.model_spec.version.value = version
    for key in f.RAW_FEATURE_KEYS:
        request.inputs[key].CopyFrom(_column_tensor(key, [i.get(key) for i in instances]))
    return request.SerializeToString()


_PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


def run_grpc_load(
    target: str,
    instances: list[Any],
    concurrency: int,
    total_requests: int,
    model_name: str = "taxifare",
    instances_per_request: int = 1,
    timeout: float = 30.0,
) -> dict[str, float]:
    """`run_load` over TF Serving's gRPC `Predict`: `concurrency` calls in flight on one
    channel (HTTP/2 multiplexes them), each answer starting the next call from grpc's own
    callback thread (at concurrency 1: blocking calls one after another).

    No Python thread per call and no asyncio: on shared cores the client's CPU per call
    stays small. Requests are serialized before the clock starts and answers are not parsed
    (status OK is a success).

    Args:
      target: the server's gRPC `host:port`.
      instances: JSON instances to send.
      concurrency: how many calls are in flight at once.
      total_requests: how many calls to make in all.
      model_name: the model in the model spec.
      instances_per_request: instances per call.
      timeout: per-call deadline in seconds (a missed deadline counts as an error).

    Returns:
      The same figures as `run_load`.
    """
    import threading

    import grpc

    if not instances or concurrency < 1 or total_requests < 1 or instances_per_request < 1:
        raise ValueError("need instances and positive concurrency, requests and batch size")
    requests = [
        grpc_request_bytes(
            [
                instances[(i * instances_per_request + j) % len(instances)]
                for j in range(instances_per_request)
            ],
            model_name,
        )
        for i in range(min(total_requests, len(instances)))
    ]
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    done = threading.Event()
    state = {"sent": 0, "finished": 0}

    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        call = channel.unary_unary(_PREDICT_METHOD)  # bytes in, bytes out

        def send() -> None:
            """Starts the next call, if any is left; its answer starts the one after."""
            with lock:
                i = state["sent"]
                if i >= total_requests:
                    return
                state["sent"] = i + 1
            begun = time.perf_counter()
            future = call.future(requests[i % len(requests)], timeout=timeout)
            future.add_done_callback(lambda f, b=begun, i=i: finished(f, b, i))

        def finished(future: Any, begun: float, i: int) -> None:
            if future.code() == grpc.StatusCode.OK:
                latencies.append((time.perf_counter() - begun) * 1000.0)
            else:
                failures.append(i)
            with lock:
                state["finished"] += 1
                last = state["finished"] >= total_requests
            if last:
                done.set()
            else:
                send()

        started = time.perf_counter()
        if concurrency == 1:
            # One blocking call after another in this thread: no hand-off to a callback
            # thread on the path of each answer.
            for i in range(total_requests):
                begun = time.perf_counter()
                try:
                    call(requests[i % len(requests)], timeout=timeout)
                except grpc.RpcError:
                    failures.append(i)
                    continue
                latencies.append((time.perf_counter() - begun) * 1000.0)
        else:
            for _ in range(min(concurrency, total_requests)):
                send()
            done.wait()
        seconds = time.perf_counter() - started
    return _figures(
        total_requests, concurrency, len(failures), seconds, latencies, instances_per_request
    )
