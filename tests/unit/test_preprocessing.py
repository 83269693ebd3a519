"""preprocessing_fn through tft_beam on a handful of trips, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from taxifare_modules import features as f
from taxifare_modules.preprocessing import preprocessing_fn

# Three trips: a complete one, one without dropoff (and without company), and a long one.
TRIPS = [
    dict(
        pickup_latitude=[41.88],
        pickup_longitude=[-87.63],
        dropoff_latitude=[41.90],
        dropoff_longitude=[-87.62],
        pickup_community_area=[32],
        dropoff_community_area=[8],
        trip_start_hour=[9],
        trip_start_day=[2],
        trip_start_month=[3],
        trip_start_timestamp=[1400000000],
        payment_type=[b"Cash"],
        company=[b"A Cab"],
        fare=[7.5],
    ),
    dict(
        pickup_latitude=[41.98],
        pickup_longitude=[-87.90],
        dropoff_latitude=[],
        dropoff_longitude=[],
        pickup_community_area=[76],
        dropoff_community_area=[],
        trip_start_hour=[23],
        trip_start_day=[7],
        trip_start_month=[12],
        trip_start_timestamp=[1410000000],
        payment_type=[b"Cash"],
        company=[],
        fare=[40.0],
    ),
    dict(
        pickup_latitude=[41.79],
        pickup_longitude=[-87.60],
        dropoff_latitude=[41.98],
        dropoff_longitude=[-87.90],
        pickup_community_area=[41],
        dropoff_community_area=[76],
        trip_start_hour=[0],
        trip_start_day=[1],
        trip_start_month=[1],
        trip_start_timestamp=[1420000000],
        payment_type=[b"Credit Card"],
        company=[b"A Cab"],
        fare=[45.25],
    ),
]


def _haversine(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * f.EARTH_RADIUS_MILES * math.asin(math.sqrt(a))


def _zscore(values):
    values = np.asarray(values, dtype=np.float64)
    return (values - values.mean()) / values.std()


@pytest.fixture(scope="module")
def tft_dir(tmp_path_factory):
    """TFT's temporary directory: the analyzers write the vocabulary files there."""
    return tmp_path_factory.mktemp("tft")


@pytest.fixture(scope="module")
def transformed(tft_dir) -> list[dict]:
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    spec = {
        **{k: tf.io.VarLenFeature(tf.float32) for k in f.FLOAT_FEATURE_KEYS},
        **{k: tf.io.VarLenFeature(tf.int64) for k in f.INT_FEATURE_KEYS},
        **{k: tf.io.VarLenFeature(tf.string) for k in f.STRING_FEATURE_KEYS},
        f.LABEL_KEY: tf.io.VarLenFeature(tf.float32),
    }
    metadata = tft.DatasetMetadata.from_feature_spec(spec)
    with tft_beam.Context(temp_dir=str(tft_dir), force_tf_compat_v1=False):
        (rows, _), _ = (TRIPS, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=False
        )
    return rows


def test_outputs_every_feature_the_model_reads(transformed):
    expected = set(f.DENSE_FLOAT_XF) | set(f.INT_XF) | {f.LABEL_KEY}
    assert set(transformed[0]) == expected


