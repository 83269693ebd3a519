"""`taxifare serve`'s connections and request log against clients that misbehave on purpose:
no request holds the event loop, no connection outlives its deadlines, heads over the limit
are refused however they arrive, the stats stay small, unexpected errors are one log line,
and the request log holds only the answers that reached their client."""

from __future__ import annotations

import base64
import dataclasses
import logging
import socket
import struct
import threading
import time

import httpx
import numpy as np
import pytest

from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import read_request_log
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, InProcessServer, wait_for
from tests.serving.test_hardening import _read_response

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
STATS = f"/v1/models/{MODEL_NAME}/stats"
TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir,
            log_dir=str(tmp_path_factory.mktemp("transport_log")),
            max_header_bytes=8192,
            header_timeout_seconds=TIMEOUT_SECONDS,
            body_timeout_seconds=TIMEOUT_SECONDS,
            keep_alive_seconds=TIMEOUT_SECONDS,
            write_timeout_seconds=TIMEOUT_SECONDS,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connections(server: InProcessServer) -> int:
    return len(server._server.server_state.connections)


def _predict_ok(server: InProcessServer, instances: list[dict]) -> None:
    response = httpx.post(f"{server.url}{PREDICT}", json={"instances": instances}, timeout=60)
    assert response.status_code == 200, response.text


# --- The head limit (item 6) -----------------------------------------------------------------


@pytest.mark.parametrize("head_bytes", [9_000, 64 * 1024])
def test_a_head_over_the_limit_in_one_write_gets_431(server, port, instances, head_bytes):
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head = start + b"p" * (head_bytes - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == head_bytes
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)  # one write: the whole head reaches the server at once
        status, _, body = _read_response(sock)
        assert sock.recv(100) == b""  # and the connection is closed
    assert status == 431 and b"8192 bytes" in body
    _predict_ok(server, instances[:1])


def test_a_head_just_under_the_limit_is_served(server, port):
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head = start + b"p" * (8_000 - len(start) - 4) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        assert _read_response(sock)[0] == 200


# --- Early answers do not hold the connection (item 5) ---------------------------------------


