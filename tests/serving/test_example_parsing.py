"""A tf.Example is read once, by TensorFlow's parser, and that one reading is what is checked,
logged and run. Bytes that parsers read differently (a feature named twice, a feature with
several lists or kinds, fields a tf.Example does not have) are a 400 / INVALID_ARGUMENT
naming the feature, over REST (b64) and gRPC (`serving_tf_example`).

The examples are written here at the wire level, since protobuf's own serializer cannot
produce the ambiguous forms a hostile client sends."""

from __future__ import annotations

import base64
import random
import struct
import uuid

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from pipeline.serving import versions
from pipeline.serving.config import ServeConfig
from pipeline.serving.request_log import read_request_log
from pipeline.serving.validation import RequestError, parse_examples, parse_predict_request
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME, InProcessServer

PREDICT = f"/v1/models/{MODEL_NAME}:predict"
TIMEOUT = 30.0

# --- a tf.Example written by hand -----------------------------------------------------------

# A complete trip of valid values (the one the server warms a model up with).
TRIP = dict(versions.WARM_UP_TRIP)
BYTES, FLOATS, INTS = 0x0A, 0x12, 0x1A  # Feature's oneof tags


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values take ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def delimited(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + varint(len(payload)) + payload


def float_list(*values: float, packed: bool = True) -> bytes:
    if packed:
        return delimited(0x0A, b"".join(struct.pack("<f", v) for v in values)) if values else b""
    return b"".join(b"\x0d" + struct.pack("<f", v) for v in values)


def int64_list(*values: int, packed: bool = True) -> bytes:
    if packed:
        return delimited(0x0A, b"".join(varint(v) for v in values)) if values else b""
    return b"".join(b"\x08" + varint(v) for v in values)


def bytes_list(*values: bytes) -> bytes:
    return b"".join(delimited(0x0A, v) for v in values)


def kind_of(key: str) -> int:
    if key in f.FLOAT_FEATURE_KEYS:
        return FLOATS
    return INTS if key in f.INT_FEATURE_KEYS else BYTES


def value_list(key: str, *values, packed: bool = True) -> bytes:
    """The list payload of `values` in the kind `key` is declared with."""
    kind = kind_of(key)
    if kind == FLOATS:
        return float_list(*values, packed=packed)
    if kind == INTS:
        return int64_list(*values, packed=packed)
    return bytes_list(*(v.encode() if isinstance(v, str) else v for v in values))


def feature(*lists: tuple[int, bytes]) -> bytes:
    """A Feature holding each (oneof tag, list payload) in turn."""
    return b"".join(delimited(tag, payload) for tag, payload in lists)


def entry(name: str | bytes, feature_bytes: bytes) -> bytes:
    key = name.encode() if isinstance(name, str) else name
    return delimited(0x0A, delimited(0x0A, key) + delimited(0x12, feature_bytes))


def example(*entries: bytes) -> bytes:
    return delimited(0x0A, b"".join(entries))


def trip_entries(trip: dict, skip: tuple[str, ...] = ()) -> list[bytes]:
    return [
        entry(key, feature((kind_of(key), value_list(key, value))))
        for key, value in trip.items()
        if key not in skip
    ]


def with_feature(key: str, feature_bytes: bytes) -> bytes:
    """TRIP with `key`'s Feature replaced by `feature_bytes`."""
    return example(*trip_entries(TRIP, skip=(key,)), entry(key, feature_bytes))


# The issue's case: [45.0], an empty list of another kind, then [41.88]. Protobuf keeps the
# last list (41.88, checked and logged), TensorFlow's parser the first (45.0, priced).
LAT = f.PICKUP_LATITUDE_KEY
THREE_LISTS = with_feature(
    LAT, feature((FLOATS, float_list(45.0)), (INTS, b""), (FLOATS, float_list(41.88)))
)
AMBIGUOUS = {
    "value, empty list of another kind, value": (THREE_LISTS, LAT),
    "two lists of one kind": (
        with_feature(LAT, feature((FLOATS, float_list(45.0)), (FLOATS, float_list(41.88)))),
        LAT,
    ),
    "two kinds": (
        with_feature(f.HOUR_KEY, feature((INTS, int64_list(3)), (FLOATS, float_list(23.0)))),
        f.HOUR_KEY,
    ),
    "map entry repeated": (
        example(
            entry(f.PAYMENT_TYPE_KEY, feature((BYTES, bytes_list(b"Cash")))),
            *trip_entries(TRIP),
        ),
        f.PAYMENT_TYPE_KEY,
    ),
    "map entry repeated in a second features field": (
        example(*trip_entries(TRIP)) + example(entry(f.HOUR_KEY, feature((INTS, int64_list(23))))),
        f.HOUR_KEY,
    ),
    "unknown field in a feature": (
        with_feature(f.HOUR_KEY, feature((INTS, int64_list(3))) + b"\x20\x05"),
        f.HOUR_KEY,
    ),
    "packed and unpacked values": (
        with_feature(
            f.HOUR_KEY,
            feature((INTS, int64_list(3) + int64_list(5, packed=False))),
        ),
        f.HOUR_KEY,
    ),
    "two packed runs": (
        with_feature(LAT, feature((FLOATS, float_list(45.0) + float_list(41.88)))),
        LAT,
    ),
    "value before name": (
        example(
            *trip_entries(TRIP, skip=(f.HOUR_KEY,)),
            delimited(
                0x0A,
                delimited(0x12, feature((INTS, int64_list(3))))
                + delimited(0x0A, f.HOUR_KEY.encode()),
            ),
        ),
        None,
    ),
    "unknown field in the example": (example(*trip_entries(TRIP)) + b"\x10\x01", None),
}
BAD_VALUES = {
    "two values": (with_feature(f.HOUR_KEY, feature((INTS, int64_list(3, 5)))), f.HOUR_KEY),
    "wrong kind": (with_feature(f.HOUR_KEY, feature((FLOATS, float_list(3.0)))), f.HOUR_KEY),
    "sentinel -1 in a tf.Example": (
        with_feature(f.PICKUP_AREA_KEY, feature((INTS, int64_list(-1)))),
        f.PICKUP_AREA_KEY,
    ),
    "empty string in a tf.Example": (
        with_feature(f.COMPANY_KEY, feature((BYTES, bytes_list(b"")))),
        f.COMPANY_KEY,
    ),
    "not UTF-8": (
        with_feature(f.PAYMENT_TYPE_KEY, feature((BYTES, bytes_list(b"\xff\xfe")))),
        f.PAYMENT_TYPE_KEY,
    ),
}


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# --- the decoding alone ---------------------------------------------------------------------


def test_a_hand_written_example_reads_as_its_trip_and_is_re_encoded_for_the_model():
    data = example(*trip_entries(TRIP))
    trips, rerun = parse_examples([data], ["instances[0].b64"])
    assert set(trips[0]) == set(TRIP)
    for key, value in TRIP.items():
        expected = float(np.float32(value)) if key in f.FLOAT_FEATURE_KEYS else value
        assert trips[0][key] == expected, key
    # Unpacked values and undeclared features read the same; the model gets the re-encoded
    # trip, which TensorFlow reads as the same values.
    unpacked = example(
        *[
            entry(key, feature((kind_of(key), value_list(key, value, packed=False))))
            for key, value in TRIP.items()
        ],
        entry("tips", feature((FLOATS, float_list(1.0)))),
    )
    ignored: dict[str, int] = {}
    again, _ = parse_examples([unpacked], ["x"], ignored=ignored)
    assert again == trips and ignored == {"tips": 1}
    spec = {
        key: tf.io.VarLenFeature(
            {FLOATS: tf.float32, INTS: tf.int64, BYTES: tf.string}[kind_of(key)]
        )
        for key in f.RAW_FEATURE_KEYS
    }
    original = tf.io.parse_example([data], spec)
    reencoded = tf.io.parse_example(rerun, spec)
    for key in f.RAW_FEATURE_KEYS:
        np.testing.assert_array_equal(original[key].values, reencoded[key].values)


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_bytes_parsers_read_differently_are_refused_naming_the_feature(case):
    data, key = AMBIGUOUS[case]
    with pytest.raises(RequestError) as info:
        parse_predict_request({"instances": [_b64(example(*trip_entries(TRIP))), _b64(data)]}, 10)
    place = "instances[1].b64" + (f".{key}" if key else "")
    assert info.value.message.startswith(f"{place}: "), info.value.message
    assert info.value.status == 400
    reason = {
        "value, empty list of another kind, value": "more than one value list",
        "packed and unpacked values": "mixes a packed run with unpacked values",
        "two packed runs": "mixes value runs",
        "map entry repeated": "appears more than once",
        "value before name": "does not start with its name",
    }.get(case, "")
    assert reason in info.value.message, info.value.message


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_in_an_example_are_refused_naming_the_feature(case):
    data, key = BAD_VALUES[case]
    with pytest.raises(RequestError) as info:
        parse_predict_request({"instances": [_b64(data)]}, 10)
    assert info.value.message.startswith(f"instances[0].b64.{key}: "), info.value.message


def test_the_issues_example_is_not_checked_as_one_trip_and_run_as_another():
    with pytest.raises(RequestError, match=rf"instances\[0\]\.b64\.{LAT}: .*more than one"):
        parse_predict_request({"instances": [_b64(THREE_LISTS)]}, 10)


@pytest.mark.parametrize("name", [False, 0, [], {}, 5])
def test_a_signature_name_that_is_not_a_string_is_a_400(name):
    with pytest.raises(RequestError, match="'signature_name' must be a string"):
        parse_predict_request({"instances": [TRIP], "signature_name": name}, 10)


@pytest.mark.parametrize("name", [None, ""])
def test_a_null_or_empty_signature_name_is_the_default(name):
    request = parse_predict_request({"instances": [TRIP], "signature_name": name}, 10)
    assert request.signature_name == f.SERVING_DEFAULT_SIGNATURE


# --- through the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    running = InProcessServer(
        ServeConfig(
            model_dir=model_dir,
            log_dir=str(tmp_path_factory.mktemp("example_log")),
            grpc_port=0,
            max_wait_ms=0.0,
        )
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def signature(small_model):
    """The `serving_tf_example` signature called in this process."""
    loaded = tf.saved_model.load(small_model.export_dir)
    call = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE]

    def fares(examples: list[bytes]) -> np.ndarray:
        outputs = call(**{f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant(examples, tf.string)})
        return outputs[f.PREDICTION_KEY].numpy().reshape(-1)

    fares.loaded = loaded  # keeps the model alive with its signature
    return fares


