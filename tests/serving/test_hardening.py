"""`taxifare serve` against a hostile client: every case answers a clear JSON 4xx (or a
counted 500), never harms another client's request, and leaves the server serving.

Several cases talk raw HTTP over a socket, since well-behaved clients cannot send them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import read_request_log
from taxifare_modules import features as f
from tests.serving.helpers import (
    MODEL_NAME,
    SERVE_ENTRY,
    InProcessServer,
    free_port,
    repo_root,
    subprocess_env,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
RTOL = 1e-5
IDLE_CONNECTIONS = 1_000


@pytest.fixture(scope="module")
def served_root(model_dir, tmp_path_factory):
    """A model directory of its own: version 1, and a version 3 that cannot load."""
    root = tmp_path_factory.mktemp("hostile") / MODEL_NAME
    shutil.copytree(f"{model_dir}/1", root / "1")
    shutil.copytree(f"{model_dir}/1", root / "3")
    shutil.rmtree(root / "3" / "variables")  # TensorFlow's error names the files it missed
    return root


@pytest.fixture(scope="module")
def server(served_root, tmp_path_factory):
    running = InProcessServer(
        ServeConfig(
            model_dir=str(served_root),
            log_dir=str(tmp_path_factory.mktemp("hostile_log")),
            max_wait_ms=2.0,
            poll_seconds=0.3,
            empty_version_timeout_seconds=1.0,
            # The soak holds idle connections open for its whole run.
            header_timeout_seconds=300.0,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def port(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def expected(server, instances) -> list[float]:
    response = httpx.post(f"{server.url}{PREDICT}", json={"instances": instances}, timeout=60)
    assert response.status_code == 200
    return response.json()["predictions"]


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP response read from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _raw(port: int, data: bytes, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_response(sock)


def _json_error(status_headers_body) -> str:
    _, headers, body = status_headers_body
    assert headers["content-type"] == "application/json", headers
    return json.loads(body)["error"]


def _poisoned_body(instance: dict) -> bytes:
    """An instance whose company is a lone surrogate escape: valid JSON, invalid Unicode."""
    text = json.dumps({"instances": [dict(instance, **{f.COMPANY_KEY: "XX"})]})
    return text.replace('"XX"', '"\\ud800"').encode()


# --- One request never fails another -------------------------------------------------------


def test_invalid_unicode_is_refused_alone_and_never_fails_batch_neighbours(
    server, instances, expected
):
    errors: list[str] = []
    poisoned: list[httpx.Response] = []
    stop = threading.Event()

    def clean(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(15):
                r = client.post(PREDICT, json={"instances": [instances[i]]})
                if r.status_code != 200:
                    errors.append(r.text)
                elif not np.allclose(r.json()["predictions"], [expected[i]], rtol=RTOL):
                    errors.append(f"wrong fare {r.json()} for instance {i}")

    def poison() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                poisoned.append(
                    client.post(
                        PREDICT,
                        content=_poisoned_body(instances[0]),
                        headers={"content-type": "application/json"},
                    )
                )

    bad = threading.Thread(target=poison)
    bad.start()
    threads = [threading.Thread(target=clean, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    bad.join()
    assert errors == []
    assert poisoned and {r.status_code for r in poisoned} == {400}
    message = poisoned[0].json()["error"]
    assert f"instances[0].{f.COMPANY_KEY}" in message and "Unicode" in message


def test_deep_json_is_a_400(server):
    body = b'{"instances": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    response = httpx.post(f"{server.url}{PREDICT}", content=body, timeout=60)
    assert response.status_code == 400
    assert "nested" in response.json()["error"]


@pytest.mark.parametrize("version", ["\u00b2", "\u2460", "\u0661", "\u0967"])
def test_non_ascii_digit_versions_are_not_found(server, instances, version):
    url = f"{server.url}/v1/models/{MODEL_NAME}/versions/{version}"
    predict = httpx.post(f"{url}:predict", json={"instances": instances[:1]}, timeout=60)
    assert predict.status_code == 404 and "versions are integers" in predict.json()["error"]
    assert httpx.get(url, timeout=60).status_code == 404


@pytest.mark.parametrize(
    "key,value",
    [
        (f.PICKUP_LATITUDE_KEY, 3.4e38),
        (f.DROPOFF_LONGITUDE_KEY, -3.4e38),
        (f.PICKUP_LATITUDE_KEY, 2**70),
        (f.TIMESTAMP_KEY, 2**63 - 1),
        (f.TIMESTAMP_KEY, 0),
        (f.PICKUP_AREA_KEY, 1_000_000),
    ],
)
def test_values_outside_the_schema_ranges_are_refused(server, instances, key, value):
    body = {"instances": [instances[0], dict(instances[1], **{key: value})]}
    response = httpx.post(f"{server.url}{PREDICT}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(f"instances[1].{key}: ") and "range" in message


def test_long_distinct_values_do_not_grow_the_memos(server, instances):
    from pipeline.serving import request_log, versions

    memos = (request_log._cached_entry, versions._one_value_tensors)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # The trip's other (short) values are memoized by a first request.
        assert client.post(PREDICT, json={"instances": instances[:1]}).status_code == 200
        before = [len(m) for m in memos]
        for i in range(30):
            company = f"{i:04d}" + "x" * 200_000
            response = client.post(
                PREDICT, json={"instances": [dict(instances[0], **{f.COMPANY_KEY: company})]}
            )
            assert response.status_code == 200
    assert [len(m) for m in memos] == before
    assert all(m.size_bytes <= m.max_bytes for m in memos)


# --- HTTP layer ----------------------------------------------------------------------------


def test_a_huge_request_head_gets_431(port, server, instances):
    head = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(200))
        + b"\r\n"
    )
    answer = _raw(port, head)
    assert answer[0] == 431
    assert "head" in _json_error(answer)
    assert (
        httpx.post(f"{server.url}{PREDICT}", json={"instances": instances[:1]}).status_code == 200
    )


def test_errors_of_the_http_layer_and_routing_are_json(port, server):
    garbage = _raw(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage[0] == 400 and "malformed" in _json_error(garbage)
    wrong_method = httpx.get(f"{server.url}{PREDICT}")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert "error" in wrong_method.json()
    status = httpx.post(f"{server.url}/v1/models/{MODEL_NAME}")
    assert status.status_code == 405 and status.headers["allow"] == "GET"
    missing = httpx.get(f"{server.url}/no/such/path")
    assert missing.status_code == 404 and "error" in missing.json()


def test_expect_100_continue_over_the_limit_gets_413_not_100(port):
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    answer = _raw(port, head)
    assert answer[0] == 413
    assert "limit" in _json_error(answer)
    # The body never sent must not be waited for on a kept-alive connection.
    assert answer[1]["connection"] == "close"


def test_status_and_stats_say_nothing_about_the_host(server, served_root):
    url = f"{server.url}/v1/models/{MODEL_NAME}"
    wait_for(
        lambda: (
            httpx.get(f"{url}/versions/3").status_code == 200
            and httpx.get(f"{url}/versions/3").json()["model_version_status"][0]["state"] == "END"
        ),
        60,
    )
    status = httpx.get(f"{url}/versions/3").json()["model_version_status"][0]
    message = status["status"]["error_message"]
    assert message and str(served_root) not in message and "/" + "tmp" not in message
    assert status["status"]["error_code"] == "UNKNOWN"
    stats = httpx.get(f"{url}/stats").json()
    assert "pid" not in stats and str(os.getpid()) not in json.dumps(stats)


def test_an_empty_version_folder_is_reported_failed(server, served_root):
    (served_root / "4").mkdir()
    url = f"{server.url}/v1/models/{MODEL_NAME}/versions/4"

    def failed() -> bool:
        r = httpx.get(url)
        return r.status_code == 200 and r.json()["model_version_status"][0]["state"] == "END"

    wait_for(failed, 60, message="the empty version stayed START")
    assert (
        "saved_model.pb"
        in httpx.get(url).json()["model_version_status"][0]["status"]["error_message"]
    )


# --- Slow and idle connections ---------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(model_dir):
    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir,
            header_timeout_seconds=1.0,
            body_timeout_seconds=1.0,
            max_connections=10,
        )
    )
    yield running, int(running.url.rsplit(":", 1)[1])
    running.stop()


def test_slow_heads_and_bodies_time_out_with_408(impatient, instances):
    server, port = impatient
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        answer = _read_response(sock)
    assert answer[0] == 408 and "head" in _json_error(answer)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{".encode()
        )
        answer = _read_response(sock)
    assert answer[0] == 408 and "body" in _json_error(answer)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        assert sock.recv(100) == b""  # an idle connection is closed, not held
    assert (
        httpx.post(f"{server.url}{PREDICT}", json={"instances": instances[:1]}).status_code == 200
    )


def test_connections_over_the_limit_get_503(impatient, instances):
    server, port = impatient
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(14)]
    try:
        refused = []
        for sock in sockets[10:]:
            refused.append(_read_response(sock))
        assert {status for status, _, _ in refused} == {503}
        assert "too many connections" in _json_error(refused[0])
    finally:
        for sock in sockets:
            sock.close()
    wait_for(
        lambda: (
            httpx.post(f"{server.url}{PREDICT}", json={"instances": instances[:1]}).status_code
            == 200
        ),
        30,
    )


def test_soak_valid_clients_are_served_beside_idle_connections_and_poison(
    server, port, instances, expected
):
    idle = [
        socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(IDLE_CONNECTIONS)
    ]
    errors: list[str] = []
    answered = [0]
    stop = threading.Event()
    tag = "soak-"

    def valid(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for j in range(20):
                i = (k + j) % len(instances)
                try:
                    r = client.post(
                        PREDICT,
                        json={"instances": [instances[i]]},
                        headers={"X-Request-Id": f"{tag}{k}-{j}"},
                    )
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if r.status_code != 200:
                    errors.append(r.text)
                elif not np.allclose(r.json()["predictions"], [expected[i]], rtol=RTOL):
                    errors.append(f"wrong fare for instance {i}")
                else:
                    answered[0] += 1

    def poison() -> None:
        bodies = [
            _poisoned_body(instances[0]),
            b'{"instances": ' + b"[" * 2000 + b"]" * 2000 + b"}",
            json.dumps(
                {"instances": [dict(instances[0], **{f.PICKUP_LATITUDE_KEY: 3.4e38})]}
            ).encode(),
        ]
        n = 0
        while not stop.is_set():
            n += 1
            try:
                _raw(port, b"GARBAGE\r\n\r\n", timeout=30)
                httpx.post(f"{server.url}{PREDICT}", content=bodies[n % len(bodies)], timeout=30)
            except (OSError, httpx.HTTPError):
                pass  # the poisoner's own fate does not matter

    try:
        bad = threading.Thread(target=poison)
        bad.start()
        threads = [threading.Thread(target=valid, args=(k,)) for k in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        bad.join()
    finally:
        for sock in idle:
            sock.close()
    assert errors == []
    assert answered[0] == 200
    logged = [
        e
        for e in read_request_log(server.state.config.log_dir)
        if e.features.feature["request_id"].bytes_list.value[0].decode().startswith(tag)
    ]
    assert len(logged) == 200


def test_an_implausible_fare_is_a_counted_500_and_not_logged(model_dir, instances, tmp_path):
    log_dir = tmp_path / "log"
    running = InProcessServer(ServeConfig(model_dir=model_dir, log_dir=str(log_dir), max_fare=0.01))
    try:
        response = httpx.post(f"{running.url}{PREDICT}", json={"instances": instances[:2]})
        stats = httpx.get(f"{running.url}/v1/models/{MODEL_NAME}/stats").json()
    finally:
        running.stop()
    assert response.status_code == 500 and "implausible fare" in response.json()["error"]
    assert stats["errors"]["implausible_fares"] == 1
    assert list(read_request_log(str(log_dir))) == []


def test_a_stray_folder_does_not_stop_new_versions(model_dir, small_model, instances, tmp_path):
    root = tmp_path / MODEL_NAME
    shutil.copytree(f"{model_dir}/1", root / "1")
    (root / "\u00b2").mkdir()
    running = InProcessServer(ServeConfig(model_dir=str(root), poll_seconds=0.3))
    try:
        shutil.copytree(small_model.export_dir, root / "2")

        def version() -> str:
            r = httpx.post(f"{running.url}{PREDICT}", json={"instances": instances[:1]})
            return r.headers.get("x-model-version", "")

        wait_for(lambda: version() == "2", 60, message="version 2 was not picked up")
    finally:
        running.stop()


# --- The process: shutdown and the public-host warning ---------------------------------------


def test_sigterm_answers_a_stalled_request_in_json_and_exits(model_dir, tmp_path):
    port = free_port()
    output = tmp_path / "server.log"
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE_ENTRY, "serve", "--model-dir", model_dir]
            + ["--port", str(port)]
            + ["--host", "0.0.0.0", "--shutdown-timeout", "1", "--body-timeout", "600"],
            cwd=repo_root(),
            env=subprocess_env(),
            stdout=sink,
            stderr=sink,
        )
    try:

        def healthy() -> bool:
            assert process.poll() is None, output.read_text()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 300, interval=0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(
                f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{".encode()
            )
            time.sleep(1.0)  # lets the server read the head: the request is then in flight
            process.send_signal(signal.SIGTERM)
            answer = _read_response(sock)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert answer[0] == 503 and "shutting down" in _json_error(answer)
    assert code == 0
    log = output.read_text()
    assert "no authentication" in log and "0.0.0.0" in log
