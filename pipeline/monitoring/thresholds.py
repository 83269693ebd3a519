"""Comparators and thresholds per feature: documented defaults, overridable from YAML.

TFDV computes the statistics of both sides (see stats_options.py); the comparison reads
them on one scale:

- Categorical fields (payment type, company, and the small-domain integers: hour, day,
  month, community areas) by their value frequencies, with the L-infinity distance (the
  largest change in any one value's share, TFDV's own measure for categories).
- Numeric fields (coordinates, the derived trip distance and predicted fare, and the
  timestamp when it is not a time feature) by their distribution functions, with the
  Kolmogorov-Smirnov distance (the largest gap between the two cumulative distributions).
  Both functions are read off TFDV's quantile histograms and evaluated at the same points,
  so a value counts the same on both sides wherever each side's own minimum or buckets
  fall.
- Presence: the difference between the shares of examples that have a value. "Absent" and
  "present with no value" (CsvExampleGen's empty cell) and the `serving_default` sentinels
  (NaN, -1, "") are all missing, as the model's Transform treats them.

A difference is flagged only when it is both large enough to matter (above the feature's
threshold: an effect size, whatever the sample size) and too large to be chance at this
sample size (a chi-squared or, for small counts, a permutation test of the category
counts, a Kolmogorov-Smirnov test, Fisher's exact test for presence; significance level
`significance` shared by all the tests of one check, Bonferroni). The first keeps a large
log from alarming on a trivial difference; the second keeps a small one from alarming on
noise.

Time in drift: the fields that identify the period (TIME_FEATURES: the trip's timestamp and
month, or what `monitoring.drift.time_features` names) are not compared as distributions.
Two monthly spans always differ in them, and so do served traffic (today) and the months a
model learned from: their difference is what the calendar says it is. They are still checked
for presence and against the schema (a timestamp in milliseconds is outside the schema's
range). What can drift for real within a period is compared: the hour and day-of-week mixes
and every other field.

Sample size: every test is valid at the sizes it is used at (see compare.py for which test
when), and below MIN_EXAMPLES examples (`monitoring.min_examples`) on either side a
feature's distribution or presence is not judged at all: the check says "too few to judge
(N < M)" and finds nothing. A value the schema forbids is flagged at any size: it is a fact
about the values, not an estimate.

Why these defaults: 20 replays of 1,500 real trips (sent as the README says, optional
fields left out) give no alarm, while every fault of the corpus (faults.py) is flagged at
100% of the traffic and most at 25% (BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from taxifare_modules import features as f

L_INFINITY = "L_INFINITY"
KOLMOGOROV_SMIRNOV = "KOLMOGOROV_SMIRNOV"

DEFAULT_CATEGORICAL = 0.03
DEFAULT_NUMERIC = 0.05
DEFAULT_COORDINATE = 0.05
DEFAULT_PRESENCE = 0.05
DEFAULT_SIGNIFICANCE = 0.001
# Below this many examples on either side nothing is judged. At 100 examples the exact tests
# can still tell a gross fault (a field all missing, a unit change, a renamed category) from
# chance at the Bonferroni level of one check (about 3e-5 per test); below it only values the
# schema forbids are found.
MIN_EXAMPLES = 100
# The fields that identify the period of the data: not compared as distributions.
TIME_FEATURES = (f.TIMESTAMP_KEY, f.MONTH_KEY)

CATEGORICAL_KEYS = f.MONITORED_CATEGORICAL_KEYS
NUMERIC_KEYS = f.MONITORED_NUMERIC_KEYS + f.DERIVED_KEYS
# Every feature a check can compare: the raw fields and what the model derives from them.
ALL_KEYS = f.RAW_FEATURE_KEYS + f.DERIVED_KEYS

_SECTION = "monitoring"
_DEFAULT_KEYS = ("categorical", "numeric", "coordinate", "presence", "significance")


class ThresholdError(ValueError):
    """A thresholds file that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Thresholds of one check.

    Attributes:
      distance: feature name -> threshold of its distance, in (0, 1].
      presence: feature name -> threshold of its presence difference, in (0, 1].
      source: where they came from ("defaults" or a file name).
      significance: the significance level of all the tests of one check together.
      min_examples: below this many examples (or values) on a side, nothing is judged.
      time_features: fields that identify the period; not compared as distributions.
    """

    distance: dict[str, float]
    presence: dict[str, float]
    source: str = "defaults"
    significance: float = DEFAULT_SIGNIFICANCE
    min_examples: int = MIN_EXAMPLES
    time_features: tuple[str, ...] = TIME_FEATURES

    def comparator(self, feature: str) -> str:
        """The comparator used for `feature`."""
        return L_INFINITY if feature in CATEGORICAL_KEYS else KOLMOGOROV_SMIRNOV


def default_thresholds(keys: tuple[str, ...] = ALL_KEYS) -> Thresholds:
    """The documented defaults for `keys`."""
    return _build(keys, {}, {}, "defaults")


def _build(
    keys: tuple[str, ...],
    defaults: dict[str, float],
    per_feature: dict[str, Any],
    source: str,
    min_examples: int = MIN_EXAMPLES,
    time_features: tuple[str, ...] = TIME_FEATURES,
) -> Thresholds:
    categorical = defaults.get("categorical", DEFAULT_CATEGORICAL)
    numeric = defaults.get("numeric", DEFAULT_NUMERIC)
    coordinate = defaults.get("coordinate", DEFAULT_COORDINATE)
    presence = defaults.get("presence", DEFAULT_PRESENCE)
    significance = defaults.get("significance", DEFAULT_SIGNIFICANCE)
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
    return Thresholds(
        distance=distance,
        presence=presences,
        source=source,
        significance=significance,
        min_examples=min_examples,
        time_features=tuple(time_features),
    )


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
            "significance": thresholds.significance,
            "min_examples": thresholds.min_examples,
            "time_features": list(thresholds.time_features),
        },
        sort_keys=True,
    )


def thresholds_from_json(text: str) -> Thresholds:
    """The inverse of thresholds_to_json."""
    import json

    data = json.loads(text)
    return Thresholds(
        distance=data["distance"],
        presence=data["presence"],
        source=data["source"],
        significance=data.get("significance", DEFAULT_SIGNIFICANCE),
        min_examples=data.get("min_examples", MIN_EXAMPLES),
        time_features=tuple(data.get("time_features", TIME_FEATURES)),
    )


def check_min_examples(value: Any, key: str = f"{_SECTION}.min_examples") -> int:
    """`value` as a minimum number of examples (an integer of at least 1).

    Raises:
      ThresholdError: naming `key`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ThresholdError(f"{key} must be a whole number of at least 1, got {value!r}")
    return value


