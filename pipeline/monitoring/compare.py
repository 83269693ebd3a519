"""The comparison itself: TFDV's distances and anomalies turned into a verdict."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.monitoring.stats import InputError
from pipeline.monitoring.thresholds import L_INFINITY, Thresholds

SKEW = "skew"
DRIFT = "drift"
TRAINING_ENV = "TRAINING"
SERVING_ENV = "SERVING"

# TFDV's names of the measurement types, in our vocabulary.
_MEASUREMENTS = {"L_INFTY": "L_INFINITY", "JENSEN_SHANNON_DIVERGENCE": "JENSEN_SHANNON_DIVERGENCE"}
# How many categorical values a report shows per feature (the rest are summed as "other").
TOP_VALUES = 12
# How many bars a numeric histogram gets in the report.
HISTOGRAM_BINS = 20


@dataclasses.dataclass
class Side:
    """One side of a comparison: its statistics and where they came from."""

    stats: Any
    source: str


def feature_stats(stats: Any) -> dict[str, Any]:
    """Feature name -> FeatureNameStatistics of the first (default slice) dataset."""
    dataset = stats.datasets[0]
    return {(s.path.step[0] if s.path.step else s.name): s for s in dataset.features}


def _select(stats: Any, keys: tuple[str, ...]) -> Any:
    """A copy of `stats` with only the features in `keys` (others would be 'new columns')."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    result = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = result.datasets.add()
    dataset.CopyFrom(stats.datasets[0])
    del dataset.features[:]
    for s in stats.datasets[0].features:
        name = s.path.step[0] if s.path.step else s.name
        if name in keys:
            dataset.features.add().CopyFrom(s)
    return result


def _prune_schema(schema: Any, keys: tuple[str, ...]) -> Any:
    from tensorflow_metadata.proto.v0 import schema_pb2

    pruned = schema_pb2.Schema()
    pruned.CopyFrom(schema)
    del pruned.feature[:]
    for feature in schema.feature:
        if feature.name in keys:
            pruned.feature.add().CopyFrom(feature)
    return pruned


_STATS_TYPE_FOR_SCHEMA = {"INT": ("INT",), "FLOAT": ("FLOAT",), "BYTES": ("STRING", "BYTES")}


