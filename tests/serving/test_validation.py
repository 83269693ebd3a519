"""Request validation without a server: what is accepted, and what the errors say."""

from __future__ import annotations

import base64
import math

import pytest

from pipeline.serving.validation import (
    RequestError,
    check_value,
    parse_json_body,
    parse_predict_request,
)
from taxifare_modules import features as f

TRIP = {
    f.HOUR_KEY: 7,
    f.DAY_KEY: 2,
    f.MONTH_KEY: 11,
    f.TIMESTAMP_KEY: 1_380_000_000,
    f.PAYMENT_TYPE_KEY: "Cash",
}


def _error(body, max_instances: int = 10) -> str:
    with pytest.raises(RequestError) as info:
        parse_predict_request(body, max_instances)
    assert info.value.status == 400
    return info.value.message


def test_required_fields_only_is_a_valid_trip():
    request = parse_predict_request({"instances": [TRIP]}, 10)
    assert request.signature_name == f.SERVING_DEFAULT_SIGNATURE
    assert request.trips == [TRIP] and not request.columnar


def test_optional_fields_missing_null_or_sentinel_are_all_missing():
    variants = [
        dict(TRIP),
        dict(TRIP, **{k: None for k in f.OPTIONAL_FEATURE_KEYS}),
        dict(TRIP, **{k: f.MISSING_INT for k in f.AREA_KEYS}, **{f.COMPANY_KEY: ""}),
    ]
    request = parse_predict_request({"instances": variants}, 10)
    assert request.trips == [TRIP] * 3


def test_numbers_are_converted_to_the_field_dtype():
    trip = dict(TRIP, **{f.HOUR_KEY: 7.0, f.PICKUP_LATITUDE_KEY: 42})
    parsed = parse_predict_request({"instances": [trip]}, 10).trips[0]
    assert parsed[f.HOUR_KEY] == 7 and isinstance(parsed[f.HOUR_KEY], int)
    assert parsed[f.PICKUP_LATITUDE_KEY] == 42.0 and isinstance(
        parsed[f.PICKUP_LATITUDE_KEY], float
    )


@pytest.mark.parametrize(
    "key,value,fragment",
    [
        (f.HOUR_KEY, 7.5, "integer"),
        (f.HOUR_KEY, "7", "integer"),
        (f.HOUR_KEY, True, "integer"),
        (f.HOUR_KEY, -3, "range"),
        (f.DAY_KEY, 8, "range"),
        (f.TIMESTAMP_KEY, -5, "range"),
        (f.TIMESTAMP_KEY, 2**64, "int64"),
        (f.PICKUP_LATITUDE_KEY, "41.9", "number"),
        (f.PICKUP_LATITUDE_KEY, 1e39, "float32"),
        (f.PICKUP_LATITUDE_KEY, math.inf, "inf"),
        (f.COMPANY_KEY, 5, "string"),
        (f.PAYMENT_TYPE_KEY, "", "empty"),
    ],
)
def test_bad_values_name_the_field(key, value, fragment):
    with pytest.raises(RequestError) as info:
        check_value(key, value, f"instances[4].{key}")
    assert info.value.message.startswith(f"instances[4].{key}: ")
    assert fragment in info.value.message


def test_nan_and_infinity_literals_are_reported_in_place():
    body = parse_json_body(b'{"instances": [{"pickup_latitude": NaN}]}'.replace(
        b"pickup_latitude", f.PICKUP_LATITUDE_KEY.encode()
    ))  # fmt: skip
    message = _error(dict(body, instances=[dict(TRIP, **body["instances"][0])]))
    assert f"instances[0].{f.PICKUP_LATITUDE_KEY}" in message and "NaN" in message
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_json_body(b"{'single': 'quotes'}")
    with pytest.raises(RequestError, match="empty"):
        parse_json_body(b" \n")


def test_columnar_form():
    columns = {k: [v, v] for k, v in TRIP.items()}
    columns[f.COMPANY_KEY] = ["A", None]
    request = parse_predict_request({"inputs": columns}, 10)
    assert request.columnar and len(request) == 2
    assert request.trips[0][f.COMPANY_KEY] == "A" and f.COMPANY_KEY not in request.trips[1]
    message = _error({"inputs": dict(columns, **{f.MONTH_KEY: [1, 13]})})
    assert message.startswith(f"inputs.{f.MONTH_KEY}[1]: ")


