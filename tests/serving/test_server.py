"""`taxifare serve` against a real server on a loopback port, with a small real model.

TF Serving's REST surface (status, metadata, predict in row and columnar form, b64
tf.Examples), agreement with a direct call of the exported model, every kind of bad request
(each answered with the right 4xx naming what and where, the server still answering well
afterwards), hot swap of versions under load, batching, the request log and `predict`.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from bench.load_client import run_load
from pipeline.serving import cli as serving_cli
from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import read_request_log
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, InProcessServer, free_port, wait_for
from tests.trips import row_to_example

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MAX_INSTANCES = 50
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
RTOL = 1e-5


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir,
            log_dir=str(tmp_path_factory.mktemp("request_log")),
            max_instances=MAX_INSTANCES,
            max_wait_ms=10.0,
            poll_seconds=0.5,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _b64(row: dict[str, str]) -> dict[str, str]:
    return {"b64": base64.b64encode(row_to_example(row)).decode()}


def _predict_ok(client: httpx.Client, body: dict, url: str = PREDICT) -> list[float]:
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    return response.json()["predictions" if "instances" in body else "outputs"]


# --- TF Serving's REST surface -------------------------------------------------------------


def test_status_of_model_and_version(client):
    expected = {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get(f"/v1/models/{MODEL_NAME}").json() == expected
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/1").json() == expected
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["version"] == "1"


def test_metadata_renders_the_signature_defs(client):
    for url in (
        f"/v1/models/{MODEL_NAME}/metadata",
        f"/v1/models/{MODEL_NAME}/versions/1/metadata",
    ):
        body = client.get(url).json()
        assert body["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
        defs = body["metadata"]["signature_def"]["signature_def"]
        assert set(defs) == {f.SERVING_DEFAULT_SIGNATURE, f.SERVING_TF_EXAMPLE_SIGNATURE}
        raw = defs[f.SERVING_DEFAULT_SIGNATURE]
        assert raw["method_name"] == "tensorflow/serving/predict"
        assert set(raw["inputs"]) == set(f.RAW_FEATURE_KEYS)
        dtypes = {k: v["dtype"] for k, v in raw["inputs"].items()}
        assert {dtypes[k] for k in f.FLOAT_FEATURE_KEYS} == {"DT_FLOAT"}
        assert {dtypes[k] for k in f.INT_FEATURE_KEYS} == {"DT_INT64"}
        assert {dtypes[k] for k in f.STRING_FEATURE_KEYS} == {"DT_STRING"}
        assert raw["inputs"][f.HOUR_KEY]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
        assert set(raw["outputs"]) == {f.PREDICTION_KEY}
        examples = defs[f.SERVING_TF_EXAMPLE_SIGNATURE]["inputs"]
        assert examples[f.SERVING_TF_EXAMPLE_INPUT_KEY]["dtype"] == "DT_STRING"


def test_predict_row_columnar_and_versioned_agree(client, instances, direct_fares):
    rows = _predict_ok(client, {"instances": instances})
    columns = {k: [i.get(k) for i in instances] for k in f.RAW_FEATURE_KEYS}
    columnar = _predict_ok(client, {"inputs": columns})
    versioned = _predict_ok(
        client,
        {"instances": instances, "signature_name": f.SERVING_DEFAULT_SIGNATURE},
        f"/v1/models/{MODEL_NAME}/versions/1:predict",
    )
    assert len(rows) == len(instances) and all(isinstance(x, float) for x in rows)
    np.testing.assert_allclose(rows, direct_fares[0], rtol=RTOL)
    np.testing.assert_allclose(columnar, rows, rtol=RTOL)
    np.testing.assert_allclose(versioned, rows, rtol=RTOL)
    response = client.post(PREDICT, json={"instances": instances[:1]})
    assert response.headers["x-model-version"] == "1" and response.headers["x-request-id"]


def test_raw_json_b64_and_direct_call_agree_with_missing_fields(
    client, trip_rows, instances, direct_fares
):
    # The chosen trips lack dropoff, company or pickup fields (see trip_rows).
    assert any(f.DROPOFF_LATITUDE_KEY not in i for i in instances)
    assert any(f.COMPANY_KEY not in i for i in instances)
    raw_json = _predict_ok(client, {"instances": instances})
    b64_auto = _predict_ok(client, {"instances": [_b64(r) for r in trip_rows]})
    b64_named = _predict_ok(
        client,
        {
            "signature_name": f.SERVING_TF_EXAMPLE_SIGNATURE,
            "instances": [{f.SERVING_TF_EXAMPLE_INPUT_KEY: _b64(r)} for r in trip_rows],
        },
    )
    b64_columnar = _predict_ok(
        client, {"inputs": {f.SERVING_TF_EXAMPLE_INPUT_KEY: [_b64(r) for r in trip_rows]}}
    )
    direct_raw, direct_example = direct_fares
    np.testing.assert_allclose(direct_raw, direct_example, rtol=RTOL)
    for served in (raw_json, b64_auto, b64_named, b64_columnar):
        np.testing.assert_allclose(served, direct_raw, rtol=RTOL)
    # Null and the named-tensor sentinels mean "missing" as well as leaving a field out.
    nulls = [{k: i.get(k) for k in f.RAW_FEATURE_KEYS} for i in instances]
    sentinels = [
        dict(i, **{k: f.MISSING_INT for k in f.AREA_KEYS if k not in i}, **{f.COMPANY_KEY: ""})
        if f.COMPANY_KEY not in i
        else i
        for i in instances
    ]
    np.testing.assert_allclose(_predict_ok(client, {"instances": nulls}), direct_raw, rtol=RTOL)
    np.testing.assert_allclose(_predict_ok(client, {"instances": sentinels}), direct_raw, rtol=RTOL)


# --- Bad requests --------------------------------------------------------------------------


def _with(instance: dict, **changes) -> dict:
    out = dict(instance)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()


def _bad_cases(instances: list[dict], trip_rows: list[dict]) -> list[tuple]:
    """(name, url, body bytes, status, fragments the error must contain)."""
    good = instances[:3]
    b64 = [_b64(r) for r in trip_rows[:2]]

    def body(obj) -> bytes:
        return json.dumps(obj).encode()  # NaN and Infinity are written as such

    def rows(i: int, bad: dict) -> bytes:
        changed = list(good)
        changed[i] = bad
        return body({"instances": changed})

    hour, lat, post_trip = f.HOUR_KEY, f.PICKUP_LATITUDE_KEY, f.POST_TRIP_KEYS[0]
    columns = {k: [x.get(k) for x in good] for k in f.RAW_FEATURE_KEYS}
    not_example = base64.b64encode(b"this is not a tf.Example").decode()
    versioned = f"/v1/models/{MODEL_NAME}/versions/7:predict"
    cases = [
        ("not JSON", b'{"instances": [', 400, ["not valid JSON"]),
        ("not an object", b"[1, 2, 3]", 400, ["JSON object", "list"]),
        ("both", body({"instances": good, "inputs": columns}), 400, ["both", "instances"]),
        ("neither", body({"signature_name": ""}), 400, ["neither"]),
        ("empty instances", body({"instances": []}), 400, ["empty"]),
        ("instances not a list", body({"instances": {}}), 400, ["must be a list"]),
        ("instance not an object", rows(1, 7), 400, ["instances[1]", "object"]),
        ("wrong type", rows(2, _with(good[2], **{hour: [3]})), 400, [f"[2].{hour}", "integer"]),
        ("boolean", rows(0, _with(good[0], **{lat: True})), 400, [f"[0].{lat}", "number"]),
        (
            "unknown field",
            rows(1, _with(good[1], **{post_trip: 2.5})),
            400,
            ["instances[1]", "unknown field", post_trip],
        ),
        (
            "missing required",
            rows(2, _with(good[2], **{hour: _DROP})),
            400,
            ["instances[2]", "missing required", hour],
        ),
        ("NaN", rows(1, _with(good[1], **{lat: math.nan})), 400, [f"[1].{lat}", "NaN"]),
        ("Infinity", rows(2, _with(good[2], **{lat: -math.inf})), 400, [f"[2].{lat}", "Infinity"]),
        (
            "string for a number",
            rows(0, _with(good[0], **{lat: "41.9"})),
            400,
            [f"instances[0].{lat}", "expected a number", "string"],
        ),
        (
            "fraction for an integer",
            rows(1, _with(good[1], **{hour: 3.5})),
            400,
            [f"instances[1].{hour}", "integer", "3.5"],
        ),
        ("out of range", rows(0, _with(good[0], **{hour: 24})), 400, [f"[0].{hour}", "range"]),
        (
            "invalid base64",
            body({"instances": [b64[0], {"b64": "not base64!"}]}),
            400,
            ["instances[1].b64", "base64"],
        ),
        (
            "not a tf.Example",
            body({"instances": [{"b64": not_example}]}),
            400,
            ["instances[0].b64", "not a serialized tf.Example"],
        ),
        ("raw among b64", body({"instances": [b64[0], good[0]]}), 400, ["instances[1]", "b64"]),
        (
            "b64 for serving_default",
            body({"instances": b64, "signature_name": f.SERVING_DEFAULT_SIGNATURE}),
            400,
            ["instances[0]", f.SERVING_TF_EXAMPLE_SIGNATURE],
        ),
        (
            "unknown signature",
            body({"instances": good, "signature_name": f.TRANSFORM_FEATURES_SIGNATURE}),
            400,
            ["unknown signature", f.TRANSFORM_FEATURES_SIGNATURE],
        ),
        (
            "too many instances",
            body({"instances": [good[0]] * (MAX_INSTANCES + 1)}),
            400,
            [str(MAX_INSTANCES + 1), f"at most {MAX_INSTANCES}"],
        ),
        (
            "oversized body",
            b'{"instances": ["' + b"x" * 2_000_000 + b'"]}',
            413,
            ["limit", "1572864"],
        ),
        (
            "column missing",
            body({"inputs": {k: v for k, v in columns.items() if k != hour}}),
            400,
            ["inputs", "missing required", hour],
        ),
        (
            "column bad value",
            body({"inputs": dict(columns, **{hour: [1, "x", 3]})}),
            400,
            [f"inputs.{hour}[1]", "integer"],
        ),
        (
            "columns of unequal length",
            body({"inputs": dict(columns, **{hour: [1, 2]})}),
            400,
            [f"inputs.{hour}", "2 values"],
        ),
        (
            "unknown column",
            body({"inputs": dict(columns, **{post_trip: [1, 2, 3]})}),
            400,
            ["unknown field", post_trip],
        ),
    ]
    return [(name, PREDICT, *rest) for name, *rest in cases] + [
        ("unknown model", "/v1/models/nope:predict", body({"instances": good}), 404, ["'nope'"]),
        ("unknown version", versioned, body({"instances": good}), 404, ["version 7"]),
        (
            "version label",  # TF Serving's answer to a label its config does not define
            f"/v1/models/{MODEL_NAME}/labels/stable:predict",
            body({"instances": good}),
            400,
            ["Unrecognized servable version label: stable"],
        ),
    ]


def test_every_bad_request_gets_a_4xx_naming_what_and_where(client, instances, trip_rows):
    good = {"instances": instances[:2]}
    expected = _predict_ok(client, good)
    for name, url, content, status, fragments in _bad_cases(instances, trip_rows):
        response = client.post(url, content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, (name, response.text)
        message = response.json()["error"]
        for fragment in fragments:
            assert fragment in message, (name, fragment, message)
        # The server keeps answering correctly.
        np.testing.assert_allclose(_predict_ok(client, good), expected, rtol=RTOL)


def test_wrong_method_and_unknown_urls_are_json_errors(client):
    assert client.get(PREDICT).status_code == 405
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/9").status_code == 404
    assert client.get(f"/v1/models/{MODEL_NAME}/versions/x/metadata").status_code == 404
    missing = client.get("/no/such/path")
    assert missing.status_code == 404 and "error" in missing.json()


# --- Batching -----------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls(server, instances):
    before = server.state.batcher.stats.to_json()
    total = 96
    result = run_load(server.url, instances, concurrency=16, total_requests=total)
    after = httpx.get(f"{server.url}/v1/models/{MODEL_NAME}/stats").json()["batching"]
    assert result["errors"] == 0 and result["requests_per_s"] > 0
    assert result["p50_ms"] <= result["p99_ms"]
    requests = after["requests"] - before["requests"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == total
    assert calls < total / 2, after
    assert after["largest_batch"] > 1


def test_load_client_counts_refused_and_unreachable_requests_as_errors(server, instances):
    refused = run_load(
        server.url, instances, concurrency=4, total_requests=20, model_name="no-such-model"
    )
    assert refused["errors"] == 20 and math.isnan(refused["p50_ms"])
    unreachable = run_load(
        f"http://127.0.0.1:{free_port()}", instances, concurrency=4, total_requests=10, timeout=5
    )
    assert unreachable["errors"] == 10
    with pytest.raises(ValueError, match="http://"):
        run_load("https://127.0.0.1:1", instances, concurrency=1, total_requests=1)


# --- Request log --------------------------------------------------------------------------


def test_request_log_holds_each_answered_instance_once(server, client, instances, trip_rows):
    import tensorflow as tf

    tag = f"logtest-{time.time_ns()}"
    sent = {}
    for i in range(4):
        request_id = f"{tag}-{i}"
        batch = instances[i : i + 3]
        response = client.post(
            PREDICT, json={"instances": batch}, headers={"X-Request-Id": request_id}
        )
        assert response.status_code == 200 and response.headers["x-request-id"] == request_id
        sent[request_id] = (batch, response.json()["predictions"])
    b64_id = f"{tag}-b64"
    response = client.post(
        PREDICT,
        json={"instances": [_b64(trip_rows[-1])]},
        headers={"X-Request-Id": b64_id},
    )
    sent[b64_id] = ([instances[-1]], response.json()["predictions"])
    # A refused request is not logged.
    bad = client.post(PREDICT, json={"instances": [{}]}, headers={"X-Request-Id": f"{tag}-bad"})
    assert bad.status_code == 400

    logged = [
        e
        for e in read_request_log(server.state.config.log_dir)
        if e.features.feature["request_id"].bytes_list.value[0].decode().startswith(tag)
    ]
    assert len(logged) == sum(len(batch) for batch, _ in sent.values())
    now_ms = time.time() * 1000
    for example in logged:
        feature = example.features.feature
        request_id = feature["request_id"].bytes_list.value[0].decode()
        index = feature["instance_index"].int64_list.value[0]
        batch, fares = sent[request_id]
        trip = batch[index]
        # The raw fields under their training names and dtypes; missing ones left out.
        raw = {k for k in feature if k in f.RAW_FEATURE_KEYS}
        assert raw == set(trip)
        for key in f.FLOAT_FEATURE_KEYS:
            if key in trip:
                assert feature[key].float_list.value[0] == pytest.approx(trip[key], rel=1e-6)
        for key in f.INT_FEATURE_KEYS:
            if key in trip:
                assert feature[key].int64_list.value[0] == trip[key]
        for key in f.STRING_FEATURE_KEYS:
            if key in trip:
                assert feature[key].bytes_list.value[0].decode() == trip[key]
        assert feature[f.PREDICTION_KEY].float_list.value[0] == pytest.approx(fares[index])
        assert feature["model_version"].int64_list.value[0] == 1
        assert now_ms - 120_000 < feature["request_timestamp_ms"].int64_list.value[0] <= now_ms
        signature = feature["signature_name"].bytes_list.value[0].decode()
        assert signature == (
            f.SERVING_TF_EXAMPLE_SIGNATURE if request_id == b64_id else f.SERVING_DEFAULT_SIGNATURE
        )
    # The files are plain TFRecord: tf.data reads every record.
    files = sorted(str(p) for p in _log_files(server.state.config.log_dir))
    assert sum(1 for _ in tf.data.TFRecordDataset(files)) >= len(logged)


def _log_files(log_dir: str):
    from pathlib import Path

    return [p for p in Path(log_dir).iterdir() if ".tfrecord" in p.name]


# --- Versions -----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_hot_swap_under_load_and_a_broken_version_is_reported(
    model_dir, small_model, instances, tmp_path
):
    root = tmp_path / MODEL_NAME
    shutil.copytree(f"{model_dir}/1", root / "1")
    server = InProcessServer(ServeConfig(model_dir=str(root), poll_seconds=0.3, max_wait_ms=2.0))
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post(PREDICT, json={"instances": instances[:4]})
                results.append((r.status_code, r.headers.get("x-model-version", r.text)))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(results) > 5, 60)
        # Copied in place, file by file, as the Pusher does.
        shutil.copytree(small_model.export_dir, root / "2")
        status_url = f"{server.url}/v1/models/{MODEL_NAME}"
        wait_for(
            lambda: any(
                s["version"] == "2" and s["state"] == "AVAILABLE"
                for s in httpx.get(status_url).json()["model_version_status"]
            ),
            60,
            message="version 2 was not picked up",
        )
        count = len(results)
        wait_for(lambda: len(results) > count + 5, 60)
        # A broken version 3: a garbage saved_model.pb.
        (root / "3" / "variables").mkdir(parents=True)
        (root / "3" / "saved_model.pb").write_bytes(b"\x07garbage, not a SavedModel")

        def three_failed() -> bool:
            r = httpx.get(f"{status_url}/versions/3")
            return r.status_code == 200 and r.json()["model_version_status"][0]["state"] == "END"

        wait_for(three_failed, 30, message="version 3 was not reported")
        count = len(results)
        wait_for(lambda: len(results) > count + 5, 60)
    finally:
        stop.set()
        for t in threads:
            t.join()
        statuses = httpx.get(f"{server.url}/v1/models/{MODEL_NAME}").json()
        refused = httpx.post(
            f"{server.url}/v1/models/{MODEL_NAME}/versions/3:predict",
            json={"instances": instances[:1]},
        )
        server.stop()
    assert all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    versions = [v for _, v in results]
    assert set(versions) == {"1", "2"}
    # Once answered by 2, never by 1 again.
    assert "1" not in versions[versions.index("2") + 20 :]
    by_version = {s["version"]: s for s in statuses["model_version_status"]}
    assert by_version["2"]["state"] == "AVAILABLE"
    assert by_version["1"]["state"] == "END"
    assert by_version["3"]["state"] == "END"
    assert by_version["3"]["status"]["error_code"] != "OK"
    assert "saved_model.pb" in by_version["3"]["status"]["error_message"]
    assert refused.status_code == 404 and "failed to load" in refused.json()["error"]


# --- taxifare predict ---------------------------------------------------------------------


def _predict_args(**kw) -> object:
    import argparse

    parser = argparse.ArgumentParser()
    commands = serving_cli.add_serve_parsers(parser.add_subparsers(dest="command"))
    argv = ["predict"] + [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return commands, parser.parse_args(argv)


def test_predict_command_reads_csv_and_json(server, client, trip_rows, instances, tmp_path, capsys):
    import csv

    csv_path = tmp_path / "trips.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(trip_rows[0]))  # with label and post-trip
        writer.writeheader()
        writer.writerows(trip_rows)
    json_path = tmp_path / "trips.json"
    json_path.write_text(json.dumps({"instances": instances}))
    expected = _predict_ok(client, {"instances": instances})
    for path in (csv_path, json_path):
        commands, args = _predict_args(url=server.url, instances=path, batch_size=4)
        assert commands["predict"](args) == 0
        printed = [float(line) for line in capsys.readouterr().out.split()]
        np.testing.assert_allclose(printed, expected, rtol=RTOL)

    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps([dict(instances[0], **{f.HOUR_KEY: "noon"})]))
    commands, args = _predict_args(url=server.url, instances=bad_path)
    assert commands["predict"](args) == 1
    assert f"instances[0].{f.HOUR_KEY}" in capsys.readouterr().err
    commands, args = _predict_args(url=server.url, instances=tmp_path / "absent.json")
    assert commands["predict"](args) == 2