def _grpc_request(examples: list[bytes]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = f.SERVING_TF_EXAMPLE_SIGNATURE
    request.inputs[f.SERVING_TF_EXAMPLE_INPUT_KEY].CopyFrom(
        tf.make_tensor_proto(examples, dtype=tf.string)
    )
    return request


def _rest(client: httpx.Client, data: bytes, request_id: str) -> httpx.Response:
    return client.post(
        PREDICT, json={"instances": [_b64(data)]}, headers={"X-Request-Id": request_id}
    )


def _grpc(stub, data: bytes, request_id: str):
    """(fares, None) or (None, the RpcError)."""
    try:
        response = stub.Predict(
            _grpc_request([data]), timeout=TIMEOUT, metadata=(("x-request-id", request_id),)
        )
    except grpc.RpcError as e:
        return None, e
    return tf.make_ndarray(response.outputs[f.PREDICTION_KEY]).reshape(-1), None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ambiguous_examples_are_refused_by_rest_and_grpc_and_not_logged(server, stub, signature):
    good = example(*trip_entries(TRIP))
    expected = signature([good])
    tag = f"ambiguous-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i, case in enumerate(sorted({**AMBIGUOUS, **BAD_VALUES})):
            data, key = {**AMBIGUOUS, **BAD_VALUES}[case]
            response = _rest(client, data, f"{tag}-rest-{i}")
            assert response.status_code == 400, (case, response.text)
            message = response.json()["error"]
            assert message.startswith("instances[0].b64" + (f".{key}" if key else "")), message
            fares, error = _grpc(stub, data, f"{tag}-grpc-{i}")
            assert error is not None, case
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, error.details())
            where = f"inputs.{f.SERVING_TF_EXAMPLE_INPUT_KEY}[0]" + (f".{key}" if key else "")
            assert error.details().startswith(where), error.details()
        # The server keeps answering the plain trip with the signature's own fare.
        answer = _rest(client, good, f"{tag}-good")
        assert answer.status_code == 200
        np.testing.assert_array_equal(np.float32(answer.json()["predictions"]), expected)
    logged = [
        e
        for e in read_request_log(server.state.config.log_dir)
        if e.features.feature["request_id"].bytes_list.value[0].decode().startswith(tag)
    ]
    assert [e.features.feature["request_id"].bytes_list.value[0].decode() for e in logged] == [
        f"{tag}-good"
    ]