def _trickle_after_early_answer(port: int, head: bytes) -> tuple[int, str]:
    """Sends `head` (announcing a body of 100 MB), reads the answer, then trickles the body a
    byte at a time; returns the status and how the connection ended."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        status, _, _ = _read_response(sock)
        sock.settimeout(0.3)
        # Far longer than the body timeout: a connection the trickle holds fails the test.
        for _ in range(200):
            try:
                sock.sendall(b"x")
                if sock.recv(100) == b"":
                    return status, "closed"
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return status, "closed"
        return status, "still open"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
        b"POST /no/such/path HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    ],
    ids=["healthz-with-body", "404-post"],
)
def test_a_body_trickled_after_an_early_answer_cannot_hold_the_connection(server, port, head):
    status, end = _trickle_after_early_answer(port, head)
    assert status in (200, 404) and end == "closed"
    wait_for(lambda: _connections(server) == 0, 30, message="the connection stayed open")


def test_a_body_that_arrives_in_time_after_an_early_answer_keeps_the_connection(server, port):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.sendall(b"12345GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock)[0] == 200


# --- Bounded stats and answers nobody reads (item 7) -----------------------------------------


def _example_with_extra_feature(row: dict[str, str], name: str) -> str:
    import tensorflow as tf

    from tests.trips import row_to_example

    example = tf.train.Example.FromString(row_to_example(row))
    example.features.feature[name].int64_list.value.append(1)
    return base64.b64encode(example.SerializeToString()).decode()


def test_ignored_feature_names_cannot_grow_the_stats(server, trip_rows):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(30):
            name = f"{i:03d}" + "n" * 200_000
            body = {"instances": [{"b64": _example_with_extra_feature(trip_rows[0], name)}]}
            response = client.post(PREDICT, json=body)
            assert response.status_code == 200, response.text
        stats = client.get(STATS)
    assert len(stats.content) < 16_384
    ignored = stats.json()["ignored_example_features"]
    assert sum(ignored.values()) >= 30
    assert max(len(name) for name in ignored) <= 64


def test_a_client_that_never_reads_its_answers_is_dropped(server, port):
    metadata = f"GET /v1/models/{MODEL_NAME}/metadata HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock = socket.socket()
    # A small receive window, and many pipelined requests never read: the server's write
    # buffer fills and stays full.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    try:
        sock.sendall(metadata * 2_000)
        wait_for(lambda: _connections(server) == 0, 60, message="the stalled reader was kept")
    finally:
        sock.close()


# --- The event loop is never held by one body (item 4) ---------------------------------------


def _p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99))


def _timed_requests(server: InProcessServer, instance: dict, n: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.post(PREDICT, json={"instances": [instance]})
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
    return latencies


def test_bodies_of_many_small_lists_do_not_stall_other_clients(server, instances):
    # 500,000 empty lists in 1.5 MB: within the body limit, and millions of Python objects.
    bomb = b'{"instances": [' + b"[]," * 499_999 + b"[]]}"
    assert len(bomb) <= server.state.config.max_body_bytes
    _timed_requests(server, instances[0], 20)  # warm-up
    baseline = _timed_requests(server, instances[0], 100)
    stop = threading.Event()
    refused: list[int] = []

    def attack() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            while not stop.is_set():
                refused.append(client.post(PREDICT, content=bomb).status_code)

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        wait_for(lambda: len(refused) >= 1, 120)
        under_attack = _timed_requests(server, instances[0], 200)
    finally:
        stop.set()
        attacker.join()
    assert set(refused) == {400} and len(refused) >= 5
    # The bound is 100 ms; on a busy machine the client's own quiet p99 (measured
    # above, same process) may be near it, so the bound follows it there. Each bomb used to
    # hold the loop for seconds.
    bound = max(0.1, 3 * _p99(baseline))
    assert _p99(under_attack) < bound, (_p99(baseline), _p99(under_attack), len(refused))


def test_a_body_with_more_containers_than_instances_can_need_is_a_400(server):
    body = b'{"instances": [' + b"[]," * 70_000 + b"[]]}"
    response = httpx.post(f"{server.url}{PREDICT}", content=body, timeout=60)
    assert response.status_code == 400
    assert "70003 JSON arrays and objects" in response.json()["error"]


def test_brackets_inside_strings_are_not_counted(server, instances):
    body = {"instances": [dict(instances[0], **{f.COMPANY_KEY: "[" * 200_000})]}
    _predict_ok(server, body["instances"])


# --- Unexpected errors are one line and a counted 500 (item 13) -------------------------------


class _FailingModel:
    """A real loaded model that fails inside its call when a trip's company is "boom"."""

    @staticmethod
    def wrap(model):
        from pipeline.serving.versions import LoadedModel

        class Failing(LoadedModel):
            def predict(self, signature_name, trips, examples):
                if any(t.get(f.COMPANY_KEY) == "boom" for t in trips):
                    raise ValueError("the model broke\n" + "a long second line\n" * 40)
                return super().predict(signature_name, trips, examples)

        fields = {x.name: getattr(model, x.name) for x in dataclasses.fields(model)}
        return Failing(**fields)


def test_an_unexpected_error_is_one_log_line_and_a_counted_500(
    model_dir, instances, monkeypatch, caplog
):
    from pipeline.serving import app as app_module
    from pipeline.serving.versions import load_model

    real_create_app = app_module.create_app
    monkeypatch.setattr(
        app_module,
        "create_app",
        lambda config: real_create_app(
            config, loader=lambda path, version: _FailingModel.wrap(load_model(path, version))
        ),
    )
    running = InProcessServer(ServeConfig(model_dir=model_dir))
    try:
        with caplog.at_level(logging.ERROR, logger="pipeline.serving"):
            boom = dict(instances[0], **{f.COMPANY_KEY: "boom"})
            answers = [
                httpx.post(f"{running.url}{PREDICT}", json={"instances": [boom]}, timeout=60)
                for _ in range(3)
            ]
            stats = httpx.get(f"{running.url}{STATS}").json()
        _predict_ok(running, instances[:2])
    finally:
        running.stop()
    assert [a.status_code for a in answers] == [500] * 3
    assert "ValueError" in answers[0].json()["error"]
    assert stats["errors"]["internal"] == 3
    assert all(r.exc_info is None for r in caplog.records)
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("pipeline.serving")
    ]
    assert len(errors) == 3
    for record in errors:
        assert record.exc_info is None and "\n" not in record.getMessage()
        assert "the model broke" in record.getMessage()


