"""`taxifare serve` as its own process: a SIGTERM under load loses no answered instance from
the request log, the files are complete and TFDV reads them; `--workers` runs several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import httpx
import pytest

from pipeline.serving.request_log import IN_PROGRESS_SUFFIX, LOG_SUFFIX, read_request_log
from tests.serving.helpers import (
    MODEL_NAME,
    SERVE_ENTRY,
    free_port,
    repo_root,
    subprocess_env,
    wait_for,
)

pytestmark = pytest.mark.slow


def _start(model_dir: str, log_dir: str, tmp_path, *extra: str):
    port = free_port()
    stderr = open(tmp_path / "server.log", "w")  # closed by the caller
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_ENTRY, "serve", "--model-dir", model_dir]
        + ["--port", str(port)]
        + ["--log-dir", log_dir, *extra],
        cwd=repo_root(),
        env=subprocess_env(),
        stdout=stderr,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 300, interval=0.5, message="the server did not become healthy")
    return process, url, stderr


def _send_until_stopped(url: str, instances: list, answered: dict) -> None:
    """Sends predict requests (each on a new connection) until the server stops answering."""
    while True:
        request_id = uuid.uuid4().hex
        size = 1 + len(answered) % 3
        try:
            with httpx.Client(timeout=30) as client:
                response = client.post(
                    f"{url}/v1/models/{MODEL_NAME}:predict",
                    json={"instances": instances[:size]},
                    headers={"X-Request-Id": request_id},
                )
                if response.status_code != 200:
                    return
                answered[request_id] = size
        except httpx.HTTPError:
            return


def _writers(log_dir: str) -> set[str]:
    """The process ids in the request log's file names (after the host)."""
    if not os.path.isdir(log_dir):
        return set()
    return {n.split("-")[-2] for n in os.listdir(log_dir)}


def _stop_under_load(process, send, senders: int = 4, ready=lambda: True):
    """Runs `send(answered)` (which sends until the server stops answering, recording each
    answered request id and its size) in `senders` threads; once 40 are answered and
    `ready()` holds, stops the server with SIGTERM."""
    answered: dict[str, int] = {}
    threads = [threading.Thread(target=send, args=(answered,)) for _ in range(senders)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answered) >= 40, 120, message="too few requests answered")
        wait_for(ready, 300, interval=0.5, message="the server was not ready to be stopped")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        for t in threads:
            t.join(timeout=60)
    return code, answered


def _check_log(log_dir: str, answered: dict[str, int]) -> list:
    names = os.listdir(log_dir)
    assert names and all(n.endswith(LOG_SUFFIX) for n in names), names
    assert not any(n.endswith(IN_PROGRESS_SUFFIX) for n in names)
    logged: dict[str, int] = {}
    for example in read_request_log(log_dir):
        request_id = example.features.feature["request_id"].bytes_list.value[0].decode()
        logged[request_id] = logged.get(request_id, 0) + 1
    # Every answered instance is in the log, exactly once.
    for request_id, size in answered.items():
        assert logged.get(request_id) == size, request_id
    return names


@pytest.mark.timeout(600)
def test_sigterm_under_load_loses_nothing_answered(model_dir, instances, tmp_path):
    log_dir = str(tmp_path / "log")
    process, url, output = _start(model_dir, log_dir, tmp_path, "--max-wait-ms", "5")
    with output:
        code, answered = _stop_under_load(
            process, lambda answered: _send_until_stopped(url, instances, answered)
        )
    assert code == 0, (tmp_path / "server.log").read_text()[-2000:]
    _check_log(log_dir, answered)

    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    records = sum(1 for _ in read_request_log(log_dir))
    files = [os.path.join(log_dir, n) for n in sorted(os.listdir(log_dir))]
    assert sum(1 for _ in tf.data.TFRecordDataset(files)) == records
    stats = tfdv.generate_statistics_from_tfrecord(data_location=os.path.join(log_dir, "*"))
    assert stats.datasets[0].num_examples == records


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_two_workers_serve_and_stop_gracefully(model_dir, instances, tmp_path):
    log_dir = str(tmp_path / "log")
    process, url, output = _start(model_dir, log_dir, tmp_path, "--workers", "2")
    with output:
        # Both workers load the model; requests on new connections reach both (the second
        # may still be loading when the first answers: stop once both have logged).
        code, answered = _stop_under_load(
            process,
            lambda answered: _send_until_stopped(url, instances, answered),
            senders=6,
            ready=lambda: len(_writers(log_dir)) >= 2,
        )
    assert code == 0, (tmp_path / "server.log").read_text()[-2000:]
    names = _check_log(log_dir, answered)
    # Each worker writes its own files (the process id is in the name, after the host).
    assert len(_writers(log_dir)) == 2, names


