"""gRPC against a hostile client: a shape is checked before anything is expanded, a client's
mistake is INVALID_ARGUMENT (never UNKNOWN), a taken port is refused, and version folders
outside int64 are not served."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tracemalloc

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from pipeline.serving.config import ServeConfig
from pipeline.serving.tensors import DT_FLOAT, DT_INT64, DT_STRING, parse_tensor_request
from pipeline.serving.validation import RequestError
from pipeline.serving.versions import VersionManager, is_version_name
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, InProcessServer
from tests.trips import row_to_example, rows_to_named_tensors

MAX_INSTANCES = 150
MAX_BODY_BYTES = 200_000
TIMEOUT = 30.0
HUGE_VERSION = "99999999999999999999"  # > 2**63 - 1


def _tensor(dtype: int, size: int, **values) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    tensor.tensor_shape.dim.add().size = size
    for field, value in values.items():
        if isinstance(value, (bytes, str)) and field == "tensor_content":
            tensor.tensor_content = value
        else:
            getattr(tensor, field).extend(value)
    return tensor


def _refused(inputs: dict, signature: str = f.SERVING_DEFAULT_SIGNATURE) -> str:
    with pytest.raises(RequestError) as info:
        parse_tensor_request(signature, inputs, MAX_INSTANCES, False, MAX_BODY_BYTES)
    assert info.value.status == 400
    return info.value.message


# --- shapes and contents, decoded alone -----------------------------------------------------


def test_a_shape_claiming_millions_of_values_is_refused_before_anything_is_expanded():
    bomb = {f.HOUR_KEY: _tensor(DT_INT64, 10**7, int64_val=[3])}
    tracemalloc.start()
    try:
        message = _refused(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message == (
        f"the batch has {10**7} instances; at most {MAX_INSTANCES} are accepted per request"
    )
    assert peak < 1_000_000, peak  # expanding would take 80 MB of references
    assert "at most" in _refused({f.HOUR_KEY: _tensor(DT_INT64, 2**40, int64_val=[3])})
    assert "at most" in _refused({f.HOUR_KEY: _tensor(DT_INT64, 2**63 - 1, int64_val=[3])})
    assert "negative size" in _refused({f.HOUR_KEY: _tensor(DT_INT64, -5, int64_val=[3])})


def test_tensor_content_must_hold_whole_values_of_the_shape():
    message = _refused({f.PICKUP_LATITUDE_KEY: _tensor(DT_FLOAT, 2, tensor_content=b"\0" * 7)})
    assert message.startswith(f"inputs.{f.PICKUP_LATITUDE_KEY}: tensor_content holds 7 bytes")
    message = _refused({f.HOUR_KEY: _tensor(DT_INT64, 3, tensor_content=b"\0" * 8)})
    assert message == f"inputs.{f.HOUR_KEY}: shape says 3 values, the tensor holds 1"
    examples = {f.SERVING_TF_EXAMPLE_INPUT_KEY: _tensor(DT_STRING, 1, tensor_content=b"\0" * 8)}
    assert "string_val" in _refused(examples, f.SERVING_TF_EXAMPLE_SIGNATURE)


def test_one_string_filling_a_shape_past_the_message_limit_is_refused(sample_rows):
    example = tf.train.Example.FromString(row_to_example(sample_rows[0]))
    example.features.feature["padding"].bytes_list.value.append(b"x" * 100_000)
    data = example.SerializeToString()
    tensor = _tensor(DT_STRING, 100, string_val=[data])
    message = _refused({f.SERVING_TF_EXAMPLE_INPUT_KEY: tensor}, f.SERVING_TF_EXAMPLE_SIGNATURE)
    assert message.startswith(f"inputs.{f.SERVING_TF_EXAMPLE_INPUT_KEY}: one value filling")
    assert f"{MAX_BODY_BYTES}-byte message limit" in message
    # Numbers too, where the instance limit allows more than the message limit holds.
    hours = {f.HOUR_KEY: _tensor(DT_INT64, 1000, int64_val=[3])}
    with pytest.raises(RequestError, match="8000 bytes, over the 4000-byte message limit"):
        parse_tensor_request(f.SERVING_DEFAULT_SIGNATURE, hours, 10_000, False, 4000)


def test_one_string_filling_a_shape_within_the_limit_is_expanded():
    from pipeline.serving.tensors import _values

    tensor = _tensor(DT_STRING, 3, string_val=[b"Cash"])
    assert _values(f.PAYMENT_TYPE_KEY, tensor, 10, 1000) == [b"Cash"] * 3


def test_version_names_must_fit_in_int64(tmp_path, caplog):
    assert is_version_name(str(2**63 - 1)) and not is_version_name(str(2**63))
    assert not is_version_name(HUGE_VERSION)
    (tmp_path / HUGE_VERSION).mkdir()
    manager = VersionManager(str(tmp_path), loader=lambda path, version: pytest.fail("loaded"))
    with caplog.at_level(logging.WARNING):
        manager.scan(wait_until_stable=False)
    assert manager.statuses() == []
    assert f"ignoring folder '{HUGE_VERSION}'" in caplog.text and "int64" in caplog.text


# --- through a server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    # Version 1, and a copy of it in a folder whose number does not fit a version field.
    root = tmp_path_factory.mktemp("grpc_limits") / MODEL_NAME
    shutil.copytree(f"{model_dir}/1", root / "1")
    shutil.copytree(f"{model_dir}/1", root / HUGE_VERSION)
    running = InProcessServer(
        ServeConfig(
            model_dir=str(root),
            grpc_port=0,
            max_instances=MAX_INSTANCES,
            max_body_bytes=MAX_BODY_BYTES,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


def _request(rows, edit=None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    for key, tensor in rows_to_named_tensors(rows).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(tensor))
    if edit is not None:
        edit(request)
    return request


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_client_mistakes_are_invalid_argument_with_a_message(channel, sample_rows):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    good = _request(sample_rows[:2])
    expected = tf.make_ndarray(stub.Predict(good, timeout=TIMEOUT).outputs[f.PREDICTION_KEY])

    def bomb(r):
        r.inputs[f.HOUR_KEY].CopyFrom(_tensor(DT_INT64, 2**40, int64_val=[3]))

    def bad_content(r):
        r.inputs[f.PICKUP_LATITUDE_KEY].CopyFrom(_tensor(DT_FLOAT, 2, tensor_content=b"\0" * 7))

    def negative(r):
        r.inputs[f.HOUR_KEY].CopyFrom(_tensor(DT_INT64, -1, int64_val=[3]))

    example = tf.train.Example.FromString(row_to_example(sample_rows[0]))
    example.features.feature["padding"].bytes_list.value.append(b"x" * 100_000)
    fill = predict_pb2.PredictRequest()
    fill.model_spec.name = MODEL_NAME
    fill.model_spec.signature_name = f.SERVING_TF_EXAMPLE_SIGNATURE
    fill.inputs[f.SERVING_TF_EXAMPLE_INPUT_KEY].CopyFrom(
        _tensor(DT_STRING, 100, string_val=[example.SerializeToString()])
    )
    cases = {
        "shape 2**40 of one value": (_request(sample_rows[:2], bomb), "at most"),
        "tensor_content of 7 bytes": (_request(sample_rows[:2], bad_content), "tensor_content"),
        "negative size": (_request(sample_rows[:2], negative), "negative"),
        "one string filling 100 instances": (fill, "message limit"),
    }
    for name, (request, fragment) in cases.items():
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, info.value)
        assert fragment in info.value.details(), (name, info.value.details())
    # Bytes that are not the request message at all.
    for method in (
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
    ):
        raw = channel.unary_unary(method)
        for data in (b"\x0a\x05ab", b"\xff", b"\x0a\x02\x0a"):
            with pytest.raises(grpc.RpcError) as info:
                raw(data, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data)
            assert "the request is not a valid tensorflow.serving." in info.value.details()
    # Methods TF Serving has and this server does not serve are UNIMPLEMENTED.
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/tensorflow.serving.PredictionService/Classify")(b"", timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # Still serving, the same fares.
    again = tf.make_ndarray(stub.Predict(good, timeout=TIMEOUT).outputs[f.PREDICTION_KEY])
    np.testing.assert_array_equal(again, expected)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_version_folder_outside_int64_is_not_served(channel, sample_rows):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(_request(sample_rows[:1]), timeout=TIMEOUT)
    assert response.model_spec.version.value == 1
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL_NAME
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        status_request, timeout=TIMEOUT
    )
    assert [s.version for s in status.model_version_status] == [1]
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = MODEL_NAME
    metadata_request.metadata_field.append("signature_def")
    metadata = stub.GetModelMetadata(metadata_request, timeout=TIMEOUT)
    assert metadata.model_spec.version.value == 1


def test_a_taken_grpc_port_is_refused_naming_it(tmp_path):
    """grpcio binds with SO_REUSEPORT unless told not to: a second server on a port another
    listener holds (with SO_REUSEPORT, as a first `taxifare serve` does) would share it."""
    from pipeline.serving.core import PredictCore
    from pipeline.serving.grpc_service import start_grpc_server

    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    core = PredictCore(ServeConfig(model_dir=str(tmp_path), grpc_port=port))

    async def start() -> None:
        server, _ = await start_grpc_server(core, "127.0.0.1", port)
        await server.stop(None)  # only reached if the port was shared

    try:
        with pytest.raises(RuntimeError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            asyncio.run(start())
    finally:
        holder.close()


def test_a_model_must_parse_examples_as_the_server_decodes_them(small_model):
    from pipeline.serving.versions import ModelLoadError, check_example_parsing

    loaded = tf.saved_model.load(small_model.export_dir)
    check_example_parsing(loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE])  # the trainer's

    def signature(spec):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(examples):
            parsed = tf.io.parse_example(examples, spec)
            return {f.PREDICTION_KEY: tf.cast(tf.sparse.to_dense(parsed[f.HOUR_KEY]), tf.float32)}

        return serve.get_concrete_function()

    raw = {
        key: tf.io.VarLenFeature(
            tf.float32
            if key in f.FLOAT_FEATURE_KEYS
            else tf.int64
            if key in f.INT_FEATURE_KEYS
            else tf.string
        )
        for key in f.RAW_FEATURE_KEYS
    }
    check_example_parsing(signature(raw))
    # The pipeline's model also parses the schema's post-trip fields (Transform's raw
    # feature spec): no request carries them, so they are allowed.
    with_post_trip = dict(raw, tips=tf.io.VarLenFeature(tf.float32),
                          trip_seconds=tf.io.VarLenFeature(tf.int64))
    check_example_parsing(signature(with_post_trip))
    fewer = {k: v for k, v in raw.items() if k != f.COMPANY_KEY}
    other_kind = dict(raw, **{f.HOUR_KEY: tf.io.VarLenFeature(tf.float32)})
    for spec in (fewer, other_kind):
        with pytest.raises(ModelLoadError, match="the server decodes"):
            check_example_parsing(signature(spec))
    dense = dict(raw, **{f.DAY_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0)})
    with pytest.raises(ModelLoadError, match="dense or ragged"):
        check_example_parsing(signature(dense))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_exits_1_naming_a_grpc_port_taken_while_it_started(model_dir, tmp_path):
    """The port was free when `taxifare serve` checked it, and taken (by a listener that
    shares ports, as a second server's gRPC was) before its gRPC bound: exit 1, port named."""
    import subprocess
    import sys
    import time

    from tests.serving.helpers import SERVE_ENTRY, free_port, repo_root, subprocess_env

    port, grpc_port = free_port(), free_port()
    output = tmp_path / "server.log"
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with open(output, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE_ENTRY, "serve", "--model-dir", model_dir]
            + ["--port", str(port), "--grpc-port", str(grpc_port)],
            cwd=repo_root(),
            env=subprocess_env(),
            stdout=sink,
            stderr=sink,
        )
        try:
            # uvicorn says this after the port checks, before the model loads and gRPC binds.
            deadline = time.monotonic() + 300
            while "Waiting for application startup" not in output.read_text():
                assert process.poll() is None, output.read_text()[-2000:]
                assert time.monotonic() < deadline, "the server never started up"
                time.sleep(0.05)
            holder.bind(("127.0.0.1", grpc_port))
            holder.listen()
            code = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            holder.close()
    text = output.read_text()
    assert code == 1, text[-2000:]
    assert f"cannot listen for gRPC on 127.0.0.1:{grpc_port}: the port is taken" in text
