"""The comparison itself: TFDV's statistics of two sides turned into a verdict.

TFDV computes the statistics (stats_options.py) and checks the current side against the
schema (anomalies). The distances and tests are computed here, on one scale for both sides
(see thresholds.py for what is compared how, and why): TFDV's own numeric comparator
re-buckets each side's equal-width histogram, whose buckets start at that side's minimum,
so the same value can land in different buckets; and it has no notion of sample size.

Each test holds at the size it is used at: Fisher's exact test for presence; for category
counts the chi-squared test where Cochran's rule holds (every cell expected at least 5
times) and a seeded permutation test where it does not; for numeric fields the exact
Kolmogorov-Smirnov distribution at the effective size. Below the thresholds' min_examples
nothing is judged, and the fields that identify the period are not compared at all.
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
# Schema anomalies about how many examples have a field: estimates, not judged below the
# minimum number of examples (a value out of range or unknown is a fact at any size).
PRESENCE_ANOMALIES = frozenset(
    {
        "FEATURE_TYPE_LOW_FRACTION_PRESENT",
        "FEATURE_TYPE_LOW_NUMBER_PRESENT",
        "FEATURE_TYPE_NOT_PRESENT",
        "SCHEMA_MISSING_COLUMN",
    }
)
# The verdict of a check with fewer examples on a side than thresholds.min_examples (and no
# value the schema forbids): nothing judged, nothing found.
TOO_FEW = "too_few_to_judge"

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
    """Two-sample Kolmogorov-Smirnov p-value at the effective size n*m/(n+m).

    The exact distribution of the one-sample statistic (scipy's `kstwo`) at the effective
    size: exact when one side is much larger than the other (training against a request
    log), and what scipy's own two-sample test uses where it does not count lattice paths.
    Unlike the limiting (Kolmogorov) distribution it holds at any size.
    """
    from scipy.stats import kstwo

    if n <= 0 or m <= 0:
        return 1.0
    effective = max(1, round(n * m / (n + m)))
    return float(kstwo.sf(distance, effective))


def l_infinity(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest difference of one value's share between two count tables."""
    ta, tb = sum(a.values()) or 1.0, sum(b.values()) or 1.0
    return max((abs(a.get(k, 0.0) / ta - b.get(k, 0.0) / tb) for k in set(a) | set(b)), default=0.0)


CHI_SQUARED = "chi-squared"
PERMUTATION = "permutation (Monte Carlo)"
FISHER = "Fisher exact"
KS_TEST = "Kolmogorov-Smirnov (exact at n*m/(n+m))"
# The Monte Carlo permutation test stops once this many simulated tables are at least as
# extreme as the observed one (Besag and Clifford's sequential p-value): a clean sample is
# settled in a few hundred draws (its p-value then within about 10%), a real difference takes
# the full budget.
_PERMUTATION_EXCEEDANCES = 100
_PERMUTATION_BATCH = 5_000
# The draws are seeded: the same statistics give the same verdict.
_PERMUTATION_SEED = 20_240_601


def _pooled_cells(a: dict[str, float], b: dict[str, float]) -> list[tuple[float, float]]:
    """The table for the chi-squared test: rare values pooled into one cell, and that cell
    merged with the next smallest until it is expected _MIN_EXPECTED times on each side."""
    ta, tb = sum(a.values()), sum(b.values())
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
    cells.sort(key=lambda c: c[0] + c[1])
    while sum(pooled) and cells and min(sum(pooled) * ta, sum(pooled) * tb) / total < _MIN_EXPECTED:
        small = cells.pop(0)
        pooled = [pooled[0] + small[0], pooled[1] + small[1]]
    if sum(pooled):
        cells.append((pooled[0], pooled[1]))
    return cells


def _chi_squared_statistic(cells: Any, ta: float, tb: float) -> Any:
    """Pearson's statistic of 2 x k tables; `cells` is (..., k, 2) of observed counts."""
    import numpy as np

    cells = np.asarray(cells, dtype=float)
    column = cells.sum(axis=-1, keepdims=True)
    expected = column * np.array([ta, tb]) / (ta + tb)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (cells - expected) ** 2 / expected, 0.0)
    return terms.sum(axis=(-2, -1))