# --- the property: refused, or the signature's own fare on the same bytes -------------------

PROPERTY_CASES = 300
_VALID_VALUES = {
    f.PICKUP_LATITUDE_KEY: lambda r: r.uniform(41.6, 42.1),
    f.PICKUP_LONGITUDE_KEY: lambda r: r.uniform(-87.95, -87.5),
    f.DROPOFF_LATITUDE_KEY: lambda r: r.uniform(41.6, 42.1),
    f.DROPOFF_LONGITUDE_KEY: lambda r: r.uniform(-87.95, -87.5),
    f.PICKUP_AREA_KEY: lambda r: r.randint(1, 77),
    f.DROPOFF_AREA_KEY: lambda r: r.randint(1, 77),
    f.HOUR_KEY: lambda r: r.randint(0, 23),
    f.DAY_KEY: lambda r: r.randint(1, 7),
    f.MONTH_KEY: lambda r: r.randint(1, 12),
    f.TIMESTAMP_KEY: lambda r: r.randint(1_357_000_000, 1_483_000_000),
    f.PAYMENT_TYPE_KEY: lambda r: r.choice(["Cash", "Credit Card", "No Charge", "Prcard"]),
    f.COMPANY_KEY: lambda r: r.choice(["Taxi Affiliation Services", "Flash Cab", "Ünïcode"]),
}


