"""The single source of truth for the taxi-fare features.

Raw keys, the label, which raw fields a booking-time model may use, bucket counts and the
names of the transformed features all live here. Transform, the model, the serving
signatures, TFMA's label key and the REST request validation import this module; no feature
name is written as a string literal anywhere else.
"""

from __future__ import annotations

import math

# The label: the fare in US dollars.
LABEL_KEY = "fare"
# The output of every serving signature: the predicted fare in US dollars.
PREDICTION_KEY = "predicted_fare"

# Names of the exported SavedModel's signatures.
SERVING_DEFAULT_SIGNATURE = "serving_default"  # raw trip fields as named tensors
SERVING_TF_EXAMPLE_SIGNATURE = "serving_tf_example"  # serialized tf.Examples
TRANSFORM_FEATURES_SIGNATURE = "transform_features"  # for TFMA
SERVING_TF_EXAMPLE_INPUT_KEY = "examples"

# Raw fields known when a ride is booked.
PICKUP_LATITUDE_KEY = "pickup_latitude"
PICKUP_LONGITUDE_KEY = "pickup_longitude"
DROPOFF_LATITUDE_KEY = "dropoff_latitude"
DROPOFF_LONGITUDE_KEY = "dropoff_longitude"
PICKUP_AREA_KEY = "pickup_community_area"
DROPOFF_AREA_KEY = "dropoff_community_area"
HOUR_KEY = "trip_start_hour"
DAY_KEY = "trip_start_day"  # 1 = Sunday ... 7 = Saturday
MONTH_KEY = "trip_start_month"
TIMESTAMP_KEY = "trip_start_timestamp"  # seconds since the epoch
PAYMENT_TYPE_KEY = "payment_type"
COMPANY_KEY = "company"

# Raw fields known only after the trip: they would leak the answer, so no model input may
# use them. Kept here so tests can prove they are not used.
POST_TRIP_KEYS = ("trip_miles", "trip_seconds", "tips")

# Raw fields in the source data the model ignores on purpose (almost always missing).
IGNORED_KEYS = ("pickup_census_tract", "dropoff_census_tract")

COORDINATE_KEYS = (
    PICKUP_LATITUDE_KEY,
    PICKUP_LONGITUDE_KEY,
    DROPOFF_LATITUDE_KEY,
    DROPOFF_LONGITUDE_KEY,
)
AREA_KEYS = (PICKUP_AREA_KEY, DROPOFF_AREA_KEY)
TIME_KEYS = (HOUR_KEY, DAY_KEY, MONTH_KEY)
CATEGORICAL_STRING_KEYS = (PAYMENT_TYPE_KEY, COMPANY_KEY)

# Every raw input of the model, with its dtype as a client sends it.
FLOAT_FEATURE_KEYS = COORDINATE_KEYS
INT_FEATURE_KEYS = AREA_KEYS + TIME_KEYS + (TIMESTAMP_KEY,)
STRING_FEATURE_KEYS = CATEGORICAL_STRING_KEYS
RAW_FEATURE_KEYS = FLOAT_FEATURE_KEYS + INT_FEATURE_KEYS + STRING_FEATURE_KEYS

# Fields a real trip lacks now and then (see data/README.md); every other model input must be
# present. Missing fields are treated the same way in training and serving: absent from the
# tf.Example, or, in the named-tensor signature, set to the MISSING value of their dtype.
OPTIONAL_FEATURE_KEYS = COORDINATE_KEYS + AREA_KEYS + (COMPANY_KEY,)
REQUIRED_FEATURE_KEYS = tuple(k for k in RAW_FEATURE_KEYS if k not in OPTIONAL_FEATURE_KEYS)

# The values that mean "missing" in the `serving_default` (named tensors) signature.
MISSING_FLOAT = math.nan
MISSING_INT = -1
MISSING_STRING = ""

# Valid ranges of the integer time fields (also in the curated schema).
HOUR_RANGE = (0, 23)
DAY_RANGE = (1, 7)
MONTH_RANGE = (1, 12)
# Chicago has 77 community areas, numbered 1..77; 0 is used for "unknown" after Transform.
AREA_COUNT = 77

# Transform parameters.
# Transform cuts each coordinate into this many quantile buckets (the finest grid); the
# model merges neighbouring fine buckets into `coordinate_buckets` coarse ones (a divisor
# of this), so the grid's resolution is a model hyperparameter that a tuning trial can
# change without running Transform again (see model.CoordinateGrid).
COORDINATE_QUANTILES = 64
# Coarse grids a model may use: each merges 64 / n neighbouring quantile buckets.
COORDINATE_BUCKET_CHOICES = (4, 8, 16, 32, 64)
# Defaults of the model's grid and of the hash buckets of the pickup-cell x dropoff-cell cross.
COORDINATE_BUCKETS = 16
CELL_CROSS_BUCKETS = 2_000
COMPANY_VOCAB_SIZE = 60
COMPANY_OOV_BUCKETS = 2
PAYMENT_VOCAB_SIZE = 10
PAYMENT_OOV_BUCKETS = 1

# Earth radius for the haversine distance, in miles (fares are metered in miles).
EARTH_RADIUS_MILES = 3958.8


def transformed_name(key: str) -> str:
    """Returns the name of a transformed feature derived from raw key `key`."""
    return f"{key}_xf"