# --- The log holds what was delivered (item 10) ----------------------------------------------


@pytest.fixture()
def slow_batches(model_dir, tmp_path):
    """A server whose batches wait 500 ms for company: time for a client to leave."""
    running = InProcessServer(
        ServeConfig(model_dir=model_dir, log_dir=str(tmp_path / "log"), max_wait_ms=500.0)
    )
    yield running
    running.stop()


def _send_and_leave(port: int, instance: dict, request_id: str, how: str) -> None:
    import json

    body = json.dumps({"instances": [instance]}).encode()
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head + body)
    if how == "reset":
        # Closing with a zero linger time sends a reset, not a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)  # half-closed: the server gives it no answer
        threading.Timer(5.0, sock.close).start()


def test_answers_whose_client_left_are_not_logged(slow_batches, instances):
    server = slow_batches
    port = int(server.url.rsplit(":", 1)[1])
    for i in range(5):
        _send_and_leave(port, instances[i % len(instances)], f"reset-{i}", "reset")
        _send_and_leave(port, instances[i % len(instances)], f"halfclosed-{i}", "half-close")
    wait_for(lambda: server.state.batcher.stats.requests >= 10, 60)
    wait_for(lambda: server.state.undelivered == 10, 30, message="undelivered not counted")
    response = httpx.post(
        f"{server.url}{PREDICT}",
        json={"instances": instances[:2]},
        headers={"X-Request-Id": "stayed"},
        timeout=60,
    )
    assert response.status_code == 200
    stats = httpx.get(f"{server.url}{STATS}").json()["request_log"]
    assert stats["undelivered"] == 10 and stats["records_written"] == 2
    ids = [
        e.features.feature["request_id"].bytes_list.value[0].decode()
        for e in read_request_log(server.state.config.log_dir)
    ]
    assert ids == ["stayed", "stayed"]


def test_grpc_calls_past_their_deadline_are_not_logged(model_dir, trip_rows, tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.trips import rows_to_named_tensors

    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir, log_dir=str(tmp_path / "log"), grpc_port=0, max_wait_ms=500.0
        )
    )
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
        for key, tensor in rows_to_named_tensors(trip_rows[:1]).items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            codes = []
            for i in range(4):
                try:
                    stub.Predict(request, timeout=0.1, metadata=[("x-request-id", f"late-{i}")])
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
            stub.Predict(request, timeout=30, metadata=[("x-request-id", "in-time")])
        wait_for(lambda: running.state.batcher.stats.requests >= 5, 60)
    finally:
        running.stop()
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    ids = [
        e.features.feature["request_id"].bytes_list.value[0].decode()
        for e in read_request_log(str(tmp_path / "log"))
    ]
    assert ids == ["in-time"]


def test_a_log_directory_that_cannot_be_made_again_is_said_once_and_counted(
    model_dir, instances, tmp_path, caplog
):
    import shutil

    log_dir = tmp_path / "log"
    running = InProcessServer(ServeConfig(model_dir=model_dir, log_dir=str(log_dir)))
    try:
        _predict_ok(running, instances[:1])
        shutil.rmtree(log_dir)
        log_dir.write_text("a file where the directory was")  # the directory cannot be made
        with caplog.at_level(logging.WARNING, logger="pipeline.serving"):
            for _ in range(5):
                _predict_ok(running, instances[:2])
            failing = httpx.get(f"{running.url}{STATS}").json()["request_log"]
            log_dir.unlink()
            _predict_ok(running, instances[:3])
        stats = httpx.get(f"{running.url}{STATS}").json()["request_log"]
    finally:
        running.stop()
    assert failing["write_errors"] == 10 and failing["records_lost"] == 1
    assert stats["records_written"] == 4 and stats["write_errors"] == 10
    said = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(said) == 1 and str(log_dir) in said[0]
    assert any("writing to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    assert len(list(read_request_log(str(log_dir)))) == 3