def _wrong_value(key: str, rng: random.Random):
    kind = kind_of(key)
    if kind == FLOATS:
        return rng.choice([45.0, -200.0, float("nan"), float("inf"), 0.0])
    if kind == INTS:
        return rng.choice([-1, 0, 24, 99, 2**62, -(2**63)])
    return rng.choice(["", "x" * 300, "\x00"])


def random_example(rng: random.Random) -> bytes:
    """A tf.Example of random trip values: half well formed (values in range, optional fields
    missing, packed or unpacked lists, undeclared features, any entry order), half broken in
    one or two of many ways."""
    broken = rng.random() < 0.5
    defects = {rng.randrange(len(f.RAW_FEATURE_KEYS) + 2) for _ in range(rng.choice([1, 2]))}
    entries = []
    for index, key in enumerate(f.RAW_FEATURE_KEYS):
        if key in f.OPTIONAL_FEATURE_KEYS and rng.random() < 0.15:
            continue  # missing
        value = _VALID_VALUES[key](rng)
        lists = [(kind_of(key), value_list(key, value, packed=rng.random() < 0.7))]
        defect = rng.randrange(8) if broken and index in defects else None
        if defect == 0:  # a value out of range, not finite, or a sentinel
            lists = [(kind_of(key), value_list(key, _wrong_value(key, rng)))]
        elif defect == 1:  # a second list: the same kind, another kind, or an empty one
            other = rng.choice([FLOATS, INTS, BYTES])
            payload = {FLOATS: float_list(45.0), INTS: int64_list(7), BYTES: bytes_list(b"x")}
            lists.insert(rng.randint(0, 1), (other, rng.choice([payload[other], b""])))
        elif defect == 2:  # two values, or an empty list
            lists = [(kind_of(key), rng.choice([b"", value_list(key, value, value)]))]
        elif defect == 3:  # another kind
            other = rng.choice([k for k in (FLOATS, INTS, BYTES) if k != kind_of(key)])
            lists = [(other, {FLOATS: float_list(1.0), INTS: int64_list(1)}.get(other, b"\n\x01a"))]
        elif defect == 4:  # a Feature without a kind
            lists = []
        body = feature(*lists)
        if defect == 5:  # an unknown field inside the Feature
            body = rng.choice([b"\x20\x01" + body, body + b"\x2a\x00"])
        entries.append(entry(key, body))
        if defect == 6:  # the map entry again, another value
            again = _VALID_VALUES[key](rng)
            entries.append(entry(key, feature((kind_of(key), value_list(key, again)))))
        if defect == 7:  # packed and unpacked values mixed
            mixed = value_list(key, value) + value_list(key, value, packed=False)
            entries[-1] = entry(key, feature((kind_of(key), mixed)))
    for _ in range(rng.choice([0, 0, 1, 2])):  # undeclared features, any kind
        name = rng.choice(["fare", "tips", "trip_miles", "zz", ""])
        entries.append(entry(name, feature((rng.choice([FLOATS, INTS, BYTES]), b""))))
    rng.shuffle(entries)
    data = example(*entries)
    if broken and len(f.RAW_FEATURE_KEYS) in defects:
        data = data[: rng.randint(0, len(data))]  # truncated
    if broken and len(f.RAW_FEATURE_KEYS) + 1 in defects:
        data = data + rng.choice([b"\x10\x01", b"\x0a", b"\xff"])  # trailing garbage
    return data


