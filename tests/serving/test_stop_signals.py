"""`taxifare serve` as its own process: SIGHUP stops it as gracefully as SIGTERM, and a log
directory removed under it is noticed, counted and made again, with a clean stop after."""

from __future__ import annotations

import os
import shutil
import signal

import httpx
import pytest

from pipeline.serving.request_log import IN_PROGRESS_SUFFIX, LOG_SUFFIX, read_request_log
from tests.serving.helpers import MODEL_NAME
from tests.serving.test_graceful_stop import _start as start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PREDICT = f"/v1/models/{MODEL_NAME}:predict"


def _send(url: str, instances: list, tag: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(n):
            response = client.post(
                PREDICT, json={"instances": instances[:1]}, headers={"X-Request-Id": f"{tag}-{i}"}
            )
            assert response.status_code == 200, response.text


def test_a_removed_log_directory_then_sighup_stops_cleanly(model_dir, instances, tmp_path):
    log_dir = str(tmp_path / "log")
    process, url, output = start_server(model_dir, log_dir, tmp_path)
    try:
        with output:
            _send(url, instances, "before", 10)
            shutil.rmtree(log_dir)
            _send(url, instances, "after", 10)
            stats = httpx.get(f"{url}/v1/models/{MODEL_NAME}/stats", timeout=60).json()
            process.send_signal(signal.SIGHUP)
            code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = (tmp_path / "server.log").read_text()
    assert code == 0, text[-3000:]
    for bad in ("could not start", "Traceback", "AssertionError", "shutdown failed"):
        assert bad not in text, text[-3000:]
    assert stats["request_log"]["records_lost"] == 10
    assert stats["request_log"]["records_written"] == 20
    assert "records are lost" in text
    names = os.listdir(log_dir)  # made again
    assert names and all(n.endswith(LOG_SUFFIX) for n in names)
    assert not any(n.endswith(IN_PROGRESS_SUFFIX) for n in names)
    ids = sorted(
        e.features.feature["request_id"].bytes_list.value[0].decode()
        for e in read_request_log(log_dir)
    )
    assert ids == sorted(f"after-{i}" for i in range(10))
