"""Requests for the Vertex endpoint that can say "unknown" for any optional field.

Vertex's prebuilt TF Serving container answers `serving_default`, whose named inputs must all
be present in every instance; its "missing" value for a coordinate is NaN, which JSON cannot
carry (and Vertex's front end parses the body as JSON). A serialized tf.Example can leave any
optional field out, which the model's Transform treats as an empty CSV cell was treated in
training. So a trip with unknown coordinates goes to the endpoint's `:rawPredict` (the body
reaches TF Serving unchanged) as

    {"signature_name": "serving_tf_example", "instances": [{"b64": "<tf.Example>"}]}

and the same body is accepted by `taxifare serve` at `/v1/models/<name>:predict`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from taxifare_modules import features as f

# The body `:rawPredict` hands to the serving container.
RAW_PREDICT_CONTENT_TYPE = "application/json"


def trip_example(trip: Mapping[str, Any]) -> bytes:
    """A trip (raw field -> value; None or left out: unknown) as a serialized tf.Example.

    Raises:
      ValueError: a field the model does not take, or a value of the wrong kind, named.
    """
    from tensorflow.core.example import example_pb2

    unknown = sorted(set(trip) - set(f.RAW_FEATURE_KEYS))
    if unknown:
        raise ValueError(
            f"unknown trip field(s) {unknown}; the model takes {list(f.RAW_FEATURE_KEYS)}"
        )
    missing = [k for k in f.REQUIRED_FEATURE_KEYS if trip.get(k) is None]
    if missing:
        raise ValueError(f"required trip field(s) {missing} have no value")
    example = example_pb2.Example()
    for key, value in trip.items():
        if value is None:
            continue  # unknown: left out, as an empty CSV cell was in training
        feature = example.features.feature[key]
        try:
            if key in f.FLOAT_FEATURE_KEYS:
                number = float(value)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError("not a finite number (leave the field out when unknown)")
                feature.float_list.value.append(number)
            elif key in f.INT_FEATURE_KEYS:
                if isinstance(value, bool) or float(value) != int(float(value)):
                    raise ValueError("not an integer")
                feature.int64_list.value.append(int(float(value)))
            else:
                if not isinstance(value, str):
                    raise ValueError("not a string")
                feature.bytes_list.value.append(value.encode())
        except (TypeError, ValueError) as e:
            raise ValueError(f"trip field {key}: {value!r}: {e}") from None
    return example.SerializeToString()


def endpoint_body(trips: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON body for the endpoint's `:rawPredict` (and `taxifare serve`'s `:predict`)."""
    return {
        "signature_name": f.SERVING_TF_EXAMPLE_SIGNATURE,
        "instances": [{"b64": base64.b64encode(trip_example(t)).decode()} for t in trips],
    }


def raw_predict_request(endpoint: str, body: Mapping[str, Any]) -> Any:
    """The `aiplatform_v1.RawPredictRequest` that sends `body` to the endpoint as it is.

    Args:
      endpoint: projects/<project>/locations/<region>/endpoints/<id>.
      body: e.g. endpoint_body(trips); strict JSON (no NaN).
    """
    from google.api import httpbody_pb2
    from google.cloud import aiplatform_v1

    data = json.dumps(body, allow_nan=False).encode()
    return aiplatform_v1.RawPredictRequest(
        endpoint=endpoint,
        http_body=httpbody_pb2.HttpBody(content_type=RAW_PREDICT_CONTENT_TYPE, data=data),
    )
