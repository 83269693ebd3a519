"""The comparison itself: TFDV's statistics of two sides turned into a verdict.

TFDV computes the statistics (stats_options.py) and checks the current side against the
schema (anomalies). The distances and tests are computed here, on one scale for both sides
(see thresholds.py for what is compared how, and why): TFDV's own numeric comparator
re-buckets each side's equal-width histogram, whose buckets start at that side's minimum,
so the same value can land in different buckets; and it has no notion of sample size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pipeline.monitoring.stats import InputError
from pipeline.monitoring.thresholds import KOLMOGOROV_SMIRNOV, L_INFINITY, Thresholds
from taxifare_modules import features as f

SKEW = "skew"
DRIFT = "drift"
TRAINING_ENV = "TRAINING"
SERVING_ENV = "SERVING"

# How many categorical values a report shows per feature (the rest are summed as "other").
TOP_VALUES = 12
# How many bars a numeric histogram gets in the report.
HISTOGRAM_BINS = 24
# The values that mean "missing" in the `serving_default` signature, as TFDV labels them.
_MISSING_LABELS = {f.MISSING_STRING, str(f.MISSING_INT)}
# Categories expected fewer times than this (under "no difference") are pooled for the
# chi-squared test, whose approximation needs a handful of counts per cell.
_MIN_EXPECTED = 5.0
_OTHER = "(other values)"


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


@dataclasses.dataclass
class Distribution:
    """One side of one feature, as read from TFDV's statistics.

    Attributes:
      kind: "categorical", "numeric" or "none" (the side lacks the feature).
      examples: examples on this side.
      with_value: examples with a value (neither absent, nor present with no value, nor a
        missing sentinel).
      counts: categorical: value -> examples.
      buckets: numeric: the quantile histogram's (low, high, examples).
    """

    kind: str
    examples: int
    with_value: float
    counts: dict[str, float] = dataclasses.field(default_factory=dict)
    buckets: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)

    @property
    def presence(self) -> float:
        """The share of examples that have a value."""
        return self.with_value / self.examples if self.examples else 0.0


def distribution(s: Any, examples: int) -> Distribution:
    """A feature's Distribution from its FeatureNameStatistics (None: the side lacks it)."""
    if s is None:
        return Distribution("none", examples, 0.0)
    if s.HasField("string_stats"):
        ss = s.string_stats
        buckets = ss.rank_histogram.buckets
        counts = {b.label: b.sample_count for b in buckets} or {
            v.value: v.frequency for v in ss.top_values
        }
        # One value per example: the values counted are the examples with one.
        with_value = float(min(ss.common_stats.tot_num_values, ss.common_stats.num_non_missing))
        listed = sum(counts.values())
        if with_value > listed + 0.5:  # values beyond the rank histogram's length
            counts[_OTHER] = with_value - listed
        for label in _MISSING_LABELS & set(counts):
            with_value -= counts.pop(label)
        return Distribution("categorical", examples, max(with_value, 0.0), counts=counts)
    ns = s.num_stats
    quantiles = [h for h in ns.histograms if h.type == h.QUANTILES]
    if not quantiles:
        quantiles = list(ns.histograms)
    histogram = quantiles[0] if quantiles else None
    buckets = (
        [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
        if histogram is not None
        else []
    )
    nan = histogram.num_nan if histogram is not None else 0
    with_value = float(min(ns.common_stats.tot_num_values, ns.common_stats.num_non_missing)) - nan
    return Distribution("numeric", examples, max(with_value, 0.0), buckets=buckets)


def _cdf(buckets: list[tuple[float, float, float]], x: float, inclusive: bool) -> float:
    """The share of values <= x (or < x), values spread evenly inside each bucket."""
    total = sum(c for _, _, c in buckets) or 1.0
    mass = 0.0
    for low, high, count in buckets:
        if high <= low:  # a bucket of one value
            if low < x or (inclusive and low == x):
                mass += count
        elif x >= high:
            mass += count
        elif x > low:
            mass += count * (x - low) / (high - low)
    return mass / total


def ks_distance(a: list[tuple[float, float, float]], b: list[tuple[float, float, float]]) -> float:
    """The Kolmogorov-Smirnov distance between two quantile histograms.

    Both distribution functions are piecewise linear between bucket edges, so the largest
    gap is at an edge of either side (or just before one, where a bucket of one value jumps).
    """
    points = sorted({e for low, high, _ in a + b for e in (low, high)})
    gap = 0.0
    for x in points:
        for inclusive in (True, False):
            gap = max(gap, abs(_cdf(a, x, inclusive) - _cdf(b, x, inclusive)))
    return gap


def ks_p_value(distance: float, n: float, m: float) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (asymptotic, with Stephens' correction)."""
    from scipy.special import kolmogorov

    if n <= 0 or m <= 0:
        return 1.0
    ne = n * m / (n + m)
    root = math.sqrt(ne)
    return float(kolmogorov((root + 0.12 + 0.11 / root) * distance))


def l_infinity(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest difference of one value's share between two count tables."""
    ta, tb = sum(a.values()) or 1.0, sum(b.values()) or 1.0
    return max((abs(a.get(k, 0.0) / ta - b.get(k, 0.0) / tb) for k in set(a) | set(b)), default=0.0)


def chi_squared_p_value(a: dict[str, float], b: dict[str, float]) -> float:
    """p-value of a chi-squared test that two count tables come from one distribution.

    Values expected fewer than _MIN_EXPECTED times on either side are pooled into one.
    """
    from scipy.stats import chi2

    ta, tb = sum(a.values()), sum(b.values())
    if ta <= 0 or tb <= 0:
        return 1.0
    total = ta + tb
    cells: list[tuple[float, float]] = []
    pooled = [0.0, 0.0]
    for key in set(a) | set(b):
        column = a.get(key, 0.0) + b.get(key, 0.0)
        if min(column * ta, column * tb) / total < _MIN_EXPECTED:
            pooled[0] += a.get(key, 0.0)
            pooled[1] += b.get(key, 0.0)
        else:
            cells.append((a.get(key, 0.0), b.get(key, 0.0)))
    if sum(pooled):
        cells.append((pooled[0], pooled[1]))
    if len(cells) < 2:
        return 1.0
    statistic = 0.0
    for oa, ob in cells:
        column = oa + ob
        for observed, row in ((oa, ta), (ob, tb)):
            expected = column * row / total
            statistic += (observed - expected) ** 2 / expected
    return float(chi2.sf(statistic, len(cells) - 1))


def presence_p_value(a: Distribution, b: Distribution) -> float:
    """Two-sided p-value of a two-proportion z-test on the shares that have a value."""
    if not a.examples or not b.examples:
        return 1.0
    pooled = (a.with_value + b.with_value) / (a.examples + b.examples)
    if pooled <= 0.0 or pooled >= 1.0:
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.examples + 1 / b.examples))
    return math.erfc(abs(a.presence - b.presence) / se / math.sqrt(2))


def _histograms(ref: Distribution, cur: Distribution) -> dict[str, Any]:
    """Both sides' shares on common equal-width bins, for the report."""
    edges = [e for d in (ref, cur) for low, high, _ in d.buckets for e in (low, high)]
    if not edges:
        return {"edges": [], "reference": [], "current": []}
    low, high = min(edges), max(edges)
    if high <= low:
        high = low + 1.0
    step = (high - low) / HISTOGRAM_BINS
    bins = [low + i * step for i in range(HISTOGRAM_BINS + 1)]
    shares = []
    for d in (ref, cur):
        if not d.buckets:
            shares.append([0.0] * HISTOGRAM_BINS)
            continue
        cdf = [_cdf(d.buckets, x, True) for x in bins]
        cdf[0] = _cdf(d.buckets, bins[0], False)
        shares.append([max(cdf[i + 1] - cdf[i], 0.0) for i in range(HISTOGRAM_BINS)])
    return {"edges": bins, "reference": shares[0], "current": shares[1]}


def _shares(d: Distribution) -> dict[str, float]:
    total = sum(d.counts.values()) or 1.0
    return {k: c / total for k, c in d.counts.items()}


def compare_feature(
    key: str, ref: Distribution, cur: Distribution, thresholds: Thresholds, alpha: float
) -> dict[str, Any]:
    """The distance, tests and flags of one feature (JSON-ready, without names of sides)."""
    comparator = thresholds.comparator(key)
    notes = []
    if comparator == L_INFINITY and "numeric" in (ref.kind, cur.kind):
        # Statistics computed without this project's options (e.g. TFDV's defaults) have
        # no value counts for an integer field: compare its distribution function instead.
        comparator = KOLMOGOROV_SMIRNOV
        notes.append("compared as numeric: the statistics have no value counts for it")
    distance = p_value = None
    if ref.with_value and cur.with_value and "none" not in (ref.kind, cur.kind):
        if comparator == L_INFINITY:
            distance = l_infinity(ref.counts, cur.counts)
            p_value = chi_squared_p_value(ref.counts, cur.counts)
        else:
            distance = ks_distance(ref.buckets, cur.buckets)
            p_value = ks_p_value(distance, ref.with_value, cur.with_value)
    threshold = thresholds.distance[key]
    presence_diff = abs(ref.presence - cur.presence)
    presence_p = presence_p_value(ref, cur)
    distribution_flag = (
        distance is not None and distance > threshold and p_value is not None and p_value < alpha
    )
    presence_flag = presence_diff > thresholds.presence[key] and presence_p < alpha
    return {
        "comparator": comparator,
        "distance": distance,
        "p_value": p_value,
        "threshold": threshold,
        "distribution_flagged": bool(distribution_flag),
        "presence_difference": presence_diff,
        "presence_p_value": presence_p,
        "presence_threshold": thresholds.presence[key],
        "presence_flagged": bool(presence_flag),
        "notes": notes,
        "distributions": (
            {"kind": "categorical", "reference": _shares(ref), "current": _shares(cur)}
            if comparator == L_INFINITY
            else {"kind": "numeric", **_histograms(ref, cur)}
        ),
    }


def _feature(
    kind: str,
    key: str,
    ref: Distribution,
    cur: Distribution,
    thresholds: Thresholds,
    alpha: float,
    anomalies: list[dict[str, str]],
) -> dict[str, Any]:
    names = _names(kind)
    result = compare_feature(key, ref, cur, thresholds, alpha)
    reasons = []
    if result["distribution_flagged"]:
        reasons.append(
            f"{result['comparator']} {result['distance']:.3f} > {result['threshold']:g}"
            f" (p = {result['p_value']:.1e} < {alpha:.1e}; {ref.with_value:,.0f} {names[0]} vs"
            f" {cur.with_value:,.0f} {names[1]} values)"
        )
    if result["presence_flagged"]:
        reasons.append(
            f"has a value in {names[0]} {ref.presence:.1%} · {names[1]} {cur.presence:.1%}"
            f" of examples (difference {result['presence_difference']:.1%} >"
            f" {result['presence_threshold']:g}, p = {result['presence_p_value']:.1e})"
        )
    reasons += [f"schema: {a['short_description']}" for a in anomalies]
    derived_from = list(f.DERIVED_FEATURE_INPUTS.get(key, ()))
    if reasons and derived_from:
        reasons.append("computed by the model from " + ", ".join(derived_from))
    distributions = result.pop("distributions")
    return {
        "name": key,
        "type": "categorical" if result["comparator"] == L_INFINITY else "numeric",
        "derived_from": derived_from,
        "comparator": result["comparator"],
        "distance": result["distance"],
        "p_value": result["p_value"],
        "threshold": result["threshold"],
        "presence": {
            names[0]: ref.presence,
            names[1]: cur.presence,
            "difference": result["presence_difference"],
            "p_value": result["presence_p_value"],
            "threshold": result["presence_threshold"],
        },
        "values": {names[0]: ref.with_value, names[1]: cur.with_value},
        "anomalies": anomalies,
        "flagged": bool(reasons),
        "reasons": reasons,
        "notes": result["notes"],
        "distributions": {
            "kind": distributions["kind"],
            **({"edges": distributions["edges"]} if distributions["kind"] == "numeric" else {}),
            names[0]: distributions["reference"],
            names[1]: distributions["current"],
        },
    }


def compare(
    kind: str,
    reference: Side,
    current: Side,
    schema: Any,
    thresholds: Thresholds,
    keys: tuple[str, ...],
    derived: tuple[Side, Side] | None = None,
) -> dict[str, Any]:
    """Compares `current` with `reference` and returns the verdict (JSON-ready).

    Args:
      kind: SKEW (reference = training, current = serving) or DRIFT (baseline, current).
      reference: training statistics (skew) or the baseline span (drift).
      current: serving statistics (skew) or the current span (drift).
      schema: the curated schema.
      thresholds: per-feature thresholds.
      keys: the raw features compared.
      derived: the statistics of what the model computed (features.DERIVED_KEYS) on its
        eval split and on the served traffic, when the served model is known.

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
    # The current side against the schema: SERVING lacks the label by design.
    checked = tfdv.validate_statistics(
        cur_stats, pruned, environment=SERVING_ENV if kind == SKEW else TRAINING_ENV
    )
    anomalies = _anomalies(checked)
    compared = [k for k in keys if k in {feat.name for feat in pruned.feature}]
    sides = [(compared, ref_stats, cur_stats)]
    if derived is not None:
        sides.append((list(f.DERIVED_KEYS), derived[0].stats, derived[1].stats))
    # Two tests per feature (distribution, presence), at one significance level in all.
    tests = 2 * sum(len(names) for names, _, _ in sides)
    alpha = thresholds.significance / tests
    features = []
    for names, ref_side, cur_side in sides:
        ref_by_name, cur_by_name = feature_stats(ref_side), feature_stats(cur_side)
        ref_n = ref_side.datasets[0].num_examples
        cur_n = cur_side.datasets[0].num_examples
        for key in names:
            features.append(
                _feature(
                    kind,
                    key,
                    distribution(ref_by_name.get(key), ref_n),
                    distribution(cur_by_name.get(key), cur_n),
                    thresholds,
                    alpha,
                    anomalies.get(key, []),
                )
            )
    failed = [feat["name"] for feat in features if feat["flagged"]]
    dataset_anomalies = anomalies.get("(dataset)", [])
    found = bool(failed or dataset_anomalies)
    verdict = {
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
        "significance": thresholds.significance,
        "alpha_per_test": alpha,
        "features_checked": len(features),
        "failed_features": failed,
        "dataset_anomalies": dataset_anomalies,
        "features": features,
    }
    if derived is not None:
        verdict["derived"] = {
            _names(kind)[0]: derived[0].source,
            _names(kind)[1]: derived[1].source,
        }
    return verdict


def _names(kind: str) -> tuple[str, str]:
    """The names of the two sides: (reference, current)."""
    return ("training", "serving") if kind == SKEW else ("baseline", "current")


def side_names(kind: str) -> tuple[str, str]:
    """The names of the two sides of a check: (reference, current)."""
    return _names(kind)
