"""`taxifare serve --grpc-port` against TF Serving's own client shape: a
`PredictionServiceStub` on an insecure channel, `PredictRequest`s of `tf.make_tensor_proto`
tensors, with a timeout. Same fares as REST and as a direct call of the signatures; the
gRPC bad-input corpus; metadata and status; the request log across both protocols; a
hot swap under gRPC load."""

from __future__ import annotations

import base64
import shutil
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.serving import cli as serving_cli
from pipeline.serving.client import csv_row_to_instance
from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import read_request_log
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, InProcessServer, wait_for
from tests.trips import row_to_example, rows_to_named_tensors

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MAX_INSTANCES = 150
MAX_BODY_BYTES = 200_000
RTOL = 1e-5
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir,
            log_dir=str(tmp_path_factory.mktemp("grpc_log")),
            grpc_port=0,
            max_instances=MAX_INSTANCES,
            max_body_bytes=MAX_BODY_BYTES,
            max_wait_ms=2.0,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows100(sample_rows):
    """100 real trips (some with missing optional fields)."""
    return sample_rows[:100]


def _raw_request(rows, version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = f.SERVING_DEFAULT_SIGNATURE
    if version is not None:
        request.model_spec.version.value = version
    for key, tensor in rows_to_named_tensors(rows).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
    return request


def _example_request(examples: list[bytes]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = f.SERVING_TF_EXAMPLE_SIGNATURE
    request.inputs[f.SERVING_TF_EXAMPLE_INPUT_KEY].CopyFrom(
        tf.make_tensor_proto(examples, dtype=tf.string)
    )
    return request


def _fares(response) -> np.ndarray:
    return tf.make_ndarray(response.outputs[f.PREDICTION_KEY]).reshape(-1)


def _direct(small_model, rows) -> tuple[np.ndarray, np.ndarray]:
    loaded = tf.saved_model.load(small_model.export_dir)
    raw = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](**rows_to_named_tensors(rows))
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        **{f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant([row_to_example(r) for r in rows])}
    )
    return (
        raw[f.PREDICTION_KEY].numpy().reshape(-1),
        by_example[f.PREDICTION_KEY].numpy().reshape(-1),
    )


def test_grpc_rest_and_direct_call_agree_for_one_and_a_hundred(server, stub, small_model, rows100):
    direct_raw, direct_example = _direct(small_model, rows100)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for rows, raw, by_example in (
            (rows100[:1], direct_raw[:1], direct_example[:1]),
            (rows100, direct_raw, direct_example),
        ):
            response = stub.Predict(_raw_request(rows), timeout=TIMEOUT)
            assert response.model_spec.version.value == 1
            assert response.model_spec.signature_name == f.SERVING_DEFAULT_SIGNATURE
            np.testing.assert_allclose(_fares(response), raw, rtol=RTOL)
            examples = [row_to_example(r) for r in rows]
            response = stub.Predict(_example_request(examples), timeout=TIMEOUT)
            np.testing.assert_allclose(_fares(response), by_example, rtol=RTOL)
            rest = client.post(
                f"/v1/models/{MODEL_NAME}:predict",
                json={"instances": [csv_row_to_instance(r) for r in rows]},
            )
            assert rest.status_code == 200, rest.text
            np.testing.assert_allclose(rest.json()["predictions"], raw, rtol=RTOL)
            versioned = stub.Predict(_raw_request(rows, version=1), timeout=TIMEOUT)
            np.testing.assert_allclose(_fares(versioned), raw, rtol=RTOL)


def test_metadata_lists_both_signatures_and_status_is_available(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = MODEL_NAME
        request.metadata_field.append("signature_def")
        response = prediction.GetModelMetadata(request, timeout=TIMEOUT)
        assert response.model_spec.version.value == 1
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        defs = signatures.signature_def
        assert set(defs) == {f.SERVING_DEFAULT_SIGNATURE, f.SERVING_TF_EXAMPLE_SIGNATURE}
        assert set(defs[f.SERVING_DEFAULT_SIGNATURE].inputs) == set(f.RAW_FEATURE_KEYS)
        assert (
            defs[f.SERVING_DEFAULT_SIGNATURE].inputs[f.HOUR_KEY].dtype == tf.int64.as_datatype_enum
        )
        assert set(defs[f.SERVING_TF_EXAMPLE_SIGNATURE].inputs) == {f.SERVING_TF_EXAMPLE_INPUT_KEY}
        assert set(defs[f.SERVING_DEFAULT_SIGNATURE].outputs) == {f.PREDICTION_KEY}

        models = model_service_pb2_grpc.ModelServiceStub(channel)
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = MODEL_NAME
        status = models.GetModelStatus(status_request, timeout=TIMEOUT)
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]
        assert status.model_version_status[0].status.error_code == 0