# Transformed feature names produced by preprocessing_fn.
DISTANCE_XF = transformed_name("haversine_miles")
DELTA_LAT_XF = transformed_name("delta_latitude")
DELTA_LON_XF = transformed_name("delta_longitude")
TIMESTAMP_XF = transformed_name(TIMESTAMP_KEY)
# Built inside the model from the coordinate buckets (names of its layers' outputs).
PICKUP_CELL_XF = transformed_name("pickup_cell")
DROPOFF_CELL_XF = transformed_name("dropoff_cell")
CELL_CROSS_XF = transformed_name("pickup_x_dropoff_cell")
HOUR_OF_WEEK_XF = transformed_name("hour_of_week")
HOUR_XF = transformed_name(HOUR_KEY)
DAY_XF = transformed_name(DAY_KEY)
MONTH_XF = transformed_name(MONTH_KEY)
PAYMENT_TYPE_XF = transformed_name(PAYMENT_TYPE_KEY)
COMPANY_XF = transformed_name(COMPANY_KEY)
PICKUP_AREA_XF = transformed_name(PICKUP_AREA_KEY)
DROPOFF_AREA_XF = transformed_name(DROPOFF_AREA_KEY)
LABEL_XF = transformed_name(LABEL_KEY)


def missing_indicator_name(key: str) -> str:
    """Returns the name of the 0/1 feature that says raw key `key` was missing."""
    return transformed_name(f"{key}_missing")


def coordinate_bucket_name(key: str) -> str:
    """Returns the name of the fine quantile bucket id of coordinate raw key `key`."""
    return transformed_name(f"{key}_bucket")


COORDINATE_XF = tuple(transformed_name(k) for k in COORDINATE_KEYS)
# Quantile bucket ids 0..COORDINATE_QUANTILES - 1 of each coordinate, in COORDINATE_KEYS
# order; a missing coordinate gets the id COORDINATE_QUANTILES.
COORDINATE_BUCKET_XF = tuple(coordinate_bucket_name(k) for k in COORDINATE_KEYS)
MISSING_INDICATOR_XF = tuple(missing_indicator_name(k) for k in OPTIONAL_FEATURE_KEYS)

# Dense float inputs of the deep part of the model.
DENSE_FLOAT_XF = (
    DISTANCE_XF,
    DELTA_LAT_XF,
    DELTA_LON_XF,
    TIMESTAMP_XF,
    *COORDINATE_XF,
    *MISSING_INDICATOR_XF,
)

# Categorical (integer id) inputs and how many ids each can take (the coordinate buckets
# are categorical too, but reach the model's embeddings through its grid, whose size is a
# hyperparameter).
CATEGORICAL_XF_SIZES: dict[str, int] = {
    HOUR_OF_WEEK_XF: 24 * 7,
    HOUR_XF: 24,
    DAY_XF: 7,
    MONTH_XF: 12,
    PAYMENT_TYPE_XF: PAYMENT_VOCAB_SIZE + PAYMENT_OOV_BUCKETS,
    COMPANY_XF: COMPANY_VOCAB_SIZE + COMPANY_OOV_BUCKETS,
    PICKUP_AREA_XF: AREA_COUNT + 1,
    DROPOFF_AREA_XF: AREA_COUNT + 1,
}

# Every integer input of the model.
INT_XF = (*CATEGORICAL_XF_SIZES, *COORDINATE_BUCKET_XF)

# Slices the Evaluator reports metrics on (raw keys).
SLICE_KEYS = (HOUR_KEY, PAYMENT_TYPE_KEY)

# Monitoring (skew and drift): how each raw field is compared between training and serving or
# between two spans. Integer fields with a small fixed domain are compared as the categories
# they are (an hour is not "close" to the next one in any way the model relies on); the other
# numeric fields by their distribution functions.
CATEGORICAL_INT_KEYS = AREA_KEYS + TIME_KEYS
MONITORED_CATEGORICAL_KEYS = STRING_FEATURE_KEYS + CATEGORICAL_INT_KEYS
MONITORED_NUMERIC_KEYS = FLOAT_FEATURE_KEYS + (TIMESTAMP_KEY,)
SKEW_KEYS = RAW_FEATURE_KEYS
# The label is not compared between spans: a fare's drift shows in the Evaluator's metrics.
DRIFT_KEYS = RAW_FEATURE_KEYS

# What the model computes rather than what it is sent, compared when the served model is
# known: the trip distance its Transform graph derives and the fare it predicts, each with
# the raw fields it is computed from (named when it is flagged). A client that sends the
# dropoff point as the pickup point too leaves every coordinate's distribution almost as it
# was, but not the distance.
DERIVED_FEATURE_INPUTS: dict[str, tuple[str, ...]] = {
    DISTANCE_XF: COORDINATE_KEYS,
    PREDICTION_KEY: RAW_FEATURE_KEYS,
}
DERIVED_KEYS = tuple(DERIVED_FEATURE_INPUTS)


# What a person reads on a figure's axis for each feature, its unit included (the run report
# and the skew/drift report).
FEATURE_UNITS = {
    **{k: "degrees" for k in COORDINATE_KEYS},
    TIMESTAMP_KEY: "seconds since 1970-01-01 UTC",
    HOUR_KEY: "hour of day (0-23)",
    DAY_KEY: "day of week (1 = Sunday)",
    MONTH_KEY: "month (1-12)",
    PICKUP_AREA_KEY: "community area (1-77)",
    DROPOFF_AREA_KEY: "community area (1-77)",
    PAYMENT_TYPE_KEY: "payment type",
    COMPANY_KEY: "company",
    LABEL_KEY: "fare (US dollars)",
    "trip_miles": "miles",
    "trip_seconds": "seconds",
    "tips": "US dollars",
    DISTANCE_XF: "trip distance as the model sees it (standardized log miles)",
    PREDICTION_KEY: "predicted fare (US dollars)",
}