def check_compatible(stats: Any, schema: Any, keys: tuple[str, ...], what: str) -> None:
    """Raises InputError if `stats` were not computed from data of this schema.

    A reference side (training or baseline) must have every compared feature the schema
    marks as always present, each with the schema's type.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

    by_name = feature_stats(stats)
    problems = []
    for feature in schema.feature:
        if feature.name not in keys:
            continue
        got = by_name.get(feature.name)
        if got is None:
            if feature.presence.min_fraction >= 1.0:
                problems.append(f"{feature.name} is missing")
            continue
        want = schema_pb2.FeatureType.Name(feature.type)
        have = statistics_pb2.FeatureNameStatistics.Type.Name(got.type)
        if have not in _STATS_TYPE_FOR_SCHEMA.get(want, (want,)):
            problems.append(f"{feature.name} is {have}, the schema says {want}")
    if problems:
        raise InputError(
            f"{what} do not match the schema (statistics of other data?): " + "; ".join(problems)
        )


def _with_comparators(schema: Any, thresholds: Thresholds, kind: str) -> Any:
    from tensorflow_metadata.proto.v0 import schema_pb2

    result = schema_pb2.Schema()
    result.CopyFrom(schema)
    for feature in result.feature:
        if feature.name not in thresholds.distance:
            continue
        comparator = feature.skew_comparator if kind == SKEW else feature.drift_comparator
        threshold = thresholds.distance[feature.name]
        if thresholds.comparator(feature.name) == L_INFINITY:
            comparator.infinity_norm.threshold = threshold
        else:
            comparator.jensen_shannon_divergence.threshold = threshold
    return result


def _anomalies(anomalies: Any) -> dict[str, list[dict[str, str]]]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    result: dict[str, list[dict[str, str]]] = {}
    for name, info in anomalies.anomaly_info.items():
        for reason in info.reason:
            result.setdefault(name or "(dataset)", []).append(
                {
                    "type": anomalies_pb2.AnomalyInfo.Type.Name(reason.type),
                    "short_description": reason.short_description,
                    "description": reason.description,
                }
            )
    return result


def _presence(stats: Any) -> dict[str, float]:
    dataset = stats.datasets[0]
    total = dataset.num_examples or 1
    result = {}
    for name, s in feature_stats(stats).items():
        common = s.string_stats.common_stats if s.HasField("string_stats") else None
        if common is None:
            common = s.num_stats.common_stats
        result[name] = common.num_non_missing / total
    return result


def _distribution(s: Any) -> dict[str, Any]:
    """What the report draws of one side of one feature."""
    if s is None:
        return {"kind": "none"}
    if s.HasField("string_stats"):
        buckets = s.string_stats.rank_histogram.buckets
        values = [(b.label, b.sample_count) for b in buckets] or [
            (v.value, v.frequency) for v in s.string_stats.top_values
        ]
        total = s.string_stats.common_stats.num_non_missing or 1
        return {"kind": "categorical", "values": {k: c / total for k, c in values}}
    for h in s.num_stats.histograms:
        if h.type == h.STANDARD:
            total = sum(b.sample_count for b in h.buckets) or 1
            return {
                "kind": "numeric",
                "buckets": [[b.low_value, b.high_value, b.sample_count / total] for b in h.buckets],
            }
    return {"kind": "none"}


def compare(
    kind: str,
    reference: Side,
    current: Side,
    schema: Any,
    thresholds: Thresholds,
    keys: tuple[str, ...],
) -> dict[str, Any]:
    """Compares `current` with `reference` and returns the verdict (JSON-ready).

    Args:
      kind: SKEW (reference = training, current = serving) or DRIFT (baseline, current).
      reference: training statistics (skew) or the baseline span (drift).
      current: serving statistics (skew) or the current span (drift).
      schema: the curated schema.
      thresholds: per-feature thresholds.
      keys: the features compared.

    Raises:
      InputError: the reference statistics are not of this schema, or the current side has
        none of the compared features.
    """
    import tensorflow_data_validation as tfdv

    check_compatible(reference.stats, schema, keys, f"the {_names(kind)[0]} statistics")
    if not set(feature_stats(current.stats)) & set(keys):
        raise InputError(f"the {_names(kind)[1]} data ({current.source}) has no model features")
    ref_stats = _select(reference.stats, keys)
    cur_stats = _select(current.stats, keys)
    pruned = _prune_schema(schema, keys)
    with_comparators = _with_comparators(pruned, thresholds, kind)
    if kind == SKEW:
        # TFDV's skew convention: `statistics` is training, `serving_statistics` serving.
        compared = tfdv.validate_statistics(
            ref_stats, with_comparators, environment=TRAINING_ENV, serving_statistics=cur_stats
        )
        # Serving data against the SERVING environment, where the label is absent by design.
        checked = tfdv.validate_statistics(cur_stats, pruned, environment=SERVING_ENV)
    else:
        # TFDV's drift convention: `statistics` is current, `previous_statistics` baseline.
        compared = tfdv.validate_statistics(
            cur_stats, with_comparators, environment=TRAINING_ENV, previous_statistics=ref_stats
        )
        checked = tfdv.validate_statistics(cur_stats, pruned, environment=TRAINING_ENV)
    distances: dict[str, tuple[str, float]] = {}
    for info in compared.drift_skew_info:
        measurements = info.skew_measurements if kind == SKEW else info.drift_measurements
        for m in measurements:
            type_name = m.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[m.type].name
            distances[info.path.step[0]] = (_MEASUREMENTS.get(type_name, type_name), m.value)
    anomalies = _anomalies(checked)
    ref_presence, cur_presence = _presence(ref_stats), _presence(cur_stats)
    ref_by_name, cur_by_name = feature_stats(ref_stats), feature_stats(cur_stats)
    schema_types = {feat.name: feat for feat in pruned.feature}
    features = []
    for key in keys:
        if key not in schema_types:
            continue
        comparator, distance = distances.get(key, (thresholds.comparator(key), None))
        threshold = thresholds.distance[key]
        presence_diff = abs(ref_presence.get(key, 0.0) - cur_presence.get(key, 0.0))
        reasons = []
        if distance is not None and distance > threshold:
            reasons.append(f"{comparator} {distance:.3f} > {threshold:g}")
        if presence_diff > thresholds.presence[key]:
            reasons.append(
                f"present in {cur_presence.get(key, 0.0):.0%} of {_names(kind)[1]} examples vs "
                f"{ref_presence.get(key, 0.0):.0%} of {_names(kind)[0]} ones"
            )
        feature_anomalies = anomalies.get(key, [])
        reasons += [f"schema: {a['short_description']}" for a in feature_anomalies]
        features.append(
            {
                "name": key,
                "type": "categorical" if comparator == L_INFINITY else "numeric",
                "comparator": comparator,
                "distance": distance,
                "threshold": threshold,
                "presence": {
                    _names(kind)[0]: ref_presence.get(key, 0.0),
                    _names(kind)[1]: cur_presence.get(key, 0.0),
                    "difference": presence_diff,
                    "threshold": thresholds.presence[key],
                },
                "anomalies": feature_anomalies,
                "flagged": bool(reasons),
                "reasons": reasons,
                "distributions": {
                    _names(kind)[0]: _distribution(ref_by_name.get(key)),
                    _names(kind)[1]: _distribution(cur_by_name.get(key)),
                },
            }
        )
    failed = [feat["name"] for feat in features if feat["flagged"]]
    dataset_anomalies = anomalies.get("(dataset)", [])
    found = bool(failed or dataset_anomalies)
    return {
        "check": kind,
        "verdict": (f"{kind}_found" if found else f"no_{kind}"),
        "found": found,
        "sides": {
            _names(kind)[0]: {
                "source": reference.source,
                "examples": reference.stats.datasets[0].num_examples,
            },
            _names(kind)[1]: {
                "source": current.source,
                "examples": current.stats.datasets[0].num_examples,
            },
        },
        "thresholds_source": thresholds.source,
        "features_checked": len(features),
        "failed_features": failed,
        "dataset_anomalies": dataset_anomalies,
        "features": features,
    }


def _names(kind: str) -> tuple[str, str]:
    """The names of the two sides: (reference, current)."""
    return ("training", "serving") if kind == SKEW else ("baseline", "current")


def side_names(kind: str) -> tuple[str, str]:
    """The names of the two sides of a check: (reference, current)."""
    return _names(kind)