def _bad_cases(rows) -> list[tuple[str, predict_pb2.PredictRequest, grpc.StatusCode, list[str]]]:
    good = rows[:3]

    def changed(edit) -> predict_pb2.PredictRequest:
        request = _raw_request(good)
        edit(request)
        return request

    def unknown_model(r):
        r.model_spec.name = "nope"

    def unknown_version(r):
        r.model_spec.version.value = 7

    def version_label(r):
        r.model_spec.version_label = "stable"

    def wrong_dtype(r):
        r.inputs[f.HOUR_KEY].CopyFrom(tf.make_tensor_proto(np.array([1.5, 2.5, 3.5], np.float32)))

    def wrong_shape(r):
        r.inputs[f.HOUR_KEY].CopyFrom(tf.make_tensor_proto(np.array([[1], [2], [3]], np.int64)))

    def missing_required(r):
        del r.inputs[f.HOUR_KEY]

    def unknown_input(r):
        r.inputs["trip_miles"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0, 3.0], np.float32)))

    def empty(r):
        for key in list(r.inputs):
            tensor = r.inputs[key]
            dtype = tf.as_dtype(tensor.dtype)
            r.inputs[key].CopyFrom(tf.make_tensor_proto(np.array([], dtype.as_numpy_dtype)))

    def out_of_range(r):
        r.inputs[f.HOUR_KEY].CopyFrom(tf.make_tensor_proto(np.array([1, 24, 3], np.int64)))

    too_many = _raw_request([good[0]] * (MAX_INSTANCES + 1))
    too_big = _example_request([b"x" * (MAX_BODY_BYTES + 1000)])
    not_example = _example_request([row_to_example(good[0]), b"this is not a tf.Example"])
    # [45.0], [] of another kind, [41.88]: protobuf reads the last list, TensorFlow the first.
    from tests.serving.test_example_parsing import THREE_LISTS

    ambiguous = _example_request([row_to_example(good[0]), THREE_LISTS])
    return [
        ("unknown model", changed(unknown_model), grpc.StatusCode.NOT_FOUND, ["'nope'"]),
        ("unknown version", changed(unknown_version), grpc.StatusCode.NOT_FOUND, ["version 7"]),
        (
            "version label",  # labels come from TF Serving's model config; we have none
            changed(version_label),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["Unrecognized servable version label: stable"],
        ),
        (
            "wrong dtype",
            changed(wrong_dtype),
            grpc.StatusCode.INVALID_ARGUMENT,
            [f"inputs.{f.HOUR_KEY}", "DT_INT64", "DT_FLOAT"],
        ),
        (
            "wrong shape",
            changed(wrong_shape),
            grpc.StatusCode.INVALID_ARGUMENT,
            [f"inputs.{f.HOUR_KEY}", "rank-1"],
        ),
        (
            "missing required",
            changed(missing_required),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["missing required", f.HOUR_KEY],
        ),
        (
            "unknown input",
            changed(unknown_input),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["unknown input", "trip_miles"],
        ),
        ("empty batch", changed(empty), grpc.StatusCode.INVALID_ARGUMENT, ["empty"]),
        (
            "out of range",
            changed(out_of_range),
            grpc.StatusCode.INVALID_ARGUMENT,
            [f"inputs.{f.HOUR_KEY}[1]", "range"],
        ),
        (
            "too many",
            too_many,
            grpc.StatusCode.INVALID_ARGUMENT,
            [str(MAX_INSTANCES + 1), f"at most {MAX_INSTANCES}"],
        ),
        ("too big", too_big, grpc.StatusCode.RESOURCE_EXHAUSTED, ["larger than max"]),
        (
            "not a tf.Example",
            not_example,
            grpc.StatusCode.INVALID_ARGUMENT,
            [f"inputs.{f.SERVING_TF_EXAMPLE_INPUT_KEY}[1]", "not a serialized tf.Example"],
        ),
        (
            "a feature with several lists",
            ambiguous,
            grpc.StatusCode.INVALID_ARGUMENT,
            [
                f"inputs.{f.SERVING_TF_EXAMPLE_INPUT_KEY}[1].{f.PICKUP_LATITUDE_KEY}: ",
                "more than one",
            ],
        ),
    ]