def permutation_p_value(a: dict[str, float], b: dict[str, float], alpha: float) -> float:
    """p-value of "one distribution" for two count tables, by permutation (Monte Carlo).

    Tables with both sides' totals and each value's total fixed (the examples relabelled at
    random between the sides: a multivariate hypergeometric draw) are simulated, and the
    share at least as extreme as the observed one (Pearson's statistic) is the p-value. It
    is exact in the limit of many draws at any sample size; enough are drawn to reject at
    `alpha`.
    """
    import numpy as np

    keys = sorted(set(a) | set(b))
    ref = np.array([round(a.get(k, 0.0)) for k in keys], dtype=np.int64)
    cur = np.array([round(b.get(k, 0.0)) for k in keys], dtype=np.int64)
    columns = ref + cur
    keep = columns > 0
    ref, cur, columns = ref[keep], cur[keep], columns[keep]
    ta, tb = int(ref.sum()), int(cur.sum())
    if ta <= 0 or tb <= 0 or len(columns) < 2:
        return 1.0
    observed = float(_chi_squared_statistic(np.stack([ref, cur], axis=-1), ta, tb))
    rng = np.random.default_rng(_PERMUTATION_SEED)
    budget = math.ceil(2.0 / alpha)
    draws = exceed = 0
    while draws < budget:
        size = min(_PERMUTATION_BATCH, budget - draws)
        sim_cur = rng.multivariate_hypergeometric(columns, tb, size=size, method="marginals")
        tables = np.stack([columns - sim_cur, sim_cur], axis=-1)
        # A relative tolerance: equal statistics computed in another order still count.
        exceed += int((_chi_squared_statistic(tables, ta, tb) >= observed * (1 - 1e-9)).sum())
        draws += size
        if exceed >= _PERMUTATION_EXCEEDANCES:
            return exceed / draws
    return (exceed + 1) / (draws + 1)


def categorical_test(a: dict[str, float], b: dict[str, float], alpha: float) -> tuple[float, str]:
    """p-value and name of the test that two count tables come from one distribution.

    The chi-squared approximation when, after rare values are pooled, at least two cells
    remain and each is expected at least _MIN_EXPECTED times on each side (Cochran's rule);
    otherwise (a small side) the permutation test, which needs no approximation.
    """
    from scipy.stats import chi2

    ta, tb = sum(a.values()), sum(b.values())
    if ta <= 0 or tb <= 0:
        return 1.0, CHI_SQUARED
    cells = _pooled_cells(a, b)
    total = ta + tb
    if len(cells) >= 2 and all(
        min((oa + ob) * ta, (oa + ob) * tb) / total >= _MIN_EXPECTED for oa, ob in cells
    ):
        statistic = float(_chi_squared_statistic(cells, ta, tb))
        return float(chi2.sf(statistic, len(cells) - 1)), CHI_SQUARED
    return permutation_p_value(a, b, alpha), PERMUTATION


def presence_p_value(a: Distribution, b: Distribution) -> float:
    """Two-sided p-value of Fisher's exact test on the examples with and without a value.

    Exact at every size (the normal approximation of the two-proportion test does not hold
    for a handful of examples), and cheap at millions.
    """
    from scipy.stats import fisher_exact

    if not a.examples or not b.examples:
        return 1.0
    with_a, with_b = round(a.with_value), round(b.with_value)
    table = [[with_a, a.examples - with_a], [with_b, b.examples - with_b]]
    return float(fisher_exact(table).pvalue)


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


def too_few(n: float, minimum: int) -> str:
    """The note of a test that was not made: "too few to judge (N < M)"."""
    return f"too few to judge ({n:,.0f} < {minimum:,})"


def time_feature_note(kind: str) -> str:
    """Why a field that identifies the period is not compared as a distribution."""
    if kind == DRIFT:
        return "not compared: identifies the span"
    return (
        "not compared: identifies the span (served traffic is of another period than the"
        " data the model learned from)"
    )


# A mix over the calendar means something only on a side that covers a whole cycle of it:
# the day of the week over a week, the hour over a day (a daily span, a log of one
# afternoon). The slack allows for timestamps rounded to 15 minutes, as the city's are.
_CYCLE_SLACK_SECONDS = 3600
CALENDAR_CYCLES = (
    (f.DAY_KEY, 7 * 86_400, "a week"),
    (f.HOUR_KEY, 86_400, "a day"),
)


