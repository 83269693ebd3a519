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
from taxifare_modules.compat import skip_autograph_of_libraries

# Before anything is traced: Keras and TFT internals run unconverted (see compat.py).
skip_autograph_of_libraries()


def _to_dense(x: tf.Tensor | tf.SparseTensor, default: float | int | str) -> tf.Tensor:
    """Turns a [batch, 1] sparse (or dense) input into a dense [batch] tensor."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default
        )
    return tf.reshape(x, [-1])


def _coordinate(x: tf.SparseTensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns (value, NaN where missing; 0/1 missing flag)."""
    raw = _to_dense(tf.cast(x, tf.float32), math.nan)
    missing = tf.math.is_nan(raw)
    return raw, tf.cast(missing, tf.float32)


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

    # Analyzers are few on purpose: each costs Beam stages and a full pass in Transform, so
    # the numeric columns share one z-score and the coordinates one quantile analyzer. Both
    # ignore NaN, which is what a missing coordinate is here: statistics describe the
    # values present, and a missing value scales to 0 (the mean) beside its 0/1 flag.
    coords = {key: _coordinate(inputs[key]) for key in f.COORDINATE_KEYS}
    for key, (_, missing) in coords.items():
        outputs[f.missing_indicator_name(key)] = missing
    plat, plon, dlat, dlon = (coords[key][0] for key in f.COORDINATE_KEYS)
    missing_flags = tf.stack([coords[key][1] for key in f.COORDINATE_KEYS], axis=1)
    complete = 1.0 - tf.reduce_max(missing_flags, axis=1)
    # A distance is only known when both ends are; otherwise 0 and the indicators say why.
    known = [tf.where(tf.math.is_nan(v), tf.zeros_like(v), v) for v in (plat, plon, dlat, dlon)]
    distance = _haversine_miles(*known) * complete
    delta_lat = (known[2] - known[0]) * complete
    delta_lon = (known[3] - known[1]) * complete
    timestamp = _to_dense(tf.cast(inputs[f.TIMESTAMP_KEY], tf.float32), 0.0)

    numeric = {
        **{f.transformed_name(key): coords[key][0] for key in f.COORDINATE_KEYS},
        f.DISTANCE_XF: tf.math.log1p(distance),
        f.DELTA_LAT_XF: delta_lat,
        f.DELTA_LON_XF: delta_lon,
        f.TIMESTAMP_XF: timestamp,
    }
    scaled = tft.scale_to_z_score(tf.stack(list(numeric.values()), axis=1), elementwise=True)
    scaled = tf.where(tf.math.is_nan(scaled), tf.zeros_like(scaled), scaled)
    for i, name in enumerate(numeric):
        outputs[name] = scaled[:, i]

    # Fine quantile buckets per coordinate (a missing coordinate in its own last bucket).
    # The grid cells and the pickup x dropoff cross are built by the model from these ids
    # at its own resolution (model.CoordinateGrid): one quantile analyzer here serves every
    # grid a tuning trial tries, where a Transform per bucket count would redo the
    # analysis per trial.
    coordinates = tf.stack([plat, plon, dlat, dlon], axis=1)
    buckets = tft.bucketize(coordinates, f.COORDINATE_QUANTILES, elementwise=True)
    buckets = tf.where(
        missing_flags > 0,
        tf.constant(f.COORDINATE_QUANTILES, tf.int64),
        tf.cast(buckets, tf.int64),
    )
    for i, name in enumerate(f.COORDINATE_BUCKET_XF):
        outputs[name] = buckets[:, i]

    hour = _clipped_id(inputs[f.HOUR_KEY], *f.HOUR_RANGE)
    day = _clipped_id(inputs[f.DAY_KEY], *f.DAY_RANGE)
    outputs[f.HOUR_XF] = hour
    outputs[f.DAY_XF] = day
    outputs[f.HOUR_OF_WEEK_XF] = day * 24 + hour
    outputs[f.MONTH_XF] = _clipped_id(inputs[f.MONTH_KEY], *f.MONTH_RANGE)

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