def test_every_bad_grpc_request_gets_its_status_and_a_message(stub, rows100):
    good = _raw_request(rows100[:2])
    expected = _fares(stub.Predict(good, timeout=TIMEOUT))
    for name, request, code, fragments in _bad_cases(rows100):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=TIMEOUT)
        assert info.value.code() == code, (name, info.value.details())
        for fragment in fragments:
            assert fragment in info.value.details(), (name, fragment, info.value.details())
        # The server keeps answering correctly.
        np.testing.assert_allclose(_fares(stub.Predict(good, timeout=TIMEOUT)), expected)


def _with_extras(row: dict[str, str]) -> bytes:
    """A tf.Example of a whole CSV row: label, post-trip fields and census tracts too."""
    example = tf.train.Example.FromString(row_to_example(row))
    feature = example.features.feature
    feature[f.LABEL_KEY].float_list.value.append(float(row[f.LABEL_KEY] or 0))
    for key in f.POST_TRIP_KEYS:
        feature[key].float_list.value.append(float(row[key] or 0))
    for key in f.IGNORED_KEYS:
        feature[key].int64_list.value.append(17031081500)
    return example.SerializeToString()


def test_undeclared_example_features_are_ignored_and_counted(server, stub, rows100):
    rows = rows100[:5]
    plain = [row_to_example(r) for r in rows]
    extra = [_with_extras(r) for r in rows]
    stats_url = f"{server.url}/v1/models/{MODEL_NAME}/stats"
    before = httpx.get(stats_url).json()["ignored_example_features"]
    expected = _fares(stub.Predict(_example_request(plain), timeout=TIMEOUT))
    by_grpc = _fares(stub.Predict(_example_request(extra), timeout=TIMEOUT))
    np.testing.assert_allclose(by_grpc, expected, rtol=RTOL)
    body = {"instances": [{"b64": base64.b64encode(e).decode()} for e in extra]}
    rest = httpx.post(f"{server.url}/v1/models/{MODEL_NAME}:predict", json=body, timeout=60)
    assert rest.status_code == 200, rest.text
    np.testing.assert_allclose(rest.json()["predictions"], expected, rtol=RTOL)
    after = httpx.get(stats_url).json()["ignored_example_features"]
    for key in (f.LABEL_KEY, *f.POST_TRIP_KEYS, *f.IGNORED_KEYS):
        assert after.get(key, 0) - before.get(key, 0) == 2 * len(rows), key
    assert not set(after) & set(f.RAW_FEATURE_KEYS)


