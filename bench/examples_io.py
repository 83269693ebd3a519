"""Reading fares and coordinates from a TFX Examples artifact.

An Examples artifact directory holds one ``Split-<name>/`` folder per split, each with
gzipped TFRecord files of serialized ``tf.train.Example``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABEL = "fare"
COORDINATES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")


@dataclass(frozen=True)
class TripColumns:
    """Fares and pickup/dropoff coordinates of one split; missing values are NaN.

    Attributes:
        fare: The label, in dollars.
        pickup_latitude: Degrees.
        pickup_longitude: Degrees.
        dropoff_latitude: Degrees.
        dropoff_longitude: Degrees.
    """

    fare: np.ndarray
    pickup_latitude: np.ndarray
    pickup_longitude: np.ndarray
    dropoff_latitude: np.ndarray
    dropoff_longitude: np.ndarray

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.fare)

    def with_fare(self) -> TripColumns:
        """Returns only the rows that have a fare."""
        keep = ~np.isnan(self.fare)
        return TripColumns(*(column[keep] for column in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        """All columns in field order."""
        return (
            self.fare,
            self.pickup_latitude,
            self.pickup_longitude,
            self.dropoff_latitude,
            self.dropoff_longitude,
        )


def split_files(examples_uri: Path, split: str) -> list[Path]:
    """Lists the record files of one split of an Examples artifact.

    Raises:
        FileNotFoundError: If the split folder is missing or empty.
    """
    folder = examples_uri / f"Split-{split}"
    files = sorted(path for path in folder.glob("*") if path.is_file())
    if not files:
        raise FileNotFoundError(f"no record files in {folder}")
    return files


def read_split(examples_uri: Path, split: str) -> TripColumns:
    """Reads the fare and coordinates of every example in one split."""
    # Quiet TensorFlow's C++ logs. This affects only this process, after the measured runs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import tensorflow as tf  # Deferred: importing TensorFlow takes tens of seconds.

    names = (LABEL, *COORDINATES)
    values: dict[str, list[float]] = {name: [] for name in names}
    files = [str(path) for path in split_files(examples_uri, split)]
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        for name in names:
            values[name].append(_scalar(features, name))
    return TripColumns(*(np.asarray(values[name], dtype=np.float64) for name in names))


def _scalar(features: Mapping[str, Any], name: str) -> float:
    """The first value of a numeric feature, or NaN if it is absent or empty."""
    if name not in features:
        return float("nan")
    feature = features[name]
    kind = feature.WhichOneof("kind")
    if kind == "float_list" and feature.float_list.value:
        return float(feature.float_list.value[0])
    if kind == "int64_list" and feature.int64_list.value:
        return float(feature.int64_list.value[0])
    if kind == "bytes_list" and feature.bytes_list.value:
        try:
            return float(feature.bytes_list.value[0])
        except ValueError:
            return float("nan")
    return float("nan")
