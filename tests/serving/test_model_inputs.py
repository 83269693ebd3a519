"""The tensors the server builds from validated trips for the `serving_default` signature."""

from __future__ import annotations

import math

import numpy as np

from pipeline.serving.versions import trip_to_tensors, trips_to_columns
from taxifare_modules import features as f

# Missing: the dropoff longitude, both community areas and the company.
TRIP = {
    f.PICKUP_LATITUDE_KEY: 41.88,
    f.PICKUP_LONGITUDE_KEY: -87.63,
    f.DROPOFF_LATITUDE_KEY: -0.0,
    f.HOUR_KEY: 7,
    f.DAY_KEY: 2,
    f.MONTH_KEY: 11,
    f.TIMESTAMP_KEY: 1_380_000_000,
    f.PAYMENT_TYPE_KEY: "Cash",
}


def test_one_trip_tensors_hold_what_the_columns_hold():
    import tensorflow as tf

    tensors = trip_to_tensors(TRIP)
    columns = trips_to_columns([TRIP])
    assert set(tensors) == set(columns) == set(f.RAW_FEATURE_KEYS)
    dtypes = {
        **{k: tf.float32 for k in f.FLOAT_FEATURE_KEYS},
        **{k: tf.int64 for k in f.INT_FEATURE_KEYS},
        **{k: tf.string for k in f.STRING_FEATURE_KEYS},
    }
    for key, column in columns.items():
        assert tensors[key].shape == (1,) and tensors[key].dtype == dtypes[key], key
        np.testing.assert_array_equal(tensors[key].numpy(), column)  # NaN for missing too
    assert math.copysign(1.0, tensors[f.DROPOFF_LATITUDE_KEY].numpy()[0]) == -1.0


def test_recurring_values_reuse_their_tensor_and_keep_their_sign():
    first = trip_to_tensors(TRIP)
    later = trip_to_tensors(dict(TRIP, **{f.TIMESTAMP_KEY: TRIP[f.TIMESTAMP_KEY] + 60}))
    for key in (f.HOUR_KEY, f.PAYMENT_TYPE_KEY, f.PICKUP_LATITUDE_KEY, f.COMPANY_KEY):
        assert later[key] is first[key], key
    # The timestamp is new with every trip: converted each time, never cached.
    assert later[f.TIMESTAMP_KEY].numpy()[0] == TRIP[f.TIMESTAMP_KEY] + 60
    # 0.0 equals -0.0 but is another value.
    plus_zero = trip_to_tensors(dict(TRIP, **{f.DROPOFF_LATITUDE_KEY: 0.0}))
    assert math.copysign(1.0, plus_zero[f.DROPOFF_LATITUDE_KEY].numpy()[0]) == 1.0