def test_strict_examples_rejects_undeclared_features(model_dir, rows100):
    running = InProcessServer(ServeConfig(model_dir=model_dir, grpc_port=0, strict_examples=True))
    try:
        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(_example_request([_with_extras(rows100[0])]), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown feature" in info.value.details()
        assert f"inputs.{f.SERVING_TF_EXAMPLE_INPUT_KEY}[0]" in info.value.details()
    finally:
        running.stop()


def test_request_log_holds_exactly_what_both_protocols_answered(server, stub, rows100):
    tag = f"both-{time.time_ns()}"
    sent: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(6):
            rows = rows100[i * 3 : i * 3 + 1 + i % 3]
            rest_id, grpc_id = f"{tag}-rest-{i}", f"{tag}-grpc-{i}"
            response = client.post(
                f"/v1/models/{MODEL_NAME}:predict",
                json={"instances": [csv_row_to_instance(r) for r in rows]},
                headers={"X-Request-Id": rest_id},
            )
            assert response.status_code == 200
            sent[rest_id] = len(rows)
            stub.Predict(_raw_request(rows), timeout=TIMEOUT, metadata=(("x-request-id", grpc_id),))
            sent[grpc_id] = len(rows)
        # Refused requests are not logged.
        with pytest.raises(grpc.RpcError):
            stub.Predict(
                _bad_cases(rows100)[2][1], timeout=TIMEOUT, metadata=(("x-request-id", f"{tag}-x"),)
            )
    logged: dict[str, int] = {}
    for example in read_request_log(server.state.config.log_dir):
        request_id = example.features.feature["request_id"].bytes_list.value[0].decode()
        if request_id.startswith(tag):
            logged[request_id] = logged.get(request_id, 0) + 1
    assert logged == sent


def test_unavailable_while_no_version_is_loaded(tmp_path, rows100):
    empty = tmp_path / MODEL_NAME
    empty.mkdir()
    running = InProcessServer(ServeConfig(model_dir=str(empty), grpc_port=0))
    try:
        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(_raw_request(rows100[:1]), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


def test_predict_command_over_grpc(server, rows100, tmp_path, capsys):
    import csv

    path = tmp_path / "trips.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows100[0]))
        writer.writeheader()
        writer.writerows(rows100[:7])
    import argparse

    parser = argparse.ArgumentParser()
    commands = serving_cli.add_serve_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["predict", "--grpc", server.grpc_target, "--instances", str(path), "--batch-size", "3"]
    )
    assert commands["predict"](args) == 0
    printed = [float(x) for x in capsys.readouterr().out.split()]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        rest = client.post(
            f"/v1/models/{MODEL_NAME}:predict",
            json={"instances": [csv_row_to_instance(r) for r in rows100[:7]]},
        ).json()["predictions"]
    np.testing.assert_allclose(printed, rest, rtol=RTOL)


@pytest.mark.timeout(300)
def test_hot_swap_under_grpc_load_loses_no_request(model_dir, small_model, rows100, tmp_path):
    root = tmp_path / MODEL_NAME
    shutil.copytree(f"{model_dir}/1", root / "1")
    running = InProcessServer(
        ServeConfig(model_dir=str(root), grpc_port=0, poll_seconds=0.3, max_wait_ms=2.0)
    )
    results: list[tuple[str, int]] = []
    stop = threading.Event()

    def hammer() -> None:
        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.Predict(_raw_request(rows100[:4]), timeout=TIMEOUT)
                    results.append(("OK", response.model_spec.version.value))
                except grpc.RpcError as e:
                    results.append((e.code().name, 0))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(results) > 5, 60)
        shutil.copytree(small_model.export_dir, root / "2")
        wait_for(
            lambda: any(v == 2 for _, v in results[-5:]), 120, message="version 2 not picked up"
        )
        count = len(results)
        wait_for(lambda: len(results) > count + 10, 60)
    finally:
        stop.set()
        for t in threads:
            t.join()
        running.stop()
    assert all(code == "OK" for code, _ in results), [r for r in results if r[0] != "OK"][:3]
    versions = [v for _, v in results]
    assert set(versions) == {1, 2}


def test_calls_queued_behind_a_busy_model_share_its_next_call_up_to_the_call_limit(
    model_dir, rows100
):
    """No thread per call: while the model is busy, gRPC calls wait on the event loop and
    share the next model call; past `grpc_max_calls` calls in progress, RESOURCE_EXHAUSTED."""
    running = InProcessServer(
        ServeConfig(model_dir=model_dir, grpc_port=0, max_wait_ms=0.0, grpc_max_calls=9)
    )
    model = running.state.versions.current
    real_predict = model.predict
    gate, entered = threading.Event(), threading.Semaphore(0)
    sizes: list[int] = []

    def gated_predict(signature_name, trips, examples):
        sizes.append(len(trips))
        entered.release()
        assert gate.wait(120)
        return real_predict(signature_name, trips, examples)

    model.predict = gated_predict
    try:
        with grpc.insecure_channel(running.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            first = stub.Predict.future(_raw_request(rows100[:1]), timeout=TIMEOUT)
            assert entered.acquire(timeout=60)  # the model is busy with the first call
            queued = [
                stub.Predict.future(_raw_request(rows100[i : i + 1]), timeout=TIMEOUT)
                for i in range(1, 9)
            ]
            wait_for(lambda: len(running.state.batcher._pending) == 8, 60)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(_raw_request(rows100[:1]), timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            gate.set()
            answers = [call.result() for call in [first, *queued]]
            # Below the limit again: answered.
            alone = stub.Predict(_raw_request(rows100[3:4]), timeout=TIMEOUT)
    finally:
        gate.set()
        running.stop()
    assert sizes == [1, 8, 1]
    np.testing.assert_allclose(_fares(answers[3]), _fares(alone), rtol=RTOL)