def check_time_features(value: Any, key: str = f"{_SECTION}.drift.time_features") -> tuple:
    """`value` as a tuple of raw feature names (the fields that identify the period).

    Raises:
      ThresholdError: naming `key` and the first unknown feature.
    """
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ThresholdError(f"{key} must be a list of feature names, got {value!r}")
    for name in value:
        if name not in f.RAW_FEATURE_KEYS:
            raise ThresholdError(
                f"{key}: unknown feature {name!r} (expected raw fields such as"
                f" {', '.join(TIME_FEATURES)})"
            )
    return tuple(value)


def parse_thresholds(
    section: dict[str, Any], keys: tuple[str, ...] = ALL_KEYS, source: str = "defaults"
) -> Thresholds:
    """Validates a `monitoring:` section (already read) and builds the thresholds.

    Keys in PIPELINE_KEYS are left to the pipeline's config, except
    `drift.time_features`, which both checks use. Error messages name the key
    (`monitoring.features.company`) but not the file: the caller adds that.

    Raises:
      ThresholdError: unknown key or feature, or a value outside (0, 1].
    """
    if not isinstance(section, dict):
        raise ThresholdError(f"{_SECTION} must be a mapping")
    unknown = set(section) - {"defaults", "features", "min_examples", *PIPELINE_KEYS}
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
    min_examples = check_min_examples(section.get("min_examples", MIN_EXAMPLES))
    drift = section.get("drift") or {}
    time_features = TIME_FEATURES
    if isinstance(drift, dict) and "time_features" in drift:
        time_features = check_time_features(drift["time_features"])
    return _build(keys, defaults, per_feature, source, min_examples, time_features)


def load_thresholds(path: str, keys: tuple[str, ...] = ALL_KEYS) -> Thresholds:
    """Reads the `monitoring:` section of a YAML file, strictly.

    The section looks like::

        monitoring:
          defaults: {categorical: 0.03, numeric: 0.05, presence: 0.05, significance: 0.001}
          min_examples: 100               # fewer on a side: too few to judge
          drift: {time_features: [trip_start_timestamp, trip_start_month]}
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