def _tensorflow_reads(data: bytes) -> dict[str, list]:
    """The raw field values the signature's parse spec reads from `data` (raises if none)."""
    dtypes = {FLOATS: tf.float32, INTS: tf.int64, BYTES: tf.string}
    spec = {key: tf.io.VarLenFeature(dtypes[kind_of(key)]) for key in f.RAW_FEATURE_KEYS}
    parsed = tf.io.parse_example(tf.constant([data]), spec)
    return {key: parsed[key].values.numpy().tolist() for key in f.RAW_FEATURE_KEYS}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_random_examples_are_refused_or_priced_exactly_as_the_signature_prices_them(
    server, stub, signature
):
    rng = random.Random(20261207)
    tag = f"property-{uuid.uuid4().hex}"
    answered: dict[str, bytes] = {}
    outcomes = {"answered": 0, "refused": 0}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(PROPERTY_CASES):
            data = random_example(rng)
            try:
                in_process = signature([data])
            except (tf.errors.InvalidArgumentError, UnicodeDecodeError):
                # The signature itself refuses these bytes (TensorFlow's message quotes
                # them, and fails to decode when they are not text).
                in_process = None
            response = _rest(client, data, f"{tag}-rest-{i}")
            fares, error = _grpc(stub, data, f"{tag}-grpc-{i}")
            if response.status_code == 400:
                assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                    i,
                    response.text,
                    error,
                )
                outcomes["refused"] += 1
                continue
            assert response.status_code == 200, (i, response.text)
            assert error is None, (i, error.details())
            assert in_process is not None, (i, data)
            np.testing.assert_array_equal(np.float32(response.json()["predictions"]), in_process)
            np.testing.assert_array_equal(fares, in_process)
            answered[f"{tag}-rest-{i}"] = answered[f"{tag}-grpc-{i}"] = data
            outcomes["answered"] += 1
    # Both outcomes are exercised.
    assert min(outcomes.values()) > PROPERTY_CASES // 4, outcomes
    # The log holds, for every answered instance, the values TensorFlow read from its bytes.
    logged = {}
    for record in read_request_log(server.state.config.log_dir):
        request_id = record.features.feature["request_id"].bytes_list.value[0].decode()
        if request_id.startswith(tag):
            logged[request_id] = record.features.feature
    assert set(logged) == set(answered)
    for request_id, data in answered.items():
        read = _tensorflow_reads(data)
        log = logged[request_id]
        for key in f.RAW_FEATURE_KEYS:
            kind = log[key].WhichOneof("kind") if key in log else None
            values = list(getattr(log[key], kind).value) if kind else []
            if kind == "float_list":
                values = np.float32(values).tolist()
            assert values == read[key], (request_id, key, values, read[key])
