"""preprocessing_fn: the one feature graph, used in training and, inside the model, in serving.

Every raw input arrives as a SparseTensor of shape [batch, 1] (a field missing from a trip is
an empty row), both from the training examples and from the serving signatures, so missing
values take exactly one path through this graph.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_transform as tft

from taxifare_modules import features as f
from taxifare_modules.tracing import skip_autograph_of_libraries

# Before anything is traced: Keras and TFT internals run unconverted (see tracing.py).
skip_autograph_of_libraries()


def _to_dense(x: tf.Tensor | tf.SparseTensor, default: float | int | str) -> tf.Tensor:
    """Turns a [batch, 1] sparse (or dense) input into a dense [batch] tensor."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    return tf.reshape(x, [-1])


def _coordinate(x: tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns (value with missing entries set to the training mean, 0/1 missing flag)."""
    raw = _to_dense(tf.cast(x, tf.float32), math.nan)
    missing = tf.math.is_nan(raw)
    mean = tft.mean(x)  # over present values only
    return tf.where(missing, tf.cast(mean, tf.float32), raw), tf.cast(missing, tf.float32)


def _haversine_miles(
    lat1: tf.Tensor, lon1: tf.Tensor, lat2: tf.Tensor, lon2: tf.Tensor
) -> tf.Tensor:
    """Great-circle distance between two points given in degrees, in miles."""
    to_rad = math.pi / 180.0
    lat1, lon1, lat2, lon2 = (v * to_rad for v in (lat1, lon1, lat2, lon2))
    a = (
        tf.sin((lat2 - lat1) / 2.0) ** 2
        + tf.cos(lat1) * tf.cos(lat2) * tf.sin((lon2 - lon1) / 2.0) ** 2
    )
    return 2.0 * f.EARTH_RADIUS_MILES * tf.asin(tf.sqrt(tf.clip_by_value(a, 0.0, 1.0)))


def _bucket(value: tf.Tensor, missing: tf.Tensor) -> tf.Tensor:
    """Quantile bucket of a coordinate; a missing coordinate gets its own last bucket."""
    bucket = tft.bucketize(value, f.COORDINATE_BUCKETS)
    return tf.where(missing > 0, tf.constant(f.COORDINATE_BUCKETS, tf.int64), bucket)


def _clipped_id(x: tf.SparseTensor, low: int, high: int) -> tf.Tensor:
    """An integer field as a 0-based id in [0, high - low]; missing maps to 0."""
    value = _to_dense(tf.cast(x, tf.int64), low)
    return tf.clip_by_value(value, low, high) - low


def _area_id(x: tf.SparseTensor) -> tf.Tensor:
    """A community area 1..77 as itself; missing or unknown areas map to 0."""
    value = _to_dense(tf.cast(x, tf.int64), 0)
    known = (value >= 1) & (value <= f.AREA_COUNT)
    return tf.where(known, value, tf.zeros_like(value))


def preprocessing_fn(inputs: dict[str, tf.Tensor | tf.SparseTensor]) -> dict[str, tf.Tensor]:
    """Maps raw trip fields to model features. Called by TFX Transform.

    Args:
      inputs: raw features keyed by the raw keys of `features`; each a SparseTensor
        [batch, 1] (or a dense tensor), absent entries meaning "missing".

    Returns:
      Transformed features keyed by the `*_XF` names of `features`, plus the label when the
      input has it.
    """
    outputs: dict[str, tf.Tensor] = {}

    coords = {}
    for key in f.COORDINATE_KEYS:
        value, missing = _coordinate(inputs[key])
        coords[key] = (value, missing)
        outputs[f.transformed_name(key)] = tft.scale_to_z_score(value)
        outputs[f.missing_indicator_name(key)] = missing

    (plat, plat_m), (plon, plon_m) = coords[f.PICKUP_LATITUDE_KEY], coords[f.PICKUP_LONGITUDE_KEY]
    (dlat, dlat_m), (dlon, dlon_m) = (
        coords[f.DROPOFF_LATITUDE_KEY],
        coords[f.DROPOFF_LONGITUDE_KEY],
    )
    any_missing = tf.reduce_max(tf.stack([plat_m, plon_m, dlat_m, dlon_m]), axis=0)
    complete = 1.0 - any_missing
    # A distance is only known when both ends are; otherwise 0 and the indicators say why.
    distance = _haversine_miles(plat, plon, dlat, dlon) * complete
    outputs[f.DISTANCE_XF] = tft.scale_to_z_score(tf.math.log1p(distance))
    outputs[f.DELTA_LAT_XF] = tft.scale_to_z_score((dlat - plat) * complete)
    outputs[f.DELTA_LON_XF] = tft.scale_to_z_score((dlon - plon) * complete)

    # Pickup and dropoff cells of a coordinate grid, and their cross.
    width = f.COORDINATE_BUCKETS + 1
    pickup_cell = _bucket(plat, plat_m) * width + _bucket(plon, plon_m)
    dropoff_cell = _bucket(dlat, dlat_m) * width + _bucket(dlon, dlon_m)
    outputs[f.PICKUP_CELL_XF] = pickup_cell
    outputs[f.DROPOFF_CELL_XF] = dropoff_cell
    outputs[f.CELL_CROSS_XF] = tf.strings.to_hash_bucket_fast(
        tf.strings.join(
            [tf.strings.as_string(pickup_cell), tf.strings.as_string(dropoff_cell)], "x"
        ),
        f.CELL_CROSS_BUCKETS,
    )

    hour = _clipped_id(inputs[f.HOUR_KEY], *f.HOUR_RANGE)
    day = _clipped_id(inputs[f.DAY_KEY], *f.DAY_RANGE)
    outputs[f.HOUR_XF] = hour
    outputs[f.DAY_XF] = day
    outputs[f.HOUR_OF_WEEK_XF] = day * 24 + hour
    outputs[f.MONTH_XF] = _clipped_id(inputs[f.MONTH_KEY], *f.MONTH_RANGE)

    timestamp = _to_dense(tf.cast(inputs[f.TIMESTAMP_KEY], tf.float32), 0.0)
    outputs[f.TIMESTAMP_XF] = tft.scale_to_z_score(timestamp)

    for key in f.AREA_KEYS:
        area = _area_id(inputs[key])
        outputs[f.transformed_name(key)] = area
        outputs[f.missing_indicator_name(key)] = tf.cast(area == 0, tf.float32)

    outputs[f.PAYMENT_TYPE_XF] = tft.compute_and_apply_vocabulary(
        _to_dense(inputs[f.PAYMENT_TYPE_KEY], f.MISSING_STRING),
        top_k=f.PAYMENT_VOCAB_SIZE,
        num_oov_buckets=f.PAYMENT_OOV_BUCKETS,
        vocab_filename=f.PAYMENT_TYPE_KEY,
    )
    company = _to_dense(inputs[f.COMPANY_KEY], f.MISSING_STRING)
    outputs[f.COMPANY_XF] = tft.compute_and_apply_vocabulary(
        company,
        top_k=f.COMPANY_VOCAB_SIZE,
        num_oov_buckets=f.COMPANY_OOV_BUCKETS,
        vocab_filename=f.COMPANY_KEY,
    )
    outputs[f.missing_indicator_name(f.COMPANY_KEY)] = tf.cast(
        tf.equal(company, f.MISSING_STRING), tf.float32
    )

    if f.LABEL_KEY in inputs:
        outputs[f.LABEL_KEY] = _to_dense(tf.cast(inputs[f.LABEL_KEY], tf.float32), 0.0)
    return outputs
