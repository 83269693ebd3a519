"""Fare predictors that a trained model has to beat.

Each is fitted on the train split and scored on the test split:

* the training-split mean fare, predicted for every trip;
* ``fare = a + b * distance``, with ``distance`` the haversine pickup-to-dropoff distance,
  fitted by least squares; trips lacking any coordinate get the training mean;
* scikit-learn's HistGradientBoostingRegressor on the raw booking-time fields plus the
  haversine distance, its settings chosen from a small grid on the eval split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.examples_io import TripColumns

EARTH_RADIUS_MILES = 3958.8


@dataclass(frozen=True)
class Score:
    """Error of one predictor on the test split.

    Attributes:
        name: What predicted.
        rmse: Root mean squared error, in dollars.
        mae: Mean absolute error, in dollars.
        rows: Eval rows scored.
        detail: How the predictor was fitted, for the report.
    """

    name: str
    rmse: float
    mae: float
    rows: int
    detail: str = ""


def haversine_miles(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Great-circle distance in miles between points given in degrees; NaN in, NaN out."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = np.radians(lon2 - lon1) / 2
    a = np.sin(half_dphi) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_MILES * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def trip_distance(trips: TripColumns) -> np.ndarray:
    """Haversine pickup-to-dropoff distance in miles; NaN where a coordinate is missing."""
    return haversine_miles(
        trips.pickup_latitude,
        trips.pickup_longitude,
        trips.dropoff_latitude,
        trips.dropoff_longitude,
    )


def errors(actual: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Returns (RMSE, MAE) of ``predicted`` against ``actual``."""
    residual = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(residual**2))), float(np.mean(np.abs(residual)))


def mean_baseline(train: TripColumns, evaluation: TripColumns) -> Score:
    """Scores predicting the training-split mean fare for every eval trip."""
    train, evaluation = _labelled(train, evaluation)
    mean = float(np.mean(train.fare))
    rmse, mae = errors(evaluation.fare, np.full(len(evaluation), mean))
    detail = f"${mean:.2f} for every trip"
    return Score("Training-split mean fare", rmse, mae, len(evaluation), detail)


def distance_baseline(train: TripColumns, evaluation: TripColumns) -> Score:
    """Scores a least-squares line on haversine distance, with the mean as fallback."""
    train, evaluation = _labelled(train, evaluation)
    mean = float(np.mean(train.fare))
    distance = trip_distance(train)
    known = ~np.isnan(distance)
    if np.count_nonzero(known) < 2 or np.ptp(distance[known]) == 0:
        intercept, slope = mean, 0.0  # Nothing to fit a line to.
    else:
        design = np.column_stack([np.ones(np.count_nonzero(known)), distance[known]])
        (intercept, slope), *_ = np.linalg.lstsq(design, train.fare[known], rcond=None)
    eval_distance = trip_distance(evaluation)
    predicted = np.where(np.isnan(eval_distance), mean, intercept + slope * eval_distance)
    rmse, mae = errors(evaluation.fare, predicted)
    fallback = np.count_nonzero(np.isnan(eval_distance))
    detail = (
        f"fare = {intercept:.2f} + {slope:.2f} x miles, fitted on {np.count_nonzero(known):,} "
        f"train trips; {fallback:,} of {len(evaluation):,} test trips lack coordinates "
        "and get the mean"
    )
    return Score("Linear on haversine distance", rmse, mae, len(evaluation), detail)


def _labelled(train: TripColumns, evaluation: TripColumns) -> tuple[TripColumns, TripColumns]:
    """Drops rows without a fare from both splits and checks that some remain."""
    train, evaluation = train.with_fare(), evaluation.with_fare()
    if len(train) == 0 or len(evaluation) == 0:
        raise ValueError("the train and eval splits both need rows with a fare")
    return train, evaluation


# Booking-time raw fields gradient boosting sees (the model's inputs; strings as categories).
_NUMERIC_FIELDS = (
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "pickup_community_area",
    "dropoff_community_area",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "trip_start_timestamp",
)
_CATEGORICAL_FIELDS = ("payment_type", "company")
# The small grid gradient boosting is tuned on, by eval RMSE.
HGB_GRID = tuple(
    {"learning_rate": rate, "max_leaf_nodes": leaves, "min_samples_leaf": 20}
    for rate in (0.05, 0.1)
    for leaves in (15, 31, 63)
)


@dataclass(frozen=True)
class BookingRows:
    """A split's booking-time fields as a matrix (haversine distance last) and its fares."""

    features: np.ndarray  # float64, NaN = missing; categorical columns hold category codes
    fare: np.ndarray
    categorical: tuple[bool, ...]


def read_booking_rows(
    examples_uri, split: str, vocabularies: dict[str, dict[bytes, int]] | None = None
) -> tuple[BookingRows, dict[str, dict[bytes, int]]]:
    """Reads a split's raw booking-time fields; strings coded by `vocabularies` (made if None)."""
    import tensorflow as tf

    from bench.examples_io import split_files

    files = [str(path) for path in split_files(examples_uri, split)]
    vocabularies = (
        vocabularies if vocabularies is not None else {k: {} for k in _CATEGORICAL_FIELDS}
    )
    grow = all(not v for v in vocabularies.values())
    rows, fares = [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        fare = feature["fare"].float_list.value
        if not fare:
            continue
        row = []
        for name in _NUMERIC_FIELDS:
            kind = feature[name].WhichOneof("kind") if name in feature else None
            values = getattr(feature[name], kind).value if kind else []
            row.append(float(values[0]) if values else np.nan)
        for name in _CATEGORICAL_FIELDS:
            values = feature[name].bytes_list.value if name in feature else []
            codes = vocabularies[name]
            if values and values[0] not in codes and grow:
                codes[values[0]] = len(codes)
            row.append(float(codes[values[0]]) if values and values[0] in codes else np.nan)
        rows.append(row)
        fares.append(fare[0])
    matrix = np.asarray(rows, dtype=np.float64)
    distance = haversine_miles(matrix[:, 0], matrix[:, 1], matrix[:, 2], matrix[:, 3])
    categorical = (False,) * len(_NUMERIC_FIELDS) + (True,) * len(_CATEGORICAL_FIELDS) + (False,)
    return (
        BookingRows(np.column_stack([matrix, distance]), np.asarray(fares), categorical),
        vocabularies,
    )


def gradient_boosting_baseline(
    train: BookingRows, evaluation: BookingRows, test: BookingRows
) -> Score:
    """scikit-learn's HistGradientBoostingRegressor: grid chosen on eval, scored on test."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    best = None
    for settings in HGB_GRID:
        model = HistGradientBoostingRegressor(
            **settings, max_iter=300, categorical_features=list(train.categorical), random_state=0
        )
        model.fit(train.features, train.fare)
        rmse, _ = errors(evaluation.fare, model.predict(evaluation.features))
        if best is None or rmse < best[0]:
            best = (rmse, settings, model)
    eval_rmse, settings, model = best
    rmse, mae = errors(test.fare, model.predict(test.features))
    detail = (
        f"booking-time fields + haversine miles; best of {len(HGB_GRID)} settings on eval "
        f"(RMSE ${eval_rmse:.2f}): learning_rate {settings['learning_rate']}, "
        f"max_leaf_nodes {settings['max_leaf_nodes']}, 300 iterations"
    )
    return Score("HistGradientBoosting (scikit-learn)", rmse, mae, len(test.fare), detail)
