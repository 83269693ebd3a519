"""Fixtures of the serving tests: one small real model and real trips to send it."""

from __future__ import annotations

import shutil

import pytest

from pipeline.serving.client import csv_row_to_instance
from taxifare_modules import features as f
from tests.serving.helpers import MODEL_NAME

N_MODEL_ROWS = 400


@pytest.fixture(scope="session")
def small_model(sample_rows, tmp_path_factory):
    """One small real model for every serving test (about a minute to build)."""
    from tests.model_factory import export_small_model

    return export_small_model(sample_rows[:N_MODEL_ROWS], tmp_path_factory.mktemp("serving_model"))


@pytest.fixture(scope="session")
def model_dir(small_model, tmp_path_factory) -> str:
    """`<tmp>/models/taxifare` holding the small model as version 1 (the Pusher's layout)."""
    root = tmp_path_factory.mktemp("models") / MODEL_NAME
    shutil.copytree(small_model.export_dir, root / "1")
    return str(root)


@pytest.fixture(scope="session")
def trip_rows(sample_rows) -> list[dict[str, str]]:
    """Real CSV rows: complete ones and ones missing each kind of optional field."""
    rows = sample_rows[:N_MODEL_ROWS]
    complete = [r for r in rows if all(r[k] for k in f.RAW_FEATURE_KEYS)][:6]
    no_dropoff = [r for r in rows if not r[f.DROPOFF_LATITUDE_KEY] and r[f.COMPANY_KEY]][:3]
    no_company = [r for r in rows if not r[f.COMPANY_KEY] and r[f.DROPOFF_LATITUDE_KEY]][:3]
    no_pickup = [r for r in rows if not r[f.PICKUP_LATITUDE_KEY]][:2]
    chosen = complete + no_dropoff + no_company + no_pickup
    assert len(no_dropoff) == 3 and len(no_company) == 3 and len(no_pickup) == 2
    return chosen


@pytest.fixture(scope="session")
def instances(trip_rows) -> list[dict]:
    """`trip_rows` as JSON instances (missing fields omitted)."""
    return [csv_row_to_instance(r) for r in trip_rows]


@pytest.fixture(scope="session")
def direct_fares(small_model, trip_rows):
    """The exported model called directly (no server) on `trip_rows`, both signatures."""
    import tensorflow as tf

    from tests.trips import row_to_example, rows_to_named_tensors

    loaded = tf.saved_model.load(small_model.export_dir)
    raw = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](**rows_to_named_tensors(trip_rows))
    examples = tf.constant([row_to_example(r) for r in trip_rows])
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        **{f.SERVING_TF_EXAMPLE_INPUT_KEY: examples}
    )
    return (
        raw[f.PREDICTION_KEY].numpy().reshape(-1),
        by_example[f.PREDICTION_KEY].numpy().reshape(-1),
    )


@pytest.fixture(scope="module")
def stub(server):
    """A TF Serving PredictionService stub on the gRPC port of the module's `server`."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
