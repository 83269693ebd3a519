"""A trip with unknown coordinates, sent as the Vertex endpoint takes it (strict JSON: no
NaN), gives the fare the model gives the NaN sentinels; the same body locally."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from pipeline.serving.client import csv_row_to_instance, predict
from pipeline.vertex import prediction
from taxifare_modules import features as f

pytestmark = pytest.mark.slow

ENDPOINT = "projects/my-gcp-project/locations/us-central1/endpoints/4242"


@pytest.fixture(scope="module")
def trips_and_model(sample_rows, tmp_path_factory):
    from tests.model_factory import export_small_model

    model = export_small_model(sample_rows[:300], tmp_path_factory.mktemp("model"), epochs=1)
    rows = [r for r in sample_rows[:2000] if not r[f.DROPOFF_LATITUDE_KEY]][:4]
    rows += [r for r in sample_rows[:2000] if all(r[k] for k in f.RAW_FEATURE_KEYS)][:2]
    assert len(rows) == 6
    return rows, model


def test_unknown_coordinates_reach_the_model_as_missing(trips_and_model, tmp_path):
    import tensorflow as tf

    from pipeline.serving.config import ServeConfig
    from tests.serving.helpers import InProcessServer
    from tests.trips import rows_to_named_tensors

    rows, model = trips_and_model
    trips = [csv_row_to_instance(r) for r in rows]
    # Unknown said both ways a client would: left out, or null.
    trips[1] = {**trips[1], f.DROPOFF_LATITUDE_KEY: None, f.DROPOFF_LONGITUDE_KEY: None}
    body = prediction.endpoint_body(trips)
    text = json.dumps(body, allow_nan=False)  # what Vertex's front end accepts
    assert "NaN" not in text and body["signature_name"] == f.SERVING_TF_EXAMPLE_SIGNATURE

    # As the prediction container does: decode b64, call the named signature.
    loaded = tf.saved_model.load(model.export_dir)
    examples = tf.constant([base64.b64decode(i["b64"]) for i in body["instances"]])
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](examples=examples)
    by_example = by_example[f.PREDICTION_KEY].numpy()
    # The same trips with the NaN sentinels serving_default takes for "missing".
    by_sentinel = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](**rows_to_named_tensors(rows))
    np.testing.assert_allclose(by_example, by_sentinel[f.PREDICTION_KEY].numpy(), rtol=1e-5)
    assert np.all(np.isfinite(by_example))

    # The same body to `taxifare serve`.
    root = tmp_path / "taxifare"
    shutil.copytree(model.export_dir, root / "1")
    server = InProcessServer(ServeConfig(model_dir=str(root)))
    try:
        fares = predict(
            server.url,
            body["instances"],
            signature_name=body["signature_name"],
        )
    finally:
        server.stop()
    np.testing.assert_allclose(fares, by_example, rtol=1e-5)


def test_the_raw_predict_request_carries_the_body_unchanged(trips_and_model):
    from google.cloud import aiplatform_v1

    rows, _ = trips_and_model
    body = prediction.endpoint_body([csv_row_to_instance(r) for r in rows])
    request = prediction.raw_predict_request(ENDPOINT, body)
    wire = aiplatform_v1.RawPredictRequest.serialize(request)
    back = aiplatform_v1.RawPredictRequest.deserialize(wire)
    assert back.endpoint == ENDPOINT
    assert back.http_body.content_type == "application/json"
    assert json.loads(back.http_body.data) == body


@pytest.mark.parametrize(
    ("trip", "message"),
    [
        ({f.PICKUP_LATITUDE_KEY: float("nan")}, "not a finite number"),
        ({"trip_miles": 3.0}, "unknown trip field(s) ['trip_miles']"),
        ({f.HOUR_KEY: 7.5}, "not an integer"),
        ({f.HOUR_KEY: None}, "required trip field(s)"),
    ],
)
def test_a_bad_trip_is_named(sample_rows, trip, message):
    complete = next(r for r in sample_rows if all(r[k] for k in f.RAW_FEATURE_KEYS))
    with pytest.raises(ValueError) as e:
        prediction.trip_example({**csv_row_to_instance(complete), **trip})
    assert message in str(e.value)