def test_b64_examples_are_checked_like_json():
    from tests.trips import row_to_example

    row = {k: str(v) for k, v in TRIP.items()}
    serialized = row_to_example(row)
    good = base64.b64encode(serialized).decode()
    request = parse_predict_request({"instances": [{"b64": good}]}, 10)
    assert request.signature_name == f.SERVING_TF_EXAMPLE_SIGNATURE
    assert request.trips == [TRIP]
    # The model runs the checked values, re-encoded, not the client's bytes.
    from tensorflow.core.example import example_pb2

    rerun = example_pb2.Example.FromString(request.examples[0])
    assert rerun == example_pb2.Example.FromString(serialized)
    # URL-safe alphabet and missing padding are accepted.
    urlsafe = good.replace("+", "-").replace("/", "_").rstrip("=")
    assert parse_predict_request({"instances": [{"b64": urlsafe}]}, 10).trips == [TRIP]

    missing = base64.b64encode(row_to_example(dict(row, **{f.HOUR_KEY: ""}))).decode()
    message = _error({"instances": [{"b64": good}, {"b64": missing}]})
    assert message.startswith("instances[1].b64: ") and f.HOUR_KEY in message
    out_of_range = base64.b64encode(row_to_example(dict(row, **{f.HOUR_KEY: "30"}))).decode()
    assert f"instances[0].b64.{f.HOUR_KEY}" in _error({"instances": [{"b64": out_of_range}]})


def test_top_level_shape_errors():
    assert "JSON object" in _error([TRIP])
    assert "unknown key 'instance'" in _error({"instance": [TRIP]})
    assert "signature_name" in _error({"instances": [TRIP], "signature_name": 3})
    assert "at most 2" in _error({"instances": [TRIP] * 3}, max_instances=2)


def test_undeclared_example_features_are_ignored_counted_or_refused_when_strict():
    from tensorflow.core.example import example_pb2

    from tests.trips import row_to_example

    example = example_pb2.Example.FromString(row_to_example({k: str(v) for k, v in TRIP.items()}))
    feature = example.features.feature
    feature[f.LABEL_KEY].float_list.value.append(12.5)
    feature["trip_miles"].float_list.value.append(3.0)
    feature["anything"].bytes_list.value.append(b"\xff\xfe not text")
    b64 = {"b64": base64.b64encode(example.SerializeToString()).decode()}
    request = parse_predict_request({"instances": [b64, b64]}, 10)
    assert request.trips == [TRIP, TRIP]
    assert request.ignored_features == {f.LABEL_KEY: 2, "trip_miles": 2, "anything": 2}
    with pytest.raises(RequestError, match=r"instances\[0\].b64: unknown feature"):
        parse_predict_request({"instances": [b64]}, 10, strict_examples=True)
    # A declared feature of the wrong kind is still refused, naming it.
    feature[f.HOUR_KEY].Clear()
    feature[f.HOUR_KEY].float_list.value.append(7.0)
    wrong = {"b64": base64.b64encode(example.SerializeToString()).decode()}
    message = _error({"instances": [b64, wrong]})
    assert message.startswith(f"instances[1].b64.{f.HOUR_KEY}: ") and "int64_list" in message


def test_hostile_json_is_refused_before_it_can_hurt():
    deep = b'{"instances": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    with pytest.raises(RequestError, match="nested 65 levels deep"):
        parse_json_body(deep)
    surrogate = parse_json_body(b'{"instances": [{"company": "\\ud800"}]}')
    message = _error({"instances": [dict(TRIP, **surrogate["instances"][0])]})
    assert message.startswith(f"instances[0].{f.COMPANY_KEY}: ") and "Unicode" in message
    # Valid non-ASCII text is fine.
    trip = dict(TRIP, **{f.COMPANY_KEY: "Taxi Élite 東京"})
    assert parse_predict_request({"instances": [trip]}, 10).trips == [trip]