def _timestamp_range(stats: Any) -> float | None:
    """Seconds from the first to the last trip start of a side (None: no timestamps)."""
    s = feature_stats(stats).get(f.TIMESTAMP_KEY)
    if s is None or not s.HasField("num_stats") or not s.num_stats.common_stats.num_non_missing:
        return None
    return float(s.num_stats.max - s.num_stats.min)


def short_period_notes(
    kind: str, reference: Any, current: Any, time_features: tuple[str, ...]
) -> dict[str, str]:
    """Calendar mixes not compared because a side covers less than one cycle of them.

    A span of one day holds one day of the week: against any other day its day-of-week mix
    is all different, whatever happened. Only checked while the timestamp itself identifies
    the period (it is then not compared, so its range is what the calendar says).
    """
    if f.TIMESTAMP_KEY not in time_features:
        return {}
    names = _names(kind)
    notes = {}
    for key, cycle, words in CALENDAR_CYCLES:
        for name, stats in zip(names, (reference, current), strict=True):
            covered = _timestamp_range(stats)
            if covered is not None and covered < cycle - _CYCLE_SLACK_SECONDS:
                notes[key] = (
                    f"not compared: the {name} side covers {covered / 3600:,.1f} hours, less"
                    f" than {words}"
                )
                break
    return notes


