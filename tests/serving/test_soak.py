"""The soak of issue 22: valid clients keep their latency and get no error while hostile
clients run at once (bodies of half a million empty lists over REST, gRPC shape bombs, 300
connections trickling a body after an early answer), and the server's memory stays within
300 MB of where it started. The server is its own process, so its memory is its own."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import httpx
import numpy as np
import pytest

from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, free_port
from tests.serving.test_graceful_stop import _start

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
VALID_CLIENTS = 10
TRICKLERS = 300
RSS_GROWTH_BYTES = 300 * 2**20


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _valid_clients(url: str, instances: list, requests: int) -> tuple[list[float], list[str]]:
    """`VALID_CLIENTS` threads each sending `requests` one-trip requests; their latencies
    and errors."""
    latencies: list[float] = []
    errors: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            for j in range(requests):
                instance = instances[(k + j) % len(instances)]
                start = time.perf_counter()
                try:
                    response = session.post(PREDICT, json={"instances": [instance]})
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(VALID_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def _list_bombs(url: str, stop: threading.Event, answers: list[int]) -> None:
    bomb = b'{"instances": [' + b"[]," * 499_999 + b"[]]}"
    with httpx.Client(base_url=url, timeout=120) as session:
        while not stop.is_set():
            answers.append(session.post(PREDICT, content=bomb).status_code)


def _shape_bombs(target: str, stop: threading.Event, codes: list) -> None:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
    # One value "filling" a shape of ten million instances, for every input.
    for key in f.FLOAT_FEATURE_KEYS:
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[41.0])
        tensor.tensor_shape.dim.add().size = 10**7
        request.inputs[key].CopyFrom(tensor)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not stop.is_set():
            try:
                stub.Predict(request, timeout=60)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())


def _tricklers(port: int, stop: threading.Event, opened: list[int]) -> None:
    """Keeps `TRICKLERS` connections that got an early answer trickling their body; opens a
    new one for each the server closes."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        sock.setblocking(False)
        opened.append(1)
        return sock

    sockets = [connect() for _ in range(TRICKLERS)]
    try:
        while not stop.is_set():
            for i, sock in enumerate(sockets):
                try:
                    sock.send(b"x")
                    if sock.recv(65536) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    sock.close()
                    sockets[i] = connect()
            stop.wait(0.5)
    finally:
        for sock in sockets:
            sock.close()


def test_valid_clients_keep_latency_and_memory_while_hostile_clients_run(
    model_dir, instances, tmp_path
):
    grpc_port = free_port()
    process, url, output = _start(
        model_dir,
        str(tmp_path / "log"),
        tmp_path,
        "--grpc-port",
        str(grpc_port),
        "--body-timeout",
        "2",
    )
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    bomb_answers: list[int] = []
    grpc_codes: list = []
    opened: list[int] = []
    rss: list[int] = []
    try:
        with output:
            _valid_clients(url, instances, 10)  # warm-up
            start_rss = _rss_bytes(process.pid)
            baseline, baseline_errors = _valid_clients(url, instances, 30)
            hostiles = [
                threading.Thread(target=_list_bombs, args=(url, stop, bomb_answers)),
                threading.Thread(
                    target=_shape_bombs, args=(f"127.0.0.1:{grpc_port}", stop, grpc_codes)
                ),
                threading.Thread(target=_tricklers, args=(port, stop, opened)),
            ]
            for t in hostiles:
                t.start()

            def sample_rss() -> None:
                while not stop.is_set():
                    rss.append(_rss_bytes(process.pid))
                    stop.wait(0.25)

            sampler = threading.Thread(target=sample_rss)
            sampler.start()
            try:
                time.sleep(3.0)  # the hostile clients get going (3 s: past the body timeout)
                latencies, errors = _valid_clients(url, instances, 60)
            finally:
                stop.set()
                for t in [*hostiles, sampler]:
                    t.join(timeout=120)
            health = httpx.get(f"{url}/healthz", timeout=60).status_code
    finally:
        process.terminate()
        process.wait(timeout=120)
    assert baseline_errors == [] and errors == []
    assert health == 200
    assert bomb_answers and set(bomb_answers) == {400}
    assert grpc_codes and grpc.StatusCode.OK not in grpc_codes
    assert grpc.StatusCode.UNKNOWN not in grpc_codes
    # Connections the server closed at the body deadline were opened again.
    assert len(opened) > TRICKLERS
    # The bound is 100 ms; with ten clients on a busy two-core machine their own quiet
    # p99 (measured above) may be near it, and the bound follows it there.
    p99, quiet_p99 = np.percentile(latencies, 99), np.percentile(baseline, 99)
    assert p99 < max(0.1, 3 * quiet_p99), (p99, quiet_p99)
    assert max(rss) - start_rss < RSS_GROWTH_BYTES, (start_rss, max(rss))
