"""Comparators and thresholds per feature: documented defaults, overridable from YAML.

Categorical features (the string features) are compared with the L-infinity distance of
their value frequencies; numeric ones (floats and the integer fields) with the
Jensen-Shannon divergence of their histograms. The integer fields (hour, day, month,
community areas, timestamp) are treated as numeric on purpose: the statistics StatisticsGen
writes have value frequencies for integers only when the schema marks them categorical, which
the curated schema does not, so their histograms are what both sides have.

A third check is ours, not TFDV's: presence, the absolute difference between the fractions
of examples that have the feature. A field that goes missing in most requests keeps the
shape of its remaining values, so neither distance would see it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from taxifare_modules import features as f

L_INFINITY = "L_INFINITY"
JENSEN_SHANNON = "JENSEN_SHANNON_DIVERGENCE"

# Defaults. Why these values: on 1,000 real trips against the whole real sample, clean
# traffic stays at L-infinity <= 0.02 and at JSD <= 0.005 for the integer fields, while start
# hours moved by 8 give a JSD of about 0.09; the coordinates reach about 0.1 on clean traffic
# (their 10 equal-width buckets are stretched by a few far outliers, so small samples move
# mass between buckets): hence 0.1 for categorical, 0.05 for the integer fields and 0.25 for
# the coordinates.
DEFAULT_CATEGORICAL = 0.1
DEFAULT_NUMERIC = 0.05
DEFAULT_COORDINATE = 0.25
DEFAULT_PRESENCE = 0.2

CATEGORICAL_KEYS = f.STRING_FEATURE_KEYS
NUMERIC_KEYS = f.FLOAT_FEATURE_KEYS + f.INT_FEATURE_KEYS

_SECTION = "monitoring"
_DEFAULT_KEYS = ("categorical", "numeric", "coordinate", "presence")


class ThresholdError(ValueError):
    """A thresholds file that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Thresholds of one check.

    Attributes:
      distance: feature name -> threshold of its distance, in (0, 1].
      presence: feature name -> threshold of its presence difference, in (0, 1].
      source: where they came from ("defaults" or a file name).
    """

    distance: dict[str, float]
    presence: dict[str, float]
    source: str = "defaults"

    def comparator(self, feature: str) -> str:
        """The comparator used for `feature`."""
        return L_INFINITY if feature in CATEGORICAL_KEYS else JENSEN_SHANNON


def default_thresholds(keys: tuple[str, ...] = f.RAW_FEATURE_KEYS) -> Thresholds:
    """The documented defaults for `keys`."""
    return _build(keys, {}, {}, "defaults")


def _build(
    keys: tuple[str, ...], defaults: dict[str, float], per_feature: dict[str, Any], source: str
) -> Thresholds:
    categorical = defaults.get("categorical", DEFAULT_CATEGORICAL)
    numeric = defaults.get("numeric", DEFAULT_NUMERIC)
    coordinate = defaults.get("coordinate", DEFAULT_COORDINATE)
    presence = defaults.get("presence", DEFAULT_PRESENCE)
    distance: dict[str, float] = {}
    for key in keys:
        if key in CATEGORICAL_KEYS:
            distance[key] = categorical
        elif key in f.COORDINATE_KEYS:
            distance[key] = coordinate
        else:
            distance[key] = numeric
    presences = {key: presence for key in keys}
    for key, value in per_feature.items():
        if isinstance(value, dict):
            if "distance" in value:
                distance[key] = value["distance"]
            if "presence" in value:
                presences[key] = value["presence"]
        else:
            distance[key] = value
    return Thresholds(distance=distance, presence=presences, source=source)


def _check_value(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ThresholdError(f"{key} must be a number in (0, 1], got {value!r}")
    if not (0.0 < float(value) <= 1.0) or math.isnan(value):
        raise ThresholdError(f"{key} = {value} is outside its range (0, 1]")
    return float(value)


# Keys of the `monitoring:` section that belong to the pipeline's own config (what a run does
# when it finds drift or skew, where the request log is); pipeline/config.py checks them.
PIPELINE_KEYS = ("drift", "skew")


def thresholds_to_json(thresholds: Thresholds) -> str:
    """The thresholds as a JSON string (how the pipeline hands them to its components)."""
    import json

    return json.dumps(
        {
            "distance": thresholds.distance,
            "presence": thresholds.presence,
            "source": thresholds.source,
        },
        sort_keys=True,
    )


def thresholds_from_json(text: str) -> Thresholds:
    """The inverse of thresholds_to_json."""
    import json

    data = json.loads(text)
    return Thresholds(distance=data["distance"], presence=data["presence"], source=data["source"])


def parse_thresholds(
    section: dict[str, Any], keys: tuple[str, ...] = f.RAW_FEATURE_KEYS, source: str = "defaults"
) -> Thresholds:
    """Validates a `monitoring:` section (already read) and builds the thresholds.

    Keys in PIPELINE_KEYS are left to the pipeline's config. Error messages name the key
    (`monitoring.features.company`) but not the file: the caller adds that.

    Raises:
      ThresholdError: unknown key or feature, or a value outside (0, 1].
    """
    if not isinstance(section, dict):
        raise ThresholdError(f"{_SECTION} must be a mapping")
    unknown = set(section) - {"defaults", "features", *PIPELINE_KEYS}
    if unknown:
        raise ThresholdError(f"unknown key {_SECTION}.{sorted(unknown)[0]}")
    defaults_in = section.get("defaults") or {}
    features_in = section.get("features") or {}
    if not isinstance(defaults_in, dict) or not isinstance(features_in, dict):
        raise ThresholdError(f"{_SECTION}.defaults and .features must be mappings")
    defaults: dict[str, float] = {}
    for name, value in defaults_in.items():
        key = f"{_SECTION}.defaults.{name}"
        if name not in _DEFAULT_KEYS:
            raise ThresholdError(f"unknown key {key} (expected one of {_DEFAULT_KEYS})")
        defaults[name] = _check_value(value, key)
    per_feature: dict[str, Any] = {}
    for name, value in features_in.items():
        key = f"{_SECTION}.features.{name}"
        if name not in keys:
            raise ThresholdError(f"unknown feature {key}")
        if isinstance(value, dict):
            extra = set(value) - {"distance", "presence"}
            if extra:
                raise ThresholdError(f"unknown key {key}.{sorted(extra)[0]}")
            per_feature[name] = {k: _check_value(v, f"{key}.{k}") for k, v in value.items()}
        else:
            per_feature[name] = _check_value(value, key)
    return _build(keys, defaults, per_feature, source)


def load_thresholds(path: str, keys: tuple[str, ...] = f.RAW_FEATURE_KEYS) -> Thresholds:
    """Reads the `monitoring:` section of a YAML file, strictly.

    The section looks like::

        monitoring:
          defaults: {categorical: 0.1, numeric: 0.1, coordinate: 0.25, presence: 0.2}
          features:
            payment_type: 0.05            # the distance threshold
            company: {distance: 0.2, presence: 0.3}

    Other top-level keys are ignored, and so are the pipeline's own `monitoring.drift` and
    `monitoring.skew`, so a pipeline config (configs/*.yaml) serves as a thresholds file.

    Raises:
      ThresholdError: unreadable file, unknown key or feature, or a value outside (0, 1].
    """
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ThresholdError(f"{path}: cannot read thresholds: {e}") from e
    if not isinstance(data, dict):
        raise ThresholdError(f"{path}: {_SECTION} must be a mapping")
    try:
        return parse_thresholds(data.get(_SECTION) or {}, keys, path)
    except ThresholdError as e:
        raise ThresholdError(f"{path}: {e}") from None