def compare_feature(
    key: str,
    ref: Distribution,
    cur: Distribution,
    thresholds: Thresholds,
    alpha: float,
    kind: str = DRIFT,
    period_note: str | None = None,
) -> dict[str, Any]:
    """The distance, tests and flags of one feature (JSON-ready, without names of sides).

    A field that identifies the period (thresholds.time_features, or `period_note` saying
    why: a side too short in time for its mix to mean anything) gets no distribution test;
    a test with fewer than thresholds.min_examples values (or examples) on a side is not
    made. Either way the reason is in `distribution_note` / `presence_note`.
    """
    comparator = thresholds.comparator(key)
    notes = []
    if comparator == L_INFINITY and "numeric" in (ref.kind, cur.kind):
        # Statistics computed without this project's options (e.g. TFDV's defaults) have
        # no value counts for an integer field: compare its distribution function instead.
        comparator = KOLMOGOROV_SMIRNOV
        notes.append("compared as numeric: the statistics have no value counts for it")
    minimum = thresholds.min_examples
    distance = p_value = test = None
    distribution_note = None
    uncompared = key in thresholds.time_features or period_note is not None
    if uncompared:
        distribution_note = period_note or time_feature_note(kind)
    elif ref.with_value and cur.with_value and "none" not in (ref.kind, cur.kind):
        fewest = min(ref.with_value, cur.with_value)
        if comparator == L_INFINITY:
            distance = l_infinity(ref.counts, cur.counts)
        else:
            distance = ks_distance(ref.buckets, cur.buckets)
        if fewest < minimum:
            distribution_note = too_few(fewest, minimum) + " values"
        elif comparator == L_INFINITY:
            p_value, test = categorical_test(ref.counts, cur.counts, alpha)
        else:
            p_value, test = ks_p_value(distance, ref.with_value, cur.with_value), KS_TEST
    threshold = thresholds.distance[key]
    presence_diff = abs(ref.presence - cur.presence)
    presence_p = None
    presence_note = None
    fewest_examples = min(ref.examples, cur.examples)
    if fewest_examples < minimum:
        presence_note = too_few(fewest_examples, minimum) + " examples"
    else:
        presence_p = presence_p_value(ref, cur)
    distribution_flag = (
        distance is not None and distance > threshold and p_value is not None and p_value < alpha
    )
    presence_flag = (
        presence_p is not None and presence_diff > thresholds.presence[key] and presence_p < alpha
    )
    return {
        "comparator": comparator,
        "compared": not uncompared,
        "distance": distance,
        "p_value": p_value,
        "test": test,
        "distribution_note": distribution_note,
        "threshold": threshold,
        "distribution_flagged": bool(distribution_flag),
        "presence_difference": presence_diff,
        "presence_p_value": presence_p,
        "presence_test": FISHER if presence_p is not None else None,
        "presence_note": presence_note,
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
    period_note: str | None = None,
) -> dict[str, Any]:
    names = _names(kind)
    result = compare_feature(key, ref, cur, thresholds, alpha, kind, period_note)
    reasons = []
    if result["distribution_flagged"]:
        reasons.append(
            f"{result['comparator']} {result['distance']:.3f} > {result['threshold']:g}"
            f" (p = {result['p_value']:.1e} < {alpha:.1e}, {result['test']};"
            f" {ref.with_value:,.0f} {names[0]} vs {cur.with_value:,.0f} {names[1]} values)"
        )
    if result["presence_flagged"]:
        reasons.append(
            f"has a value in {names[0]} {ref.presence:.1%} · {names[1]} {cur.presence:.1%}"
            f" of examples (difference {result['presence_difference']:.1%} >"
            f" {result['presence_threshold']:g}, p = {result['presence_p_value']:.1e},"
            f" {FISHER}; {ref.examples:,} vs {cur.examples:,} examples)"
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
        "compared": result["compared"],
        "distance": result["distance"],
        "p_value": result["p_value"],
        "test": result["test"],
        "not_judged": result["distribution_note"],
        "threshold": result["threshold"],
        "presence": {
            names[0]: ref.presence,
            names[1]: cur.presence,
            "difference": result["presence_difference"],
            "p_value": result["presence_p_value"],
            "test": result["presence_test"],
            "not_judged": result["presence_note"],
            "threshold": result["presence_threshold"],
        },
        "examples": {names[0]: ref.examples, names[1]: cur.examples},
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

    names = _names(kind)
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
    fewest = min(reference.stats.datasets[0].num_examples, current.stats.datasets[0].num_examples)
    if fewest < thresholds.min_examples:
        # How many examples have a field is an estimate like any share: at this size a field
        # absent from every example may be chance (5 trips without a dropoff), not a fault.
        anomalies = {
            name: kept
            for name, found in anomalies.items()
            if (kept := [a for a in found if a["type"] not in PRESENCE_ANOMALIES])
        }
    compared = [k for k in keys if k in {feat.name for feat in pruned.feature}]
    sides = [(compared, ref_stats, cur_stats)]
    if derived is not None:
        sides.append((list(f.DERIVED_KEYS), derived[0].stats, derived[1].stats))
    short = short_period_notes(kind, ref_stats, cur_stats, thresholds.time_features)
    # Two tests per feature (distribution, presence; presence only for a field that
    # identifies the period), at one significance level in all.
    tests = sum(
        1 if key in thresholds.time_features or key in short else 2
        for keys_, _, _ in sides
        for key in keys_
    )
    alpha = thresholds.significance / tests
    features = []
    for keys_, ref_side, cur_side in sides:
        ref_by_name, cur_by_name = feature_stats(ref_side), feature_stats(cur_side)
        ref_n = ref_side.datasets[0].num_examples
        cur_n = cur_side.datasets[0].num_examples
        for key in keys_:
            features.append(
                _feature(
                    kind,
                    key,
                    distribution(ref_by_name.get(key), ref_n),
                    distribution(cur_by_name.get(key), cur_n),
                    thresholds,
                    alpha,
                    anomalies.get(key, []),
                    short.get(key) if ref_side is ref_stats else None,
                )
            )
    failed = [feat["name"] for feat in features if feat["flagged"]]
    dataset_anomalies = anomalies.get("(dataset)", [])
    found = bool(failed or dataset_anomalies)
    ref_examples = reference.stats.datasets[0].num_examples
    cur_examples = current.stats.datasets[0].num_examples
    notes = []
    if fewest < thresholds.min_examples:
        # Only values the schema forbids can be found: no distribution or presence is judged.
        notes.append(
            f"{too_few(fewest, thresholds.min_examples)}: {fewest:,} examples on the"
            f" {names[0] if ref_examples == fewest else names[1]} side; no distribution or"
            " presence was judged, only the values the schema forbids"
        )
    if found:
        outcome = f"{kind}_found"
    elif fewest < thresholds.min_examples:
        outcome = TOO_FEW
    else:
        outcome = f"no_{kind}"
    verdict = {
        "check": kind,
        "verdict": outcome,
        "found": found,
        "sides": {
            names[0]: {"source": reference.source, "examples": ref_examples},
            names[1]: {"source": current.source, "examples": cur_examples},
        },
        "thresholds_source": thresholds.source,
        "significance": thresholds.significance,
        "alpha_per_test": alpha,
        "min_examples": thresholds.min_examples,
        "features_checked": len(features),
        "not_compared": {
            feat["name"]: feat["not_judged"] for feat in features if not feat["compared"]
        },
        "failed_features": failed,
        "dataset_anomalies": dataset_anomalies,
        "features": features,
    }
    if notes:
        verdict["notes"] = notes
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