def _grpc_until_stopped(target: str, rows: list, answered: dict, refused: list) -> None:
    """Predict calls over gRPC (TF Serving's stub, one channel) until the server refuses."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from taxifare_modules import features as f
    from tests.trips import rows_to_named_tensors

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while True:
            size = 1 + len(answered) % 3
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL_NAME
            request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
            for key, tensor in rows_to_named_tensors(rows[:size]).items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
            request_id = uuid.uuid4().hex
            try:
                stub.Predict(request, timeout=30, metadata=[("x-request-id", request_id)])
            except grpc.RpcError as e:
                refused.append(e.code())
                return
            answered[request_id] = size


@pytest.mark.timeout(600)
def test_sigterm_under_grpc_load_answers_or_refuses_cleanly_and_logs_every_answer(
    model_dir, sample_rows, tmp_path
):
    import grpc

    log_dir = str(tmp_path / "log")
    grpc_port = free_port()
    process, _, output = _start(
        model_dir, log_dir, tmp_path, "--grpc-port", str(grpc_port), "--max-wait-ms", "5"
    )
    refused: list = []
    target = f"127.0.0.1:{grpc_port}"
    with output:
        code, answered = _stop_under_load(
            process, lambda answered: _grpc_until_stopped(target, sample_rows, answered, refused)
        )
    assert code == 0, (tmp_path / "server.log").read_text()[-2000:]
    # A call the stopping server did not take is refused as unavailable, never failed.
    assert len(refused) == 4  # one per sender
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}, refused
    _check_log(log_dir, answered)


def _grpc_batches_until_refused(target: str, rows: list, answered: dict, codes: list) -> None:
    """Keeps eight Predict calls in flight on one channel until a batch has a call that is not
    answered; records every answered call's id and every refusal's code."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from taxifare_modules import features as f
    from tests.trips import rows_to_named_tensors

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
    for key, tensor in rows_to_named_tensors(rows[:2]).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while True:
            ids = [uuid.uuid4().hex for _ in range(8)]
            calls = [
                (i, stub.Predict.future(request, timeout=30, metadata=[("x-request-id", i)]))
                for i in ids
            ]
            refused = False
            for request_id, call in calls:
                try:
                    call.result()
                    answered[request_id] = 2
                except grpc.RpcError as e:
                    codes.append(e.code())
                    refused = True
            if refused:
                return


@pytest.mark.timeout(600)
def test_a_graceful_stop_never_cancels_a_grpc_call(model_dir, sample_rows, tmp_path):
    """Calls that reached the stopping server are answered or refused UNAVAILABLE (which a
    client may retry elsewhere), never CANCELLED; what was answered is logged."""
    import grpc

    from pipeline.serving.config import ServeConfig
    from tests.serving.helpers import InProcessServer

    for round_ in range(4):
        log_dir = str(tmp_path / f"log{round_}")
        running = InProcessServer(
            ServeConfig(model_dir=model_dir, log_dir=log_dir, grpc_port=0, max_wait_ms=5.0)
        )
        answered: dict[str, int] = {}
        codes: list = []
        threads = [
            threading.Thread(
                target=_grpc_batches_until_refused,
                args=(running.grpc_target, sample_rows, answered, codes),
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        try:
            wait_for(lambda a=answered: len(a) >= 200, 120, message="too few calls answered")
        finally:
            running.stop()
            for t in threads:
                t.join(timeout=60)
        assert codes and set(codes) <= {grpc.StatusCode.UNAVAILABLE}, (round_, codes)
        _check_log(log_dir, answered)
