"""The model trains, and the exported signatures give the training path's fare for raw trips.

A transform graph is fitted with tft_beam on real trips, the model trains a few steps on the
transformed rows, and the SavedModel is exported with the project's own signatures. For the
same trips (some lacking dropoff, area or company), `serving_default` (named raw tensors,
missing = documented sentinel), `serving_tf_example` (missing = left out of the example) and
the model applied to the transformed training rows must agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from taxifare_modules import features as f
from tests.model_factory import export_small_model
from tests.trips import instance_to_example, instances_to_named_tensors

N_TRIPS = 400


@pytest.fixture(scope="module")
def trained(sample_rows, tmp_path_factory):
    small = export_small_model(sample_rows[:N_TRIPS], tmp_path_factory.mktemp("signatures"))
    return small.trips, small.losses, small.export_dir, small.direct_predictions


def test_model_trains(trained):
    losses = trained[1]
    assert losses[-1] < 0.7 * losses[0]


def test_sample_has_trips_with_missing_fields(trained):
    trips = trained[0]
    assert any(not t[f.DROPOFF_LATITUDE_KEY] for t in trips)
    assert any(not t[f.COMPANY_KEY] for t in trips)


def test_exported_signatures_exist_with_raw_inputs(trained):
    loaded = tf.saved_model.load(trained[2])
    assert {
        f.SERVING_DEFAULT_SIGNATURE,
        f.SERVING_TF_EXAMPLE_SIGNATURE,
        f.TRANSFORM_FEATURES_SIGNATURE,
    } <= set(loaded.signatures)
    inputs = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE].structured_input_signature[1]
    assert set(inputs) == set(f.RAW_FEATURE_KEYS)
    assert inputs[f.HOUR_KEY].dtype == tf.int64
    assert inputs[f.PICKUP_LATITUDE_KEY].dtype == tf.float32


def test_both_signatures_and_the_training_path_give_the_same_fare(trained):
    trips, _, export_dir, direct = trained
    loaded = tf.saved_model.load(export_dir)
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        examples=tf.constant([instance_to_example(t) for t in trips])
    )[f.PREDICTION_KEY].numpy()
    by_name = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE](**instances_to_named_tensors(trips))[
        f.PREDICTION_KEY
    ].numpy()
    assert by_example.shape == by_name.shape == (len(trips),)
    assert np.all(np.isfinite(by_name))
    np.testing.assert_allclose(by_name, by_example, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(by_name, direct, rtol=1e-5, atol=1e-4)


def test_missing_sentinels_differ_from_a_real_value(trained):
    """The sentinel really means missing: it is not read as a number."""
    trips, _, export_dir, _ = trained
    loaded = tf.saved_model.load(export_dir)
    trip = next(t for t in trips if t[f.DROPOFF_LATITUDE_KEY])
    fn = loaded.signatures[f.SERVING_DEFAULT_SIGNATURE]
    full = fn(**instances_to_named_tensors([trip]))[f.PREDICTION_KEY].numpy()[0]
    missing = dict(trip, **{f.DROPOFF_LATITUDE_KEY: [], f.DROPOFF_LONGITUDE_KEY: []})
    by_name = fn(**instances_to_named_tensors([missing]))[f.PREDICTION_KEY].numpy()[0]
    by_example = loaded.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        examples=tf.constant([instance_to_example(missing)])
    )[f.PREDICTION_KEY].numpy()[0]
    assert math.isfinite(by_name) and by_name != pytest.approx(full, abs=1e-6)
    assert by_name == pytest.approx(by_example, abs=1e-4)