def test_distance_is_haversine_of_complete_trips_and_zero_when_an_end_is_missing(transformed):
    d0 = _haversine(41.88, -87.63, 41.90, -87.62)
    d2 = _haversine(41.79, -87.60, 41.98, -87.90)
    expected = _zscore([math.log1p(d0), 0.0, math.log1p(d2)])
    got = [row[f.DISTANCE_XF] for row in transformed]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_missing_values_are_flagged_and_scale_to_the_mean(transformed):
    flag = f.missing_indicator_name
    assert [r[flag(f.DROPOFF_LATITUDE_KEY)] for r in transformed] == [0.0, 1.0, 0.0]
    assert [r[flag(f.PICKUP_LATITUDE_KEY)] for r in transformed] == [0.0, 0.0, 0.0]
    assert [r[flag(f.COMPANY_KEY)] for r in transformed] == [0.0, 1.0, 0.0]
    assert [r[flag(f.DROPOFF_AREA_KEY)] for r in transformed] == [0.0, 1.0, 0.0]
    # Statistics describe the present dropoff latitudes only; the missing one scales to 0,
    # the mean of the present ones.
    present = _zscore([41.90, 41.98])
    got = [r[f.transformed_name(f.DROPOFF_LATITUDE_KEY)] for r in transformed]
    np.testing.assert_allclose(got, [present[0], 0.0, present[1]], rtol=1e-3, atol=1e-3)
    # A coordinate present in every trip scales over all of them.
    got = [r[f.transformed_name(f.PICKUP_LONGITUDE_KEY)] for r in transformed]
    np.testing.assert_allclose(got, _zscore([-87.63, -87.90, -87.60]), rtol=1e-3, atol=1e-3)


def test_timestamp_and_deltas_are_z_scores(transformed):
    got = [r[f.TIMESTAMP_XF] for r in transformed]
    np.testing.assert_allclose(got, _zscore([1.40e9, 1.41e9, 1.42e9]), rtol=1e-3, atol=1e-3)
    # The trip without a dropoff has no delta (0 before scaling).
    expected = _zscore([41.90 - 41.88, 0.0, 41.98 - 41.79])
    got = [r[f.DELTA_LAT_XF] for r in transformed]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_time_ids_and_hour_of_week(transformed):
    assert [r[f.HOUR_XF] for r in transformed] == [9, 23, 0]
    assert [r[f.DAY_XF] for r in transformed] == [1, 6, 0]
    assert [r[f.MONTH_XF] for r in transformed] == [2, 11, 0]
    # (day - 1) * 24 + hour: Monday 9h, Saturday 23h, Sunday 0h.
    assert [r[f.HOUR_OF_WEEK_XF] for r in transformed] == [33, 167, 0]


def test_community_areas_keep_their_number_and_missing_is_zero(transformed):
    assert [r[f.PICKUP_AREA_XF] for r in transformed] == [32, 76, 41]
    assert [r[f.DROPOFF_AREA_XF] for r in transformed] == [8, 0, 76]


def test_vocabularies_rank_by_frequency(transformed, tft_dir):
    # Cash appears twice, Credit Card once: ids 0 and 1.
    assert [r[f.PAYMENT_TYPE_XF] for r in transformed] == [0, 0, 1]
    company = [r[f.COMPANY_XF] for r in transformed]
    # "A Cab" is the whole vocabulary; a missing company ("") is never a vocabulary entry,
    # so it lands in an out-of-vocabulary bucket, the same one in training and serving.
    assert company[0] == company[2] == 0
    assert 1 <= company[1] < 1 + f.COMPANY_OOV_BUCKETS
    vocabularies = list(tft_dir.rglob(f.COMPANY_KEY))
    assert vocabularies, "no company vocabulary file written"
    for path in vocabularies:
        assert path.read_bytes().splitlines() == [b"A Cab"], path


def test_ids_are_in_range_and_missing_dropoff_gets_its_own_bucket(transformed):
    for row in transformed:
        for key, size in f.CATEGORICAL_XF_SIZES.items():
            assert 0 <= row[key] < size, key
        for key in f.COORDINATE_BUCKET_XF:
            assert 0 <= row[key] <= f.COORDINATE_QUANTILES, key
    # The trip without dropoff coordinates sits in the last (missing) bucket on both axes.
    dropoff = f.COORDINATE_BUCKET_XF[2:]
    assert [transformed[1][k] for k in dropoff] == [f.COORDINATE_QUANTILES] * 2
    assert all(transformed[0][k] < f.COORDINATE_QUANTILES for k in dropoff)


def test_label_passes_through(transformed):
    assert [r[f.LABEL_KEY] for r in transformed] == pytest.approx([7.5, 40.0, 45.25])
